"""Locks outlive what they protect (retention extension), and expiry deletes only what no kept snapshot
needs and only once its lock has run out. Short retentions (seconds) on both engines."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.forget import apply_retention
from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository
from backupctl.repository import replica_restic
from backupctl.s3.bucket import init_bucket
from backupctl.s3.expire import expire
from backupctl.s3.recover import recover
from backupctl.targets import make_target
from tests.s3.test_s3_attack import wait_for_clock

DAY = 86400


def _locks(target, staging_repo) -> dict[str, datetime]:
    """retain-until per repository file, read from the server for the recorded version."""
    recorded = target.recorded()
    out = {}
    for f in list_repository(staging_repo):
        head = target.bucket.client.head_object(Bucket=target.cfg.bucket, Key=f.rel,
                                                VersionId=recorded[f.rel].version_id)
        out[f.rel] = head["ObjectLockRetainUntilDate"]
    return out


@pytest.mark.slow
def test_old_objects_needed_by_a_newer_snapshot_are_extended(engine, make_config, staging):
    config = make_config(engine, retention_days=5 / DAY, extend_slack_days=0)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        t0 = datetime.now(UTC)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        first = _locks(target, staging.repository)
        old_packs = [rel for rel in first if rel.startswith("data/")]
        assert all(first[rel] <= t0 + timedelta(seconds=7) for rel in old_packs)

        wait_for_clock(t0 + timedelta(seconds=4))
        second = run_backup(config, "pacs", replicate=False)     # unchanged archive: dedups onto old packs
        assert second.bytes_added < 100_000
        t1 = datetime.now(UTC)
        outcome = replicate_to(config, catalog, "vault", NullProgress())
        assert outcome.ok, outcome.error
        assert any("extended the lock" in n for n in outcome.report.notes)
        after = _locks(target, staging.repository)
    new_snapshot = f"snapshots/{second.snapshot_id}"
    for rel in old_packs:
        assert after[rel] > t0 + timedelta(seconds=5), rel           # past the original lock
        assert after[rel] >= t1 + timedelta(seconds=4), rel          # as long as the new snapshot needs
        assert after[rel] >= after[new_snapshot], rel                # never shorter than its snapshot


@pytest.mark.slow
def test_expire_deletes_only_unneeded_objects_after_their_lock(engine, make_config, staging, tmp_path):
    extra = tmp_path / "new-study"
    extra.mkdir()
    config = make_config(engine, retention_days=6 / DAY, extend_slack_days=0,
                         sources=[staging.archive, extra], job_extra="\n[retention]\nkeep_last = 1\n")
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        t0 = datetime.now(UTC)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        (extra / "image.bin").write_bytes(os.urandom(300_000))
        latest = run_backup(config, "pacs", replicate=False)
        forgotten = apply_retention(config, "pacs")
        assert [s["id"] for s in forgotten.removed] == staging.snapshots
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        old_snapshot = f"snapshots/{staging.snapshots[0]}"

        early = expire(target, config.staging_repository)
        assert not early.deleted
        assert any(k.startswith(old_snapshot) for k in early.kept_locked)
        assert early.kept_needed == len(list_repository(config.staging_repository))

        wait_for_clock(t0 + timedelta(seconds=7))
        late = expire(target, config.staging_repository)
        assert any(d.startswith(old_snapshot) for d in late.deleted)
        assert not late.refused
        needed = {f.rel for f in list_repository(config.staging_repository)}
        assert not any(d.split("@")[0] in needed for d in late.deleted)

        rebuilt = recover(target, tmp_path / "rebuilt", as_of=None)
    assert rebuilt.ok, rebuilt.skipped
    restic = replica_restic(config, rebuilt.to)
    restic.check(read_data=True)
    assert [s.id for s in restic.snapshots()] == [latest.snapshot_id]
