"""`--json` prints one object on every outcome, and a partial backup says what was not read, and why."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.config import Config
from backupctl.restic import BackupSummary, Snapshot, partial_message
from tests.helpers import assert_one_line_error, cli, make_installation, wait_for

NOBODY = 65534


@pytest.fixture
def shared_installation() -> Iterator[Config]:
    """An installation an unprivileged user owns (root reads every file whatever its mode)."""
    root = Path(tempfile.mkdtemp(prefix="backupctl-json-"))
    os.chmod(root, 0o755)
    config = make_installation(root)
    yield config
    shutil.rmtree(root, ignore_errors=True)


def _as_nobody(config: Config) -> int | None:
    if os.geteuid() != 0:
        return None
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(config.base)], check=True)
    return NOBODY


def _one_object(stdout: str) -> dict:
    data = json.loads(stdout)          # the whole of stdout is one JSON document
    assert isinstance(data, dict)
    return data


def test_a_partial_backup_prints_its_object_and_each_unread_path_once(shared_installation: Config) -> None:
    config = shared_installation
    archive = config.base / "archive"
    victim = sorted(archive.rglob("*.dcm"))[0]
    closed = archive / "closed-folder"
    closed.mkdir()
    (closed / "inside.dcm").write_bytes(b"x")
    user = _as_nobody(config)
    victim.chmod(0)
    closed.chmod(0)

    result = cli(config, "backup", "run", "pacs", "--no-replicate", "--json", user=user)
    assert_one_line_error(result, 3, "could not be read", str(victim), str(closed), "permission denied")
    line = result.stderr.strip()
    assert line.count(str(closed)) == 1 and line.count(str(victim)) == 1
    data = _one_object(result.stdout)
    assert data["ok"] is False and data["status"] == "partial" and data["exit_code"] == 3
    assert data["snapshot_id"] and data["files"] > 0
    assert sorted(data["unreadable"]) == sorted([str(victim), str(closed)])
    assert data["causes"] == {str(victim): "permission denied", str(closed): "permission denied"}
    with open_catalog(config.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
    assert run["status"] == "partial" and run["id"] == data["run_id"]


def test_a_failed_and_a_refused_command_print_their_object(installation: Config) -> None:
    shutil.rmtree(installation.staging_repository)
    failed = cli(installation, "backup", "run", "pacs", "--no-replicate", "--json")
    assert_one_line_error(failed, 1, "no restic repository")
    data = _one_object(failed.stdout)
    assert (data["ok"], data["status"], data["exit_code"]) == (False, "failed", 1)
    assert "no restic repository" in data["error"]

    refused = cli(installation, "backup", "run", "nosuchjob", "--json")
    data = _one_object(refused.stdout)
    assert (data["ok"], data["status"], data["exit_code"]) == (False, "failed", 2)
    assert "nosuchjob" in data["error"]

    bad_option = cli(installation, "snapshots", "--json", "--nope")
    assert bad_option.returncode == 2 and _one_object(bad_option.stdout)["exit_code"] == 2


def test_a_command_that_printed_its_object_is_not_followed_by_another(installation: Config) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    cli(installation, "backup", "run", "pacs", "--no-replicate", check=True)
    pack = next(p for p in (installation.staging_repository / "data").rglob("*") if p.is_file())
    pack.chmod(0o600)
    pack.write_bytes(b"not what its name says")
    # media sync prints its outcome, then fails: stdout stays that one object
    result = cli(installation, "media", "sync", "offline", "--json")
    assert_one_line_error(result, 1, "does not match its name")
    data = _one_object(result.stdout)
    assert data["ok"] is False and data["target"] == "offline" and "exit_code" not in data


def test_without_json_nothing_is_printed_on_stdout_for_an_error(installation: Config) -> None:
    result = cli(installation, "backup", "run", "nosuchjob")
    assert result.stdout == "" and result.returncode == 2


def _summary(files: int, causes: dict[str, str]) -> BackupSummary:
    snap = Snapshot(id="ab" * 32, short_id="abababab", time="2026-01-01T00:00:00Z", paths=["/a"], tags=[],
                    hostname="h")
    return BackupSummary(snapshot=snap, total_files=files, unreadable=list(causes), causes=causes)


def test_a_vanished_path_is_not_a_permission_problem_and_zero_files_are_said(tmp_path: Path) -> None:
    from backupctl.restic import _cause_now

    gone = tmp_path / "gone"
    assert _cause_now(str(gone)) == "vanished during the backup"
    message, hint = partial_message(_summary(0, {str(gone): "vanished during the backup"}))
    assert "saved with 0 files" in message and f"{gone} (vanished during the backup)" in message
    assert hint is not None and "permission" not in hint
    message, hint = partial_message(_summary(5, {"/a": "permission denied"}))
    assert "0 files" not in message and hint == "check permissions on the source"


def test_an_interrupted_run_prints_its_object(installation: Config, tmp_path: Path) -> None:
    mark = tmp_path / "hook-started"
    with open(installation.base / "jobs" / "pacs.toml", "a") as fh:
        fh.write(f'\n[hooks]\nbefore = ["echo $$ > {mark}.tmp && mv {mark}.tmp {mark} && exec sleep 600"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(installation.path), "backup", "run",
                             "pacs", "--no-replicate", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(mark.exists, what="the run to be under way")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.kill(int(mark.read_text()), signal.SIGKILL)
    assert proc.returncode == 130, stderr
    data = _one_object(stdout)
    assert (data["ok"], data["status"], data["exit_code"]) == (False, "interrupted", 130)
    with open_catalog(installation.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
    assert run["status"] == "interrupted"
