"""Backup and restore with real restic on real DICOM files."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

from backupctl.actions.backup import run_backup
from backupctl.actions.restore import restore_snapshot
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.repository import staging_restic
from tests.helpers import cli


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_backup_then_restore_gives_identical_files(installation: Config, tmp_path: Path) -> None:
    outcome = run_backup(installation, "pacs", replicate=False)
    assert outcome.status == "success" and outcome.files == 12
    restored = tmp_path / "restored"
    result = restore_snapshot(installation, outcome.snapshot_id, restored)
    archive = tmp_path / "archive"
    assert result.files == 12 + 2  # the archive, and the snapshot's signed manifest (manifest + signature)
    assert _same_tree(archive, restored / archive.relative_to("/"))


def test_second_backup_of_unchanged_archive_adds_no_data(installation: Config) -> None:
    first = run_backup(installation, "pacs", replicate=False)
    second = run_backup(installation, "pacs", replicate=False)
    assert first.bytes_added > 0
    assert second.files_new == 0 and second.files_changed == 0
    # no file data; only tree metadata, since the state folder holding the manifest changes (catalog WAL)
    assert second.data_blobs == 0 and first.data_blobs > 0
    assert second.bytes_added < 4096
    assert second.snapshot_id != first.snapshot_id


def test_changed_file_is_picked_up(installation: Config, tmp_path: Path) -> None:
    run_backup(installation, "pacs", replicate=False)
    victim = sorted((tmp_path / "archive").rglob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes() + b"\0\0")
    second = run_backup(installation, "pacs", replicate=False)
    assert second.files_changed == 1 and second.files_new == 0
    restored = tmp_path / "restored"
    restore_snapshot(installation, second.snapshot_id, restored, includes=[str(victim)])
    assert (restored / victim.relative_to("/")).read_bytes() == victim.read_bytes()


def test_catalog_records_run_and_snapshot_with_full_id(installation: Config) -> None:
    outcome = run_backup(installation, "pacs", replicate=False)
    with open_catalog(installation.catalog_path) as catalog:
        run = run_rows.get_run(catalog, outcome.run_id)
        snaps = snapshot_rows.list_snapshots(catalog, "pacs")
        assert catalog.applied_migrations()[0] == "001_skeleton"
        journal = catalog.query("PRAGMA journal_mode")[0][0]
    assert run["status"] == "success" and run["files"] == 12 and run["finished"]
    assert len(snaps) == 1 and len(snaps[0]["id"]) == 64 and snaps[0]["id"] == outcome.snapshot_id
    assert journal == "wal"
    ids = {s.id for s in staging_restic(installation).snapshots()}
    assert outcome.snapshot_id in ids


def test_catalog_describes_each_snapshot_as_restic_stored_it(installation: Config) -> None:
    """The snapshot is described without asking restic again: the description must be what restic stored."""
    first = run_backup(installation, "pacs", replicate=False)
    second = run_backup(installation, "pacs", replicate=False)
    with open_catalog(installation.catalog_path) as catalog:
        recorded = {s["id"]: (s["time"], s["paths"], s["tags"]) for s in snapshot_rows.list_snapshots(catalog)}
    stored = {s.id: (s.time, s.paths, s.tags) for s in staging_restic(installation).snapshots()}
    assert recorded == stored and len(stored) == 2
    # whole-second times, yet two runs within one second still order strictly (restic's `latest` is by time)
    assert recorded[second.snapshot_id][0] > recorded[first.snapshot_id][0]
    # the second compared with the first (given as its parent): nothing new, nothing changed
    assert staging_restic(installation).snapshot(second.snapshot_id).parent == first.snapshot_id
    assert second.files_new == 0 and second.files_changed == 0 and second.files == first.files == 12


def test_password_never_reaches_catalog_or_output(installation: Config) -> None:
    password = (installation.base / "secrets" / "restic-password").read_text().strip()
    result = cli(installation, "backup", "run", "pacs", "--no-replicate", "--json", check=True)
    snaps = cli(installation, "snapshots", "--json", check=True)
    runs = cli(installation, "runs", "--json", check=True)
    for text in (result.stdout, result.stderr, snaps.stdout, runs.stdout):
        assert password not in text
    assert password.encode() not in installation.catalog_path.read_bytes()
    assert json.loads(result.stdout)["files"] == 12


def test_restore_refuses_non_empty_target(installation: Config, tmp_path: Path) -> None:
    outcome = run_backup(installation, "pacs", replicate=False)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("do not overwrite")
    result = cli(installation, "restore", outcome.snapshot_id[:8], "--to", str(target))
    assert result.returncode == 2 and "not empty" in result.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    forced = cli(installation, "restore", outcome.snapshot_id[:8], "--to", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
