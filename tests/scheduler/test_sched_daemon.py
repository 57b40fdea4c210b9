"""The daemon as operators run it: a real `backupctl scheduler run` subprocess, real restic, a real HTTP
receiver. Every wait polls with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import scheduler as sched_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.repository import staging_restic

pytestmark = pytest.mark.slow
TOKEN = "hook-t0ken-7c1e"


def executions(inst, schedule: str) -> list[dict]:
    with open_catalog(inst.config().catalog_path) as catalog:
        return list(reversed(sched_rows.list_executions(catalog, schedule)))


def finished(inst, schedule: str, status: str | None = None) -> list[dict]:
    return [e for e in executions(inst, schedule)
            if e["status"] not in ("running", "skipped") and (status is None or e["status"] == status)]


def metric_samples(path) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def schedule_list(inst) -> dict[str, dict]:
    result = inst.cli("schedule", "list", "--json", check=True)
    return {row["id"]: row for row in json.loads(result.stdout)}


def test_scheduled_jobs_run_record_and_notify(installation, receiver, start_daemon, wait_for) -> None:
    inst = installation
    inst.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    inst.secret("ping", f"{receiver.base}/ping/{TOKEN}")
    inst.add_settings('[scheduler]\nstop_grace_seconds = 60\n\n'
                      '[notify]\nwebhook_url_file = "secrets/hook"\nwebhook_events = ["success", "failure"]\n'
                      'backoff_seconds = 0.1')
    inst.write_job("pacs", 'sources = ["archive"]\nschedule = "*/2 * * * * *"\n'
                           '[notify]\nping_url_file = "secrets/ping"\n')
    inst.write_job("broken", 'sources = ["no-such-archive"]\nschedule = "*/2 * * * * *"\n')
    daemon = start_daemon(inst)

    def hook(name: str, event: str) -> list:
        return [r for r in receiver.matching("/hook/") if r.json()["name"] == name and r.json()["event"] == event]

    success = wait_for(lambda: hook("pacs", "success"), 90, "the success webhook of job pacs")[0].json()
    failure = wait_for(lambda: hook("broken", "failure"), 90, "the failure webhook of job broken")[0].json()
    assert daemon.stop() == 0
    assert daemon.logged("scheduler stopped")

    # the success is recorded, linked to its catalog run, and is what the webhook said
    [first, *_] = finished(inst, "backup:pacs", "success")
    with open_catalog(inst.config().catalog_path) as catalog:
        run = run_rows.get_run(catalog, first["run_ids"][0])
    assert run["status"] == "success" and run["kind"] == "backup" and run["snapshot_id"]
    assert success["status"] == "success" and success["run_ids"] == first["run_ids"]
    assert success["figures"]["files"] == run["files"] == 2
    # the failing job fires its fail hook with the reason, and is recorded as failed
    assert failure["ok"] is False and "does not exist" in failure["error"]
    assert finished(inst, "backup:broken")[0]["status"] == "failed"
    # healthcheck pings: /start then success for pacs
    pings = [r.path.split("?")[0] for r in receiver.matching("/ping/")]
    assert pings[:2] == [f"/ping/{TOKEN}/start", f"/ping/{TOKEN}"]
    # metrics textfile parses and holds the catalog's values; the daemon wrote it on the way out
    samples = metric_samples(inst.root / "var/metrics/backupctl.prom")
    with open_catalog(inst.config().catalog_path) as catalog:
        last_ok = run_rows.last_run(catalog, "pacs", status="success")
        failures = sched_rows.failure_counts(catalog, "backup")
    finished_at = datetime.fromisoformat(last_ok["finished"]).timestamp()
    assert samples[("backupctl_job_last_success_timestamp_seconds", (("job", "pacs"),))] == pytest.approx(finished_at)
    assert samples[("backupctl_job_last_success_files", (("job", "pacs"),))] == 2
    assert samples[("backupctl_job_last_run_success", (("job", "broken"),))] == 0
    assert samples[("backupctl_job_stale", (("job", "broken"),))] == 1
    assert samples[("backupctl_job_failures_total", (("job", "pacs"),))] == failures.get(("backup", "pacs"), 0)
    broken_failures = len([e for e in executions(inst, "backup:broken") if e["status"] == "failed"])
    assert samples[("backupctl_schedule_failures_total", (("schedule", "backup:broken"),))] == broken_failures >= 1
    assert ("backupctl_scheduler_up", ()) not in samples  # written at stop: the daemon is no longer up
    # secrets in URLs are never logged
    assert TOKEN not in daemon.log()
    # structured logs carry job and execution ids, and run ids on the outcome
    done = [e for e in daemon.events() if e.get("job") == "pacs" and e.get("status") == "success"]
    assert done and done[0]["execution"] and done[0]["run_ids"] == first["run_ids"]


def test_sigkill_and_restart_keeps_schedule_and_runs_missed_job_once(installation, start_daemon, wait_for) -> None:
    inst = installation
    t0 = datetime.now(UTC).replace(microsecond=0)
    first, second = t0 + timedelta(seconds=20), t0 + timedelta(seconds=23)
    inst.write_job("pacs", f'sources = ["archive"]\nschedule = "{first.second},{second.second} * * * * *"\n')
    daemon = start_daemon(inst)
    stored = schedule_list(inst)["backup:pacs"]
    assert stored["next_run_source"] == "daemon"
    assert datetime.fromisoformat(stored["next_run"]) == first
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=30)
    assert executions(inst, "backup:pacs") == []

    # down while both runs come due; the store keeps the first one as its next run time
    wait_for(lambda: datetime.now(UTC) > second + timedelta(seconds=1), 60, "both run times to pass")
    stored = schedule_list(inst)["backup:pacs"]
    assert datetime.fromisoformat(stored["next_run"]) == first and stored["overdue"]

    restarted = start_daemon(inst)
    wait_for(lambda: finished(inst, "backup:pacs"), 90, "the missed run to be caught up")
    after = schedule_list(inst)["backup:pacs"]
    assert datetime.fromisoformat(after["next_run"]) == first + timedelta(minutes=1)  # back on schedule
    runs = finished(inst, "backup:pacs")
    assert [r["status"] for r in runs] == ["success"]  # two missed times, one run
    assert restarted.logged("late; missed runs are coalesced")
    assert restarted.stop() == 0


def backup_running_for(inst, job: str, seconds: float) -> bool:
    """The job's backup run has been in progress for `seconds` (reading the sources for the manifest, or in
    restic: a 64 GiB sparse file keeps either busy far longer than the test waits). Signalling only after a
    moment also keeps clear of restic's start-up, where a SIGINT between creating its lock file and registering
    its clean-up would leave the file behind for the next run's `unlock`."""
    with open_catalog(inst.config().catalog_path) as catalog:
        runs = [r for r in run_rows.list_runs(catalog, job) if r["status"] == "running"]
    started = [datetime.fromisoformat(r["started"]) for r in runs]
    return any((datetime.now(UTC) - s).total_seconds() > seconds for s in started)


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_sighup_with_broken_job_file_keeps_old_schedule(installation, start_daemon, wait_for) -> None:
    inst = installation
    port = free_port()
    inst.add_settings(f'[scheduler]\nmetrics_listen = "127.0.0.1:{port}"')
    inst.write_job("pacs", 'sources = ["archive"]\nschedule = "0 3 * * *"\n')
    daemon = start_daemon(inst)
    second = inst.cli("scheduler", "run", timeout=60)  # two daemons would run every job twice
    assert second.returncode == 1 and f"a scheduler already runs for this configuration (pid {daemon.proc.pid})" \
        in second.stderr
    before = schedule_list(inst)["backup:pacs"]["next_run"]
    served = scrape(port)  # the loopback endpoint serves the daemon's own figures too
    assert served[("backupctl_scheduler_up", ())] == 1 and served[("backupctl_scheduler_config_ok", ())] == 1
    assert served[("backupctl_schedule_next_run_timestamp_seconds", (("schedule", "backup:pacs"),))] == \
        datetime.fromisoformat(before).timestamp()

    inst.write_job("pacs", 'sources = ["archive"]\nschedule = "0 4 * * *"\n')
    inst.write_job("bad", 'sources = ["archive"]\nschedule = "61 * * * *"\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.logged("reload refused"), 30, "the reload to be refused")
    assert any("bad.toml" in e["msg"] and e["level"] == "error" for e in daemon.events())
    assert inst.cli("schedule", "list").returncode == 2  # the CLI refuses the broken config too
    os.remove(inst.root / "jobs" / "bad.toml")
    after_refusal = schedule_list(inst)["backup:pacs"]
    assert after_refusal["next_run"] == before and after_refusal["next_run_source"] == "daemon"
    assert datetime.fromisoformat(before).hour == 3

    # status and metrics show the refusal (status reads the daemon's state file)
    inst.write_job("bad", 'sources = ["archive"]\nschedule = "61 * * * *"\n')  # still broken on disk
    state = json.loads((inst.root / "var" / "scheduler-state.json").read_text())
    assert "bad.toml" in state["reload_error"]
    samples = metric_samples(inst.root / "var/metrics/backupctl.prom")
    assert samples[("backupctl_scheduler_config_ok", ())] == 0
    assert scrape(port)[("backupctl_scheduler_config_ok", ())] == 0

    # fixed: the next SIGHUP adopts the change
    os.remove(inst.root / "jobs" / "bad.toml")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.logged("configuration reloaded"), 30, "the reload to be accepted")
    now = schedule_list(inst)["backup:pacs"]
    assert datetime.fromisoformat(now["next_run"]).hour == 4
    assert metric_samples(inst.root / "var/metrics/backupctl.prom")[("backupctl_scheduler_config_ok", ())] == 1
    status = json.loads(inst.cli("status", "--json").stdout)
    assert status["daemon"]["running"] and status["daemon"]["reload_error"] is None
    assert daemon.stop() == 0


def test_sigterm_interrupts_a_running_backup_cleanly_after_the_grace_time(installation, receiver,
                                                                          start_daemon, wait_for) -> None:
    inst = installation
    big = inst.root / "big"
    big.mkdir()
    with open(big / "sparse.img", "wb") as fh:
        fh.truncate(64 << 30)  # 64 GiB of holes: restic reads it for far longer than the test waits
    inst.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    inst.add_settings('[scheduler]\nstop_grace_seconds = 1\n\n[notify]\nwebhook_url_file = "secrets/hook"')
    inst.write_job("slow", 'sources = ["big"]\nschedule = "*/2 * * * * *"\n')
    daemon = start_daemon(inst)

    locks = inst.config().staging_repository / "locks"
    wait_for(lambda: backup_running_for(inst, "slow", 1.5), 60, "the backup to be under way")
    assert daemon.stop(timeout=120) == 0
    assert daemon.logged("interrupting 1 running job")

    with open_catalog(inst.config().catalog_path) as catalog:
        runs = run_rows.list_runs(catalog, "slow")
        snapshots = snapshot_rows.list_snapshots(catalog, "slow")
    assert [r["status"] for r in runs] == ["interrupted"]
    assert snapshots == []  # nothing half-written is recorded as success
    assert finished(inst, "backup:slow")[0]["status"] == "interrupted"
    assert staging_restic(inst.config()).snapshots() == []
    assert not any(locks.iterdir())  # no restic lock left behind
    [hook] = [r.json() for r in receiver.matching("/hook/")]
    assert hook["event"] == "failure" and hook["status"] == "interrupted"


def test_run_missed_beyond_the_grace_time_is_recorded_and_notified_not_run(installation, receiver, start_daemon,
                                                                          wait_for) -> None:
    inst = installation
    inst.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    inst.add_settings('[scheduler]\nmisfire_grace_seconds = 1\n\n[notify]\nwebhook_url_file = "secrets/hook"')
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
    inst.write_job("pacs", f'sources = ["archive"]\nschedule = "{due.second} * * * * *"\n')
    daemon = start_daemon(inst)
    daemon.kill()
    wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=3), 60, "the run time to pass, plus the grace")

    restarted = start_daemon(inst)
    [missed] = wait_for(lambda: finished(inst, "backup:pacs"), 60, "the missed run to be recorded")
    assert missed["status"] == "missed" and missed["scheduled_for"].startswith(due.isoformat()[:19])
    hook = wait_for(lambda: receiver.matching("/hook/"), 30, "the failure webhook")[0].json()
    assert hook["status"] == "missed" and hook["event"] == "failure"
    assert restarted.logged("more than misfire_grace_seconds")
    assert datetime.fromisoformat(schedule_list(inst)["backup:pacs"]["next_run"]) == due + timedelta(minutes=1)
    assert restarted.stop() == 0
    with open_catalog(inst.config().catalog_path) as catalog:
        assert run_rows.list_runs(catalog, "pacs") == []  # not run


def test_job_process_stops_cleanly_when_the_daemon_is_killed(installation, start_daemon, wait_for) -> None:
    inst = installation
    big = inst.root / "big"
    big.mkdir()
    with open(big / "sparse.img", "wb") as fh:
        fh.truncate(64 << 30)
    inst.add_settings("[scheduler]\nstop_grace_seconds = 0")
    inst.write_job("slow", 'sources = ["big"]\nschedule = "*/2 * * * * *"\n')
    daemon = start_daemon(inst)
    locks = inst.config().staging_repository / "locks"

    def run_status() -> str | None:
        with open_catalog(inst.config().catalog_path) as catalog:
            runs = run_rows.list_runs(catalog, "slow")
        return runs[0]["status"] if runs else None

    wait_for(lambda: backup_running_for(inst, "slow", 1.5), 60, "the backup to be under way")
    daemon.kill()  # SIGKILL: the daemon cannot stop anything itself
    wait_for(lambda: run_status() == "interrupted", 60, "the orphaned job process to stop and record it")
    wait_for(lambda: not any(locks.iterdir()), 30, "restic to remove its lock")
    assert staging_restic(inst.config()).snapshots() == []

    [child] = [e["child_pid"] for e in executions(inst, "backup:slow") if e["status"] == "running"]
    wait_for(lambda: process_gone(child), 30, "the job process to exit")
    restarted = start_daemon(inst)  # its start marks the dead daemon's execution as failed
    rows = [e for e in executions(inst, "backup:slow")
            if e["daemon_pid"] == daemon.proc.pid and e["status"] != "skipped"]
    assert [r["status"] for r in rows] == ["failed"] and "killed" in rows[0]["error"]
    assert restarted.stop(timeout=120) == 0
