"""One repository lock across processes: a manual run and the daemon never run restic on one repository at
once; the second refuses (lock_wait_seconds = 0) or waits, as configured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime

import pytest

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import scheduler as sched_rows
from backupctl.repository import staging_restic

pytestmark = pytest.mark.slow

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from backupctl.config import load_config
    from backupctl.locking import repository_lock
    config = load_config(Path(sys.argv[1]))
    with repository_lock(config.state_dir, str(config.staging_repository), 0):
        print("locked", flush=True)
        sys.stdin.readline()
""")


class LockHolder:
    """Another process holding the repository lock until told to let go."""

    def __init__(self, inst) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(inst.config_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == 0


def backup_runs(inst) -> list[dict]:
    with open_catalog(inst.config().catalog_path) as catalog:
        return list(reversed(run_rows.list_runs(catalog, "pacs", kind="backup")))


def test_second_process_refuses_without_running_restic(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    holder = LockHolder(installation)
    try:
        result = installation.cli("backup", "run", "pacs")
    finally:
        holder.release()
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: repository") and f"pid {holder.proc.pid}" in line and "lock_wait_seconds" in line
    assert "Traceback" not in result.stderr
    assert backup_runs(installation) == []          # nothing recorded
    assert staging_restic(installation.config()).snapshots() == []  # restic never ran


def test_second_process_waits_when_configured_then_runs(installation, tmp_path, wait_for) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    installation.config_file.write_text(
        installation.config_file.read_text().replace("lock_wait_seconds = 0", "lock_wait_seconds = 120"))
    holder = LockHolder(installation)
    err = tmp_path / "waiter.err"
    with err.open("w") as fh:
        waiter = subprocess.Popen([sys.executable, "-m", "backupctl", "--debug", "--config",
                                   str(installation.config_file), "backup", "run", "pacs"],
                                  stdout=subprocess.DEVNULL, stderr=fh, text=True)
    try:
        wait_for(lambda: "is in use" in err.read_text(), 60, "the second process to wait for the lock")
        assert waiter.poll() is None and backup_runs(installation) == []
        released = datetime.now().astimezone()
        holder.release()
        assert waiter.wait(timeout=120) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
    [run] = backup_runs(installation)
    assert run["status"] == "success" and datetime.fromisoformat(run["started"]) > released


def test_two_racing_backups_never_overlap(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    installation.config_file.write_text(
        installation.config_file.read_text().replace("lock_wait_seconds = 0", "lock_wait_seconds = 120"))
    argv = [sys.executable, "-m", "backupctl", "--config", str(installation.config_file), "backup", "run", "pacs"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    first, second = backup_runs(installation)
    assert first["status"] == second["status"] == "success"
    assert first["finished"] <= second["started"]  # one after the other, never both in restic
    assert len(staging_restic(installation.config()).snapshots()) == 2


def test_scheduled_run_queues_behind_a_manual_one(installation, start_daemon, wait_for) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nschedule = "*/2 * * * * *"\n')
    installation.add_settings("[scheduler]\nlock_wait_seconds = 120\nstop_grace_seconds = 60")
    holder = LockHolder(installation)
    daemon = start_daemon(installation)
    try:
        wait_for(lambda: any("is in use" in e.get("msg", "") for e in daemon.events()), 60,
                 "the scheduled run to wait for the lock")
        assert backup_runs(installation) == []
    finally:
        holder.release()

    def done() -> list:
        with open_catalog(installation.config().catalog_path) as catalog:
            return [e for e in sched_rows.list_executions(catalog, "backup:pacs") if e["status"] == "success"]

    wait_for(done, 90, "the scheduled run to finish once the lock is free")
    assert daemon.stop() == 0
