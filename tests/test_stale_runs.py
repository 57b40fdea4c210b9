"""No run stays 'running' once its process is gone: the next command that opens the catalog marks it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.config import Config
from backupctl.process import start_ticks as start_time
from backupctl.status import Status
from tests.helpers import cli, wait_for


def _raw_runs(config: Config) -> list[dict]:
    """The runs table as stored, read without open_catalog (which would mark the dead runs)."""
    conn = sqlite3.connect(config.catalog_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    finally:
        conn.close()


def test_a_killed_run_is_marked_interrupted_by_the_next_command(installation: Config, tmp_path: Path) -> None:
    mark = tmp_path / "hook-started"
    # the `before` hook keeps the run busy, once it is recorded as running
    with open(installation.base / "jobs" / "pacs.toml", "a") as fh:
        fh.write(f'\n[hooks]\nbefore = ["echo $$ > {mark}.tmp && mv {mark}.tmp {mark} && exec sleep 600"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(installation.path), "backup", "run",
                             "pacs", "--no-replicate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(mark.exists, what="the run to be under way")
        [row] = _raw_runs(installation)
        assert row["status"] == "running" and row["pid"] == proc.pid
        assert row["pid_start"] == start_time(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if mark.exists():   # the hook runs in a session of its own
            os.kill(int(mark.read_text()), signal.SIGKILL)
    assert _raw_runs(installation)[0]["status"] == "running"   # nobody could record the kill

    listed = json.loads(cli(installation, "runs", "--json", check=True).stdout)
    assert listed[0]["status"] == "interrupted"
    assert f"pid {proc.pid}" in listed[0]["error"] and listed[0]["finished"]


def test_a_reused_pid_does_not_keep_a_dead_run_running(installation: Config) -> None:
    with open_catalog(installation.catalog_path) as catalog:
        mine = run_rows.start_run(catalog, "pacs")
        reused = run_rows.start_run(catalog, "pacs")
        legacy = run_rows.start_run(catalog, "pacs")
        with catalog.transaction() as tx:
            # the same pid, started at another time: another process now owns that pid
            tx.execute("UPDATE runs SET pid_start = pid_start - 1 WHERE id=?", (reused,))
            # a row from before the start time was recorded: the pid alone decides
            tx.execute("UPDATE runs SET pid_start = NULL WHERE id=?", (legacy,))
    with open_catalog(installation.catalog_path) as catalog:
        status = {r["id"]: r["status"] for r in run_rows.list_runs(catalog)}
    assert status == {mine: Status.RUNNING, reused: Status.INTERRUPTED, legacy: Status.RUNNING}


def test_status_is_tied_to_the_exit_codes() -> None:
    assert {s.value: s.exit_code for s in Status if s.final} == {
        "success": 0, "partial": 3, "failed": 1, "interrupted": 130}
