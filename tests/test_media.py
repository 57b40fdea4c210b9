"""Offline media: labelled disks, checked copies, rotation."""

from __future__ import annotations

import json
from pathlib import Path

from backupctl.actions.backup import run_backup
from backupctl.config import Config
from backupctl.repofiles import list_repository, sha256_file
from backupctl.targets.media import LABEL_FILE
from tests.helpers import assert_one_line_error, cli


def test_media_sync_copies_every_file_checked_by_its_name_and_never_locks(installation: Config,
                                                                          tmp_path: Path) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    outcome = run_backup(installation, "pacs")
    assert outcome.replicated_ok, outcome.replicas
    (installation.staging_repository / "locks" / ("f" * 64)).write_text("a lock that must not travel")
    cli(installation, "media", "sync", "offline", check=True)
    copy = tmp_path / "disk" / "backupctl" / "repository"
    files = list_repository(copy)
    assert {f.rel for f in files} == {f.rel for f in list_repository(installation.staging_repository)}
    for f in files:
        if f.named_by_hash:
            assert sha256_file(copy / f.rel) == f.name, f.rel
    assert (copy / "config").read_bytes() == (installation.staging_repository / "config").read_bytes()
    assert not (copy / "locks").exists()
    assert not list(copy.rglob("*.backupctl-partial"))


def test_media_sync_is_incremental_and_records_snapshots(installation: Config) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-B", check=True)
    run_backup(installation, "pacs")
    again = json.loads(cli(installation, "media", "sync", "offline", "--json", check=True).stdout)
    assert again["ok"] and again["report"]["uploaded"] == 0 and again["report"]["skipped"] > 0
    listing = json.loads(cli(installation, "media", "list", "--json", check=True).stdout)
    by_label = {m["label"]: m for m in listing}
    assert by_label["DISK-B"]["state"] == "ok" and by_label["DISK-B"]["snapshots"] == 1
    assert by_label["DISK-B"]["mounted"] is True
    assert by_label["DISK-A"]["state"] == "never synced"
    snaps = json.loads(cli(installation, "snapshots", "--json", check=True).stdout)
    assert snaps[0]["replicas"][0]["location"] == "DISK-B"


def test_disk_with_a_foreign_label_is_refused(installation: Config, tmp_path: Path) -> None:
    run_backup(installation, "pacs", replicate=False)
    (tmp_path / "disk" / LABEL_FILE).write_text(json.dumps(
        {"label": "STRAY", "target": "offline", "media_id": "x", "created": "2026-01-01"}))
    result = cli(installation, "media", "sync", "offline")
    assert_one_line_error(result, 2, "labelled 'STRAY'")
    assert not (tmp_path / "disk" / "backupctl" / "repository").exists()


def test_unlabelled_disk_and_unknown_label_are_refused(installation: Config, tmp_path: Path) -> None:
    result = cli(installation, "media", "sync", "offline")
    assert_one_line_error(result, 2, "no backupctl label", "media init")
    result = cli(installation, "media", "init", "offline", "--label", "NOT-CONFIGURED")
    assert_one_line_error(result, 2, "not one of target offline's labels")
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    result = cli(installation, "media", "init", "offline", "--label", "DISK-B")
    assert_one_line_error(result, 1, "already labelled 'DISK-A'")


def test_restore_from_the_medium_without_the_staging_repository(installation: Config, tmp_path: Path) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    outcome = run_backup(installation, "pacs")
    # the backup host's repository is gone: the medium alone must be enough
    staging = installation.staging_repository
    staging.rename(staging.with_name("staging-lost"))
    to = tmp_path / "from-disk"
    result = cli(installation, "restore", outcome.snapshot_id, "--to", str(to), "--from", "offline")
    assert result.returncode == 0, result.stderr
    victim = sorted((tmp_path / "archive").rglob("*.dcm"))[0]
    assert (to / victim.relative_to("/")).read_bytes() == victim.read_bytes()


def test_a_damaged_staging_file_stops_the_sync_before_anything_refers_to_it(installation: Config,
                                                                              tmp_path: Path) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    run_backup(installation, "pacs", replicate=False)
    staging = installation.staging_repository
    packs = sorted((f for f in list_repository(staging) if f.kind == "data"), key=lambda f: f.rel)
    assert len(packs) >= 2, "the test needs a damaged pack and a good one"
    damaged = staging / packs[0].rel
    damaged.chmod(0o600)
    with open(damaged, "r+b") as fh:     # one flipped byte: the file no longer matches its name
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    done = cli(installation, "media", "sync", "offline")
    assert_one_line_error(done, 1, "does not match its name")
    copy = tmp_path / "disk" / "backupctl" / "repository"
    # the good packs are kept, whole and under their names; the damaged one is not there at all
    assert not (copy / packs[0].rel).exists()
    for f in packs[1:]:
        assert sha256_file(copy / f.rel) == f.name, f.rel
    assert not list(copy.rglob("*.backupctl-partial"))
    # nothing that refers to the data (index, snapshots) was copied after the failure
    assert not any(f.kind in ("index", "snapshots") for f in list_repository(copy))
