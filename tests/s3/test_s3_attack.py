"""An attacker holding the writer credential overwrites a pack and deletes a snapshot object: the audit names
both, and point-in-time recovery from before the attack gives a repository restic fully accepts."""

from __future__ import annotations

import filecmp
import os
import time
from datetime import UTC, datetime, timedelta

from backupctl.actions.replicate import replicate_to
from backupctl.actions.restore import restore_snapshot
from backupctl.catalog import open_catalog
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository
from backupctl.repository import replica_restic
from backupctl.s3.audit import audit_target
from backupctl.s3.bucket import init_bucket
from backupctl.s3.recover import recover
from backupctl.targets import make_target


def wait_for_clock(when: datetime) -> None:
    """Let the wall clock pass `when` (servers stamp versions with it; moto keeps whole seconds)."""
    deadline = time.monotonic() + max(0.0, (when - datetime.now(UTC)).total_seconds()) + 5
    while datetime.now(UTC) <= when:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def overwrite_and_delete(target, repository, as_of: datetime):  # noqa: ANN201 - (files, pack, snapshot)
    """An attacker holding the writer key, once the clock has passed `as_of`: a data pack overwritten with
    garbage and a snapshot file deleted (a delete marker on top of the locked versions)."""
    wait_for_clock(as_of.replace(microsecond=0) + timedelta(seconds=1))
    files = list_repository(repository)
    pack = next(f for f in files if f.kind == "data")
    snap = next(f for f in files if f.kind == "snapshots")
    client, name = target.bucket.client, target.cfg.bucket
    client.put_object(Bucket=name, Key=pack.rel, Body=b"encrypted by ransomware")
    client.delete_object(Bucket=name, Key=snap.rel)
    return files, pack, snap


def same_tree(left, right) -> bool:
    for dirpath, _, names in os.walk(left):
        for name in names:
            a = os.path.join(dirpath, name)
            b = os.path.join(right, os.path.relpath(a, left))
            if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
                return False
    return sum(len(n) for _, _, n in os.walk(left)) == sum(len(n) for _, _, n in os.walk(right))


def test_attack_is_audited_and_recovered_as_of_before(engine, make_config, staging, tmp_path):
    config = make_config(engine)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        clean = audit_target(target, list_repository(staging.repository), NullProgress())
        assert clean.ok, clean.findings
        assert clean.locked == clean.objects == len(list_repository(staging.repository))

        as_of = datetime.now(UTC)
        files, pack, snap = overwrite_and_delete(target, staging.repository, as_of)
        target.bucket.client.put_object(Bucket=target.cfg.bucket, Key="README-RANSOM.txt", Body=b"pay up")

        report = audit_target(target, files, NullProgress())
        found = {(f.kind, f.key) for f in report.findings}
        assert ("unexpected", pack.rel) in found
        assert ("unexpected", snap.rel) in found
        assert ("unexpected", "README-RANSOM.txt") in found
        assert not report.ok

        recovered = recover(target, tmp_path / "recovered", as_of)
        assert recovered.ok, recovered.skipped
        assert recovered.files == len(files)
        restic = replica_restic(config, recovered.to)
        restic.check(read_data=True)
        restic.restore(staging.snapshots[0], tmp_path / "restored")
    assert same_tree(staging.archive, tmp_path / "restored" / staging.archive.relative_to("/"))


def test_restore_from_target_uses_recorded_versions(engine, make_config, staging, tmp_path):
    config = make_config(engine)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        pack = next(f for f in list_repository(staging.repository) if f.kind == "data")
        target.bucket.client.put_object(Bucket=target.cfg.bucket, Key=pack.rel, Body=b"garbage")
    outcome = restore_snapshot(config, staging.snapshots[0], tmp_path / "out", copy="vault")
    assert outcome.files > 0
    assert same_tree(staging.archive, tmp_path / "out" / staging.archive.relative_to("/"))


def test_restore_from_target_after_losing_the_catalog(engine, make_config, staging, tmp_path):
    config = make_config(engine)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
        pack = next(f for f in list_repository(staging.repository) if f.kind == "data")
        target.bucket.client.put_object(Bucket=target.cfg.bucket, Key=pack.rel, Body=b"garbage")
    for leftover in config.catalog_path.parent.glob(config.catalog_path.name + "*"):
        leftover.unlink()                              # the backup host's catalog is gone
    outcome = restore_snapshot(config, staging.snapshots[0], tmp_path / "out", copy="vault")
    assert outcome.files > 0
    assert same_tree(staging.archive, tmp_path / "out" / staging.archive.relative_to("/"))
