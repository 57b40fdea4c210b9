"""Retention on the staging repository: explicit, says what it kept and why, never touches replicas."""

from __future__ import annotations

import json

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.repository import replica_restic, staging_restic
from tests.helpers import assert_one_line_error, cli, make_installation


def test_forget_keeps_policy_and_leaves_media_untouched(tmp_path) -> None:
    config = make_installation(tmp_path, job_extra="[retention]\nkeep_last = 2\n")
    cli(config, "media", "init", "offline", "--label", "DISK-A", check=True)
    ids = [run_backup(config, "pacs").snapshot_id for _ in range(3)]
    dry = json.loads(cli(config, "forget", "pacs", "--dry-run", "--json", check=True).stdout)
    assert [s["id"] for s in dry["removed"]] == [ids[0]]
    assert len(staging_restic(config).snapshots()) == 3
    done = json.loads(cli(config, "forget", "pacs", "--json", check=True).stdout)
    assert {s["id"] for s in done["kept"]} == set(ids[1:])
    assert all("last snapshot" in s["reasons"] for s in done["kept"])
    assert {s.id for s in staging_restic(config).snapshots()} == set(ids[1:])
    staging_restic(config).check()
    disk = replica_restic(config, tmp_path / "disk" / "backupctl" / "repository")
    assert {s.id for s in disk.snapshots()} == set(ids), "the offline disk must keep every snapshot"
    with open_catalog(config.catalog_path) as catalog:
        statuses = {s["id"]: s["status"] for s in snapshot_rows.list_snapshots(catalog, include_forgotten=True)}
    assert statuses[ids[0]] == "forgotten" and statuses[ids[2]] == "complete"


def test_forget_without_policy_is_refused(installation: Config) -> None:
    run_backup(installation, "pacs", replicate=False)
    assert_one_line_error(cli(installation, "forget", "pacs"), 2, "no [retention] policy")
    assert len(staging_restic(installation).snapshots()) == 1
