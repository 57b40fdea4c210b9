"""kill -9 in the middle of a replication: the next run completes what is missing and the audit is clean."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from backupctl.repofiles import list_repository
from backupctl.s3.bucket import init_bucket
from backupctl.s3.client import connect


def _recorded(catalog_path) -> int:
    if not catalog_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{catalog_path}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM s3_objects").fetchone()[0]
    except sqlite3.OperationalError:
        return 0       # the table is not there yet


@pytest.mark.slow
def test_kill_9_mid_replication_then_resume(engine, make_config, staging, cli):
    config = make_config(engine, concurrency=1)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    files = list_repository(staging.repository)
    proc = subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(config.path), "--quiet",
                             "replicate", "--target", "vault"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while _recorded(config.catalog_path) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # poll the catalog the child writes, with a deadline
    assert proc.poll() is None, "replication finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    done_before = _recorded(config.catalog_path)
    assert 1 <= done_before < len(files)

    again = cli(config, "replicate", "--target", "vault", "--json")
    assert again.code == 0, again.err
    assert _recorded(config.catalog_path) == len(files)
    audit = cli(config, "s3", "audit", "vault")
    assert audit.code == 0, audit.out + audit.err
    client = connect("vault", config.target("vault"), config.resolve).client
    versions = client.list_object_versions(Bucket=config.target("vault").bucket)
    per_key: dict[str, int] = {}
    for v in versions.get("Versions", []):
        per_key[v["Key"]] = per_key.get(v["Key"], 0) + 1
    assert sorted(per_key) == sorted(f.rel for f in files)
    assert all(n == 1 for n in per_key.values()), per_key
