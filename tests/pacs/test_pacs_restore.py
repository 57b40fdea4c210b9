"""`restore --to-pacs URL`: a snapshot's DICOM files sent to a real Orthanc over REST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.config import Config
from backupctl.pacs.orthanc import OrthancProcess
from backupctl.pacs.restore import point_config_at, strip_json_comments
from tests.helpers import assert_one_line_error, cli, make_installation
from tests.pacs.conftest import PACS_SPEC

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def snapshot_with_a_bad_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str]:
    """12 good instances and one file that looks like DICOM but is not (the PACS will refuse it)."""
    root = tmp_path_factory.mktemp("to-pacs")
    config = make_installation(root, PACS_SPEC)
    (root / "archive" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    outcome = run_backup(config, "pacs", replicate=False)
    return config, outcome.snapshot_id


@pytest.fixture(scope="module")
def target_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancProcess, Path]]:
    root = tmp_path_factory.mktemp("target-pacs")
    with OrthancProcess(root / "o", disposable=True) as orthanc:
        creds = root / "creds"
        creds.write_text(f"{orthanc.credentials.username}:{orthanc.credentials.password}\n")
        creds.chmod(0o600)
        yield orthanc, creds


def test_restore_to_pacs_sends_every_instance_and_reports_the_refused_file(
        snapshot_with_a_bad_file: tuple[Config, str], target_pacs: tuple[OrthancProcess, Path]) -> None:
    config, snapshot = snapshot_with_a_bad_file
    orthanc, creds = target_pacs
    first = cli(config, "restore", snapshot[:8], "--to-pacs", orthanc.url, "--pacs-credentials", str(creds),
                "--json")
    assert first.returncode == 3, first.stderr                  # partial: one file refused
    report = json.loads(first.stdout)
    assert report["sent"] == 12 and report["stored"] == 12 and report["dicom_files"] == 13
    assert [r["file"].endswith("broken.dcm") for r in report["rejected"]] == [True]
    assert "refused 1 of 13" in first.stderr and "broken.dcm" in first.stderr
    assert orthanc.api().counts()["instances"] == 12
    assert orthanc.credentials.password not in first.stdout + first.stderr
    again = cli(config, "restore", snapshot[:8], "--to-pacs", orthanc.url, "--json",
                env={"BACKUPCTL_PACS_CREDENTIALS": f"{orthanc.credentials.username}:{orthanc.credentials.password}"})
    assert json.loads(again.stdout)["already"] == 12 and orthanc.api().counts()["instances"] == 12


def test_restore_to_pacs_refuses_credentials_in_the_url_and_bad_credentials(
        snapshot_with_a_bad_file: tuple[Config, str], target_pacs: tuple[OrthancProcess, Path],
        tmp_path: Path) -> None:
    config, snapshot = snapshot_with_a_bad_file
    orthanc, _ = target_pacs
    leaky = orthanc.url.replace("http://", "http://user:hunter2@")
    result = cli(config, "restore", snapshot[:8], "--to-pacs", leaky)
    assert_one_line_error(result, 2, "must not carry credentials", "--pacs-credentials")
    assert "hunter2" not in result.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("backupctl:not-the-password\n")
    wrong.chmod(0o600)
    before = orthanc.api().counts()["instances"]
    result = cli(config, "restore", snapshot[:8], "--to-pacs", orthanc.url, "--pacs-credentials", str(wrong))
    assert_one_line_error(result, 1, "refused the credentials")
    assert "not-the-password" not in result.stderr
    assert orthanc.api().counts()["instances"] == before
    assert not any((config.state_dir / "scratch").iterdir())      # nothing restored, nothing left
    result = cli(config, "restore", snapshot[:8], "--to-pacs", "http://127.0.0.1:9")
    assert_one_line_error(result, 1, "no answer from Orthanc at http://127.0.0.1:9")


def test_restore_needs_a_destination(snapshot_with_a_bad_file: tuple[Config, str]) -> None:
    config, snapshot = snapshot_with_a_bad_file
    assert_one_line_error(cli(config, "restore", snapshot[:8]), 2,
                          "--to DIR, --to-pacs URL, --to-dicom AET@HOST:PORT or --as-orthanc")


def test_as_orthanc_on_a_file_archive_is_refused_and_leaves_nothing(
        snapshot_with_a_bad_file: tuple[Config, str], tmp_path: Path) -> None:
    config, snapshot = snapshot_with_a_bad_file
    result = cli(config, "restore", snapshot[:8], "--as-orthanc", str(tmp_path / "o"))
    assert_one_line_error(result, 2, "not a copy of an Orthanc")
    assert not any((tmp_path / "o").iterdir())


def test_config_paths_are_rewritten_keeping_comments_aside(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "orthanc.json").write_text('{\n  // where\n  "Name": "a // not a comment",\n'
                                      '  /* block */ "StorageDirectory": "/var/lib/orthanc/db-v6",\n'
                                      '  "HttpPort": 8042\n}\n')
    (cfg / "credentials.json").write_text('{ "RegisteredUsers": { "a": "b" } }')
    (cfg / "credentials.json").chmod(0o600)
    changed = point_config_at(cfg, storage=tmp_path / "s", index=tmp_path / "i")
    data = json.loads((cfg / "orthanc.json").read_text())
    assert data["StorageDirectory"] == str(tmp_path / "s") and data["Name"] == "a // not a comment"
    assert json.loads((cfg / "backupctl-restore.json").read_text()) == {"IndexDirectory": str(tmp_path / "i")}
    assert "// where" in (cfg / "orthanc.json.orig").read_text()
    assert changed == ["orthanc.json", "backupctl-restore.json"]
    assert json.loads(strip_json_comments('{"u": "http://x/*y*/"}')) == {"u": "http://x/*y*/"}
