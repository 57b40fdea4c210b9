"""A scheduled run that dies is alerted: a job process killed under the daemon, and a daemon killed mid-run
(alerted by the next daemon). Real daemon, real receiver; the run is held in a `before` hook so the test
strikes at a known point, reached by polling for the hook's mark."""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from tests.pacs.support import LivePacs
from tests.scheduler.test_sched_daemon import executions, process_gone

pytestmark = pytest.mark.slow
TOKEN = "hook-t0ken-5d2a"


def _held_job(inst, receiver, mark: Path) -> None:
    """Job `held` fires once, a few seconds from now, and waits in its `before` hook (pid in `mark`)."""
    inst.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    inst.add_settings('[scheduler]\nstop_grace_seconds = 0\n\n'
                      '[notify]\nwebhook_url_file = "secrets/hook"\nwebhook_events = ["failure"]\n'
                      'backoff_seconds = 0.1')
    fire = datetime.now(UTC) + timedelta(seconds=4)
    inst.write_job("held", f'sources = ["archive"]\nschedule = "{fire.second} {fire.minute} * * * *"\n'
                           f'[hooks]\nbefore = ["echo $$ > {mark}.tmp && mv {mark}.tmp {mark} && exec sleep 600"]\n')


def _failures(receiver) -> list[dict]:
    return [r.json() for r in receiver.matching("/hook/") if r.json()["event"] == "failure"]


def _kill_hook(mark: Path) -> None:
    if mark.exists():   # the hook runs in a session of its own
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(mark.read_text()), signal.SIGKILL)


def test_a_job_process_killed_under_the_daemon_is_alerted(installation, receiver, start_daemon, wait_for,
                                                          tmp_path: Path) -> None:
    inst, mark = installation, tmp_path / "hook-pid"
    _held_job(inst, receiver, mark)
    daemon = start_daemon(inst)
    try:
        wait_for(mark.exists, 60, "the scheduled run to reach its hook")
        [child] = [e["child_pid"] for e in executions(inst, "backup:held") if e["status"] == "running"]
        os.killpg(child, signal.SIGKILL)    # the job process and everything in its session
        [alert] = wait_for(lambda: _failures(receiver), 60, "the failure alert")
    finally:
        _kill_hook(mark)
    assert alert["name"] == "held" and alert["ok"] is False and "killed by signal 9" in alert["error"]
    with open_catalog(inst.config().catalog_path) as catalog:
        [run] = run_rows.list_runs(catalog, "held")
    assert run["status"] == "interrupted" and f"pid {child}" in run["error"]
    assert daemon.stop() == 0


def test_a_run_whose_daemon_was_killed_is_alerted_by_the_next_daemon(installation, receiver, start_daemon,
                                                                     wait_for, tmp_path: Path) -> None:
    inst, mark = installation, tmp_path / "hook-pid"
    _held_job(inst, receiver, mark)
    daemon = start_daemon(inst)
    try:
        wait_for(mark.exists, 60, "the scheduled run to reach its hook")
        [child] = [e["child_pid"] for e in executions(inst, "backup:held") if e["status"] == "running"]
        daemon.kill()                       # SIGKILL: this daemon cannot alert anything
        os.killpg(child, signal.SIGKILL)    # nor its job process
        wait_for(lambda: process_gone(child), 30, "the job process to be gone")
    finally:
        _kill_hook(mark)
    assert _failures(receiver) == []

    restarted = start_daemon(inst)
    [alert] = wait_for(lambda: _failures(receiver), 60, "the next daemon's alert")
    assert alert["name"] == "held" and alert["status"] == "failed" and "scheduler ended" in alert["error"]
    [row] = [e for e in executions(inst, "backup:held") if e["daemon_pid"] == daemon.proc.pid]
    assert row["status"] == "failed" and alert["execution"] == row["execution"]
    with open_catalog(inst.config().catalog_path) as catalog:
        [run] = run_rows.list_runs(catalog, "held")
    assert run["status"] == "interrupted"
    assert restarted.stop() == 0


@pytest.mark.orthanc
def test_an_orthanc_left_stopped_by_a_killed_job_process_is_started_by_the_daemon(
        installation, receiver, start_daemon, wait_for, tmp_path: Path) -> None:
    """The job process is killed (alone) while its Orthanc is stopped for the copy: the daemon starts it again
    at once, and the failure alert says so. A large extra `index*` file, copied while Orthanc is stopped,
    keeps it stopped long enough for the mark (the Orthanc pid gone) to be seen."""
    inst = installation
    pacs = LivePacs(tmp_path / "pacs").setup()
    pacs.start()
    try:
        with open(pacs.storage / "index.bulk", "wb") as fh:
            fh.truncate(256 << 20)
        inst.secret("hook", f"{receiver.base}/hook/{TOKEN}")
        inst.add_settings('[notify]\nwebhook_url_file = "secrets/hook"\nwebhook_events = ["failure"]\n'
                          'backoff_seconds = 0.1')
        fire = datetime.now(UTC) + timedelta(seconds=4)
        inst.write_job("pacs", f'schedule = "{fire.second} {fire.minute} * * * *"\n\n{pacs.orthanc_toml()}')
        running = pacs.pid()
        assert running is not None
        daemon = start_daemon(inst)
        wait_for(lambda: process_gone(running), 60, "Orthanc stopped for the copy")
        [child] = [e["child_pid"] for e in executions(inst, "backup:pacs") if e["status"] == "running"]
        os.kill(child, signal.SIGKILL)      # the job process alone: it cannot start Orthanc again
        [alert] = wait_for(lambda: _failures(receiver), 60, "the failure alert")
        assert "killed by signal 9" in alert["error"] and "left stopped by an interrupted run" in alert["error"]
        assert pacs.pid() is not None
        assert pacs.client().system()
        assert daemon.stop() == 0
    finally:
        pacs.kill()
