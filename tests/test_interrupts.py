"""restic killed or interrupted mid-backup: the run is recorded honestly and the repository stays sound."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.repository import staging_restic
from tests.helpers import cli, wait_for

pytestmark = pytest.mark.slow


def _big_source(installation: Config, tmp_path: Path) -> None:
    """Enough incompressible data that restic is still busy when the test strikes."""
    bulk = tmp_path / "archive" / "bulk"
    bulk.mkdir()
    for i in range(48):
        (bulk / f"part{i:03d}.bin").write_bytes(os.urandom(8 << 20))


def _restic_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if cmdline and cmdline[0].endswith(b"restic") and b"backup" in cmdline:
            return int(child)
    return None


def _start_backup(installation: Config) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(installation.path), "backup", "run",
                             "pacs", "--no-replicate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def _packs_written(installation: Config) -> bool:
    data = installation.staging_repository / "data"
    return any(p.is_file() for p in data.rglob("*"))


def test_restic_killed_mid_backup_is_a_failed_run_and_the_repository_stays_sound(installation: Config,
                                                                                  tmp_path: Path) -> None:
    _big_source(installation, tmp_path)
    proc = _start_backup(installation)
    restic_pid = wait_for(lambda: _restic_child(proc.pid), what="restic to start")
    wait_for(lambda: _packs_written(installation), what="restic to write a pack")
    os.kill(restic_pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "killed by signal 9" in stderr and "Traceback" not in stderr
    with open_catalog(installation.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
        assert run["status"] == "failed" and "signal 9" in run["error"]
        assert snapshot_rows.list_snapshots(catalog) == []
    assert list((installation.staging_repository / "locks").iterdir()), "restic died holding its lock"

    again = cli(installation, "backup", "run", "pacs", "--no-replicate")
    assert again.returncode == 0, again.stderr
    restic = staging_restic(installation)
    restic.check()  # raises on any error; exclusive lock, so the stale one must be gone
    assert len(restic.snapshots()) == 1


def test_sigterm_stops_restic_cleanly_and_leaves_no_lock(installation: Config, tmp_path: Path) -> None:
    _big_source(installation, tmp_path)
    proc = _start_backup(installation)
    wait_for(lambda: _restic_child(proc.pid), what="restic to start")
    wait_for(lambda: _packs_written(installation), what="restic to write a pack")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list((installation.staging_repository / "locks").iterdir()) == []
    with open_catalog(installation.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
    assert run["status"] == "interrupted"
    staging_restic(installation).check()
