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
from backupctl.s3.objects import parse_iso
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
        uploaded = datetime.now(UTC)
        first = _locks(target, staging.repository)
        old_packs = [rel for rel in first if rel.startswith("data/")]
        # locked for the retention from their upload (whole seconds on some servers), however long it took
        assert all(t0 < first[rel] <= uploaded + timedelta(seconds=6) for rel in old_packs)

        second = run_backup(config, "pacs", replicate=False)     # unchanged archive: dedups onto old packs
        assert second.bytes_added < 100_000
        wait_for_clock(uploaded + timedelta(seconds=2))            # a new lock from now outlasts every first one
        t1 = datetime.now(UTC)
        outcome = replicate_to(config, catalog, "vault", NullProgress())
        assert outcome.ok, outcome.error
        assert any("extended the lock" in n for n in outcome.report.notes)
        after = _locks(target, staging.repository)
    new_snapshot = f"snapshots/{second.snapshot_id}"
    for rel in old_packs:
        assert after[rel] > first[rel], rel                          # past the original lock
        assert after[rel] >= t1 + timedelta(seconds=4), rel          # as long as the new snapshot needs
        assert after[rel] >= after[new_snapshot], rel                # never shorter than its snapshot


@pytest.mark.slow
def test_expire_deletes_only_unneeded_objects_after_their_lock(engine, make_config, staging, tmp_path):
    extra = tmp_path / "new-study"
    extra.mkdir()
    (extra / "image.bin").write_bytes(os.urandom(300_000))
    config = make_config(engine, retention_days=5 / DAY, extend_slack_days=0,
                         sources=[staging.archive, extra], job_extra="\n[retention]\nkeep_last = 1\n")
    latest = run_backup(config, "pacs", replicate=False)       # staging now holds two snapshots
    old_snapshot = f"snapshots/{staging.snapshots[0]}"
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        forgotten = apply_retention(config, "pacs")               # restic forget --keep-last 1 --prune
        assert [s["id"] for s in forgotten.removed] == staging.snapshots
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        needed = {f.rel for f in list_repository(config.staging_repository)}
        unneeded = {rel: parse_iso(o.retain_until) for rel, o in target.recorded().items() if rel not in needed}
        assert old_snapshot in unneeded

        started = datetime.now(UTC)
        early = expire(target, config.staging_repository)
        assert early.kept_needed == len(needed)
        assert not early.refused
        for item in early.deleted:                      # only what was already unlocked when expire began
            assert unneeded[item.split("@")[0]] <= datetime.now(UTC), item
        if unneeded[old_snapshot] > datetime.now(UTC):   # 5 s locks: normally still locked here
            assert any(k.startswith(old_snapshot) for k in early.kept_locked)
        assert started < unneeded[old_snapshot]

        wait_for_clock(max(unneeded.values()) + timedelta(seconds=1))
        late = expire(target, config.staging_repository)
        gone = {d.split("@")[0] for d in early.deleted + late.deleted}
        assert gone == set(unneeded)
        assert not late.kept_locked and not late.refused and late.kept_needed == len(needed)

        rebuilt = recover(target, tmp_path / "rebuilt", as_of=None)
    assert rebuilt.ok, rebuilt.skipped
    restic = replica_restic(config, rebuilt.to)
    restic.check(read_data=True)
    assert [s.id for s in restic.snapshots()] == [latest.snapshot_id]
