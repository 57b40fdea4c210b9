"""Replication to the S3 Object Lock copy, against both engines."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import botocore.exceptions as bex
import pytest

from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.catalog import s3 as s3_rows
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository
from backupctl.s3.audit import audit_target
from backupctl.s3.bucket import init_bucket
from backupctl.s3.client import connect
from backupctl.targets import make_target
from tests.s3.conftest import BIG_PACK_BYTES


def test_replication_locks_every_object_and_skips_locks(engine, make_config, staging):
    config = make_config(engine)
    cfg = config.target("vault")
    bucket = connect("vault", cfg, config.resolve)
    assert init_bucket(bucket) == "created"
    before = datetime.now(UTC)
    with open_catalog(config.catalog_path) as catalog:
        outcome = replicate_to(config, catalog, "vault", NullProgress())
        assert outcome.ok, outcome.error
        recorded = s3_rows.live_objects(catalog, "vault", "" + cfg.bucket)
    files = list_repository(staging.repository)
    assert outcome.report.uploaded == len(files)
    assert set(recorded) == {f.rel for f in files}
    assert any(f.size > 8 * 1024 * 1024 for f in files if f.kind == "data"), "fixture lacks a big pack"
    keys = [o["Key"] for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket)
            for o in page.get("Contents", [])]
    assert not [k for k in keys if k.startswith("locks/")]
    assert sorted(keys) == sorted(f.rel for f in files)
    minimum = before + timedelta(days=cfg.retention_days) - timedelta(seconds=1)
    for f in files:
        head = bucket.client.head_object(Bucket=cfg.bucket, Key=f.rel, VersionId=recorded[f.rel].version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE", f.rel
        assert head["ObjectLockRetainUntilDate"] >= minimum, f.rel
        assert head["ContentLength"] == f.size
    big = max(files, key=lambda f: f.size)
    assert big.size > BIG_PACK_BYTES * 0.7
    with pytest.raises(bex.ClientError):
        bucket.client.delete_object(Bucket=cfg.bucket, Key=big.rel, VersionId=recorded[big.rel].version_id)
    versions = bucket.client.list_object_versions(Bucket=cfg.bucket, Prefix=big.rel)
    assert [v["VersionId"] for v in versions["Versions"]] == [recorded[big.rel].version_id]


def test_second_run_uploads_nothing(engine, make_config):
    config = make_config(engine)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    with open_catalog(config.catalog_path) as catalog:
        first = replicate_to(config, catalog, "vault", NullProgress())
        again = replicate_to(config, catalog, "vault", NullProgress())
    assert first.ok and again.ok, (first.error, again.error)
    assert again.report.uploaded == 0
    assert again.report.skipped == first.report.uploaded


def test_multipart_upload_gets_its_lock_set_afterwards(engine, make_config, staging):
    # both engines drop the lock headers of a multipart upload (see the probe): backupctl must notice by
    # reading the lock back, set it with PutObjectRetention and remember that the endpoint needs it
    config = make_config(engine, multipart_threshold_mib=5, part_size_mib=5)
    cfg = config.target("vault")
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        outcome = replicate_to(config, catalog, "vault", NullProgress())
        assert outcome.ok, outcome.error
        recorded = target.recorded()
        assert s3_rows.endpoint_drops_lock_headers(catalog, "vault", target.location)
        assert audit_target(target, list_repository(staging.repository), NullProgress()).ok
    big = [f for f in list_repository(staging.repository) if f.size > 5 * 1024 * 1024]
    assert big
    for f in big:
        assert recorded[f.rel].lock_fixed and recorded[f.rel].md5.endswith("-3")
        head = target.bucket.client.head_object(Bucket=cfg.bucket, Key=f.rel,
                                                VersionId=recorded[f.rel].version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE"
    assert any("dropped the lock headers" in n for n in outcome.report.notes)


class _FirstAdvance:
    """A progress that notes, at its first advance, how many versions the catalog holds and how many PUTs
    went out; `advanced` lets a test hold an upload until then."""

    def __init__(self, target) -> None:  # noqa: ANN001
        self.target = target
        self.advanced = threading.Event()
        self.puts = 0
        self.seen: tuple[int, int] | None = None

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = ""):
        yield self

    def advance(self, amount: float = 1) -> None:
        if self.seen is None and amount:
            self.seen = (len(self.target.recorded()), self.puts)
            self.advanced.set()

    def update(self, **kw) -> None:
        pass


def test_each_version_is_recorded_while_the_others_upload(moto_engine, make_config, staging):
    # a run killed half-way keeps the record of every version it proved, not only after the last upload
    config = make_config(moto_engine, concurrency=1)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        progress = _FirstAdvance(target)

        def hold_second_put(**kw) -> None:
            progress.puts += 1
            if progress.puts == 2:
                progress.advanced.wait(timeout=60)   # released by the first version's record, if it comes

        target.bucket.client.meta.events.register("before-send.s3.PutObject", hold_second_put)
        files = list_repository(staging.repository)
        report = target.sync(staging.repository, files, progress)
    assert report.uploaded == len(files) > 2
    recorded, puts = progress.seen or (0, 0)
    assert recorded == 1 and puts <= 2    # recorded before the second PUT went out (it waits for the record)
