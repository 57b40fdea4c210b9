"""`backupctl scheduler run`: the foreground daemon (systemd Type=simple; example unit in examples/).

Policy, in one place:

* Schedules come from jobs/*.toml (`schedule`, `timezone`: the chain backup -> replicate -> verify) and
  restore_drills/*.toml (drills). They live in a persistent SQLAlchemy job store (SQLite under the state
  folder), so a restart keeps each schedule's next run time.
* Missed runs (daemon down, host asleep): coalesced to ONE run, started at once, if the latest missed time
  is less than `[scheduler] misfire_grace_seconds` ago (default 6 h); older ones are recorded as `missed` and
  notified as failures, and the schedule continues at its next time. One run per job at a time
  (max_instances=1): a run due while the previous one still runs is recorded as `skipped`.
* Scheduled runs queue for the repository lock up to `[scheduler] lock_wait_seconds` (a manual run in
  progress delays them instead of failing them).
* SIGHUP re-reads the configuration. An invalid one is refused: the old schedule stays, the error is logged,
  shown by `status` and exported as backupctl_scheduler_config_ok 0.
* SIGTERM / SIGINT: no new runs; running ones may finish for `stop_grace_seconds`; then they get SIGTERM,
  which stops restic cleanly and records them as interrupted. A second signal skips the grace time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor as SideTasks
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from backupctl import process
from backupctl.catalog import open_catalog
from backupctl.catalog import scheduler as sched_rows
from backupctl.catalog.db import utcnow
from backupctl.config import Config, collect_config, load_config
from backupctl.errors import BackupctlError
from backupctl.logs import log_context
from backupctl.metrics import CatalogCollector, render, scheduler_metrics, serve, textfile_path, write_textfile
from backupctl.notify import Notice, Notifier
from backupctl.process import Child
from backupctl.restic import STOP_GRACE_SECONDS
from backupctl.scheduler import runner, state
from backupctl.scheduler.kinds import schedule_id, split_schedule_id
from backupctl.scheduler.triggers import cron_trigger

log = logging.getLogger("backupctl.scheduler")
HEARTBEAT_SECONDS = 60.0
JOB_FUNC = "backupctl.scheduler.runner:run_scheduled_job"


def wanted_schedules(config: Config) -> dict[str, tuple[str, str, str, str]]:
    """schedule id -> (kind, name, cron, timezone) for every job and drill that has a schedule, and the
    drill report's."""
    wanted = {schedule_id("backup", n): ("backup", n, j.schedule, j.timezone)
              for n, j in config.jobs.items() if j.schedule}
    wanted.update({schedule_id("drill", n): ("drill", n, d.schedule, d.timezone)
                   for n, d in config.drills.items() if d.schedule})
    report = config.settings.report
    if report.schedule:   # the drill report, mailed to [report] email_to
        wanted[schedule_id("report", "drills")] = ("report", "drills", report.schedule, report.timezone)
    return wanted  # type: ignore[return-value]


def sync_schedules(scheduler: BackgroundScheduler, config: Config, config_path: str) -> dict[str, list[str]]:
    """Make the job store match the configuration. An unchanged schedule is left alone, so its stored next run
    time (possibly in the past: a missed run to catch up) survives restarts; a changed one is rescheduled from
    now; a removed one is dropped."""
    grace = int(config.settings.scheduler.misfire_grace_seconds)
    existing = {job.id: job for job in scheduler.get_jobs()}
    changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "kept": []}
    wanted = wanted_schedules(config)
    for job_id in sorted(set(existing) - set(wanted)):
        scheduler.remove_job(job_id)
        changes["removed"].append(job_id)
    for job_id, (kind, name, cron, tz) in sorted(wanted.items()):
        trigger = cron_trigger(cron, tz)
        args = [config_path, kind, name]
        job = existing.get(job_id)
        if job is None:
            scheduler.add_job(JOB_FUNC, trigger, args=args, id=job_id, name=job_id, replace_existing=True,
                              coalesce=True, max_instances=1, misfire_grace_time=grace)
            changes["added"].append(job_id)
        elif repr(job.trigger) != repr(trigger) or list(job.args) != args:
            scheduler.modify_job(job_id, args=args, misfire_grace_time=grace, coalesce=True, max_instances=1)
            scheduler.reschedule_job(job_id, trigger=trigger)
            changes["changed"].append(job_id)
        else:
            if job.misfire_grace_time != grace:
                scheduler.modify_job(job_id, misfire_grace_time=grace)
            changes["kept"].append(job_id)
    return changes


def report_missed(scheduler: BackgroundScheduler, grace: float) -> None:
    """At start, say what the catch-up policy will do with runs that came due while the daemon was down."""
    now = datetime.now(UTC)
    for job in scheduler.get_jobs():
        if job.next_run_time is None or job.next_run_time > now:
            continue
        missed = job._get_run_times(now)  # what APScheduler itself will coalesce
        if not missed:
            continue
        with log_context(schedule=job.id):
            late = (now - missed[-1]).total_seconds()
            if late <= grace:
                log.warning("%s: %d run time(s) missed while the scheduler was down (first due %s); running once "
                            "now (late; missed runs are coalesced)", job.id, len(missed),
                            missed[0].isoformat(timespec="seconds"))
            else:
                log.warning("%s: %d run time(s) missed while the scheduler was down, the latest %.0f s ago, more "
                            "than misfire_grace_seconds (%.0f s): not run now, recorded as missed", job.id,
                            len(missed), late, grace)


class Daemon:
    def __init__(self, config_path: Path, log_format: str | None = None) -> None:
        self.config_path = str(config_path.absolute())
        self.config = load_config(Path(self.config_path))  # invalid at start: refuse (exit 2), nothing runs
        self.log_format = log_format or self.config.settings.scheduler.log_format
        self.stop_event = threading.Event()     # stop requested (SIGTERM/SIGINT); runners read it
        self.hurry = False                      # second stop signal: skip the grace time
        self.wakeup = Wakeup()
        self.reload_error: str | None = None
        self.last_reload: str | None = None
        self.started = utcnow()
        self._children: dict[int, Child] = {}
        self._active = 0                        # executions in progress (child running or notifying)
        self._next_runs: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._side = SideTasks(max_workers=2, thread_name_prefix="backupctl-side")
        self._metrics_server: Any = None
        self.scheduler: BackgroundScheduler | None = None

    # runner.Host ---------------------------------------------------------------------------------------------

    def spawn(self, argv: list[str], env: dict[str, str]) -> Child | None:
        with self._lock:
            if self.stop_event.is_set():
                return None
            # own session: a Ctrl-C at the daemon's terminal must reach the daemon only, which then decides.
            # If the daemon dies, the job gets SIGTERM, as from a stopping daemon: restic is stopped cleanly
            # and the run recorded as interrupted, rather than a job running on outside the service's control
            proc = process.start(argv, env={**os.environ, **env}, stdout=process.PIPE, stderr=None,
                                 on_parent_death=signal.SIGTERM)   # its log lines go where the daemon's go
            self._children[proc.pid] = proc
        return proc

    def forget_child(self, proc: Child) -> None:
        with self._lock:
            self._children.pop(proc.pid, None)
        self.wakeup.notify()

    def execution_started(self, schedule: str) -> None:
        with self._lock:
            self._active += 1

    def execution_finished(self, schedule: str) -> None:
        with self._lock:
            self._active -= 1
        self.write_outputs()
        self.wakeup.notify()

    # lifecycle -----------------------------------------------------------------------------------------------

    def run(self) -> int:
        state_dir = self.config.state_dir
        with state.daemon_lock(state_dir):
            self._recover()
            self.scheduler = self._make_scheduler()
            self.scheduler.start(paused=True)
            changes = sync_schedules(self.scheduler, self.config, self.config_path)
            report_missed(self.scheduler, self.config.settings.scheduler.misfire_grace_seconds)
            runner.set_host(self)
            self._install_signals()
            self._start_metrics_server()
            self.scheduler.resume()  # due and missed runs are handled from here, per the policy
            log.info("scheduler started (pid %d): %d schedule(s), %s", os.getpid(),
                     len(self.scheduler.get_jobs()), self._describe_changes(changes))
            self.write_outputs()
            try:
                self._loop()
            finally:
                self._stop()
                runner.set_host(None)
                self.wakeup.uninstall()
        return 0

    def _recover(self) -> None:
        # opening the catalog marks the runs of dead processes interrupted (catalog.db); the executions of a
        # dead daemon are this daemon's to close
        with open_catalog(self.config.catalog_path) as catalog:
            executions = sched_rows.mark_abandoned_executions(catalog)
        if executions:
            log.warning("marked %d scheduled execution(s) of a previous, killed scheduler as failed",
                        len(executions))
        for execution in executions:   # its daemon died before it could say so: say it now, off the start path
            self._side.submit(self._alert_abandoned, execution)

    def _alert_abandoned(self, row: dict[str, Any]) -> None:
        kind, name = row["kind"], row["name"]
        with log_context(schedule=row["schedule_id"], execution=row["execution"]):
            try:
                notifier = Notifier.for_schedule(self.config, kind, name, self.stop_event)
            except BackupctlError as exc:   # the job or drill may be gone from the config since
                log.error("cannot notify the abandoned execution: %s", exc.one_line())
                return
            notifier.send(Notice(event="failure", kind=kind, name=name, execution=row["execution"],
                                 status=row["status"], started=row["started"], finished=row["finished"],
                                 error=row["error"]))

    def _make_scheduler(self) -> BackgroundScheduler:
        cfg = self.config.settings.scheduler
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=state.store_url(self.config.state_dir))},
            executors={"default": ThreadPoolExecutor(max_workers=cfg.max_parallel_jobs)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": int(cfg.misfire_grace_seconds)},
            timezone=UTC,
        )
        scheduler.add_listener(self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
                               | EVENT_JOB_SUBMITTED)
        return scheduler

    def _install_signals(self) -> None:
        self.wakeup.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))

    def _handle(self, signums: list[int]) -> None:
        for signum in signums:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.stop_event.is_set():
                    self.hurry = True
                    log.warning("second stop signal: not waiting for running jobs any longer")
                else:
                    log.info("%s received: stopping", signal.Signals(signum).name)
                self.stop_event.set()
            elif signum == signal.SIGHUP and not self.stop_event.is_set():
                log.info("SIGHUP received: reloading the configuration")
                self.reload()

    def _loop(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while not self.stop_event.is_set():
            self._handle(self.wakeup.wait(next_beat - time.monotonic()))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
                self.write_outputs()

    def reload(self) -> bool:
        """SIGHUP: adopt a valid configuration; refuse an invalid one and keep the running schedule."""
        assert self.scheduler is not None
        self.last_reload = utcnow()
        try:
            config, errors = collect_config(Path(self.config_path))
        except BackupctlError as exc:
            config, errors = None, [exc.one_line()]
        if errors or config is None:
            self.reload_error = errors[0] if errors else "invalid configuration"
            for line in errors:
                log.error("reload refused, the previous schedule stays: %s", line)
            self.write_outputs()
            return False
        if config.state_dir != self.config.state_dir:
            log.warning("reload: [paths] state changed; it takes effect at the next restart")
        changes = sync_schedules(self.scheduler, config, self.config_path)
        self.config, self.reload_error = config, None
        log.info("configuration reloaded: %s", self._describe_changes(changes))
        self.write_outputs()
        return True

    def _stop(self) -> None:
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running:
            scheduler.pause()  # nothing new starts
        running = self._running_children()
        grace = self.config.settings.scheduler.stop_grace_seconds
        if running:
            log.info("stopping: %d job(s) running; waiting up to %.0f s for them to finish", len(running), grace)
            self._wait_children(time.monotonic() + grace, interruptible=True)
        running = self._running_children()
        if running:
            log.warning("stopping: interrupting %d running job(s); restic is stopped cleanly and the runs are "
                        "recorded as interrupted", len(running))
            for proc in running:
                _signal(proc, signal.SIGTERM)
            self._wait_children(time.monotonic() + STOP_GRACE_SECONDS + 15, interruptible=False)
            for proc in self._running_children():
                log.error("job process %d did not stop; killing it", proc.pid)
                _signal(proc, signal.SIGKILL)
        # APScheduler's shutdown holds its job store lock while it joins the workers, so the executions must
        # be over (records written, notifications sent) before it is called
        deadline = time.monotonic() + 120
        while self._active_executions() and time.monotonic() < deadline:
            self._handle(self.wakeup.wait(min(1.0, deadline - time.monotonic())))
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=not self._active_executions())
        self._side.shutdown(wait=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.write_outputs(up=False)
        log.info("scheduler stopped")

    def _active_executions(self) -> int:
        with self._lock:
            return self._active

    def _running_children(self) -> list[Child]:
        with self._lock:
            return [p for p in self._children.values() if p.poll() is None]

    def _wait_children(self, deadline: float, interruptible: bool) -> None:
        while self._running_children() and time.monotonic() < deadline:
            if interruptible and self.hurry:
                return
            # a job process ending writes to the wake-up pipe; the 1 s cap also catches one that ended
            # between the check above and this wait
            self._handle(self.wakeup.wait(min(1.0, deadline - time.monotonic())))

    # events from APScheduler (its thread: keep them short, push slow work to side tasks) ---------------------

    def _on_event(self, event: JobEvent) -> None:
        kind, name = split_schedule_id(event.job_id)
        when = getattr(event, "scheduled_run_time", None) or (
            event.scheduled_run_times[-1] if isinstance(event, JobSubmissionEvent) else None)
        with log_context(schedule=event.job_id):
            if event.code == EVENT_JOB_SUBMITTED:
                late = (datetime.now(UTC) - when).total_seconds() if when else 0
                if late > 60:  # e.g. every worker was busy, or the host was suspended
                    log.warning("%s: starting the run due at %s %.0f s late", event.job_id,
                                when.isoformat(timespec="seconds"), late)
                return
            if event.code == EVENT_JOB_MISSED:
                msg = (f"run due at {when.isoformat(timespec='seconds')} was missed by more than "
                       f"misfire_grace_seconds ({self.config.settings.scheduler.misfire_grace_seconds:.0f} s); "
                       "it was not run, the schedule continues")
                self._side.submit(self._record_not_run, kind, name, "missed", when, msg)
            elif event.code == EVENT_JOB_MAX_INSTANCES:
                msg = "the previous run was still running; this run was skipped"
                self._side.submit(self._record_not_run, kind, name, "skipped", when, msg)
            elif event.code == EVENT_JOB_ERROR:
                log.error("%s: internal error in the scheduler: %r", event.job_id, event.exception)

    def _record_not_run(self, kind: str, name: str, status: str, when: datetime | None, msg: str) -> None:
        execution = f"{status}-{int(time.time())}"
        with log_context(schedule=schedule_id(kind, name), execution=execution):
            log.warning("%s: %s", schedule_id(kind, name), msg)
            with open_catalog(self.config.catalog_path) as catalog:
                sched_rows.record_not_run(catalog, schedule_id=schedule_id(kind, name), kind=kind, name=name,
                                          execution=execution, status=status,
                                          scheduled_for=when.isoformat() if when else None, error=msg)
            if status == "missed":
                try:
                    notifier = Notifier.for_schedule(self.config, kind, name, self.stop_event)
                    notifier.send(Notice(event="failure", kind=kind, name=name, execution=execution,
                                         status="missed", started=utcnow(), finished=utcnow(), error=msg))
                except BackupctlError as exc:
                    log.error("cannot notify the missed run: %s", exc.one_line())
        self.write_outputs()

    # outputs: state file, metrics ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        if self.scheduler is not None and not self.stop_event.is_set():
            self._next_runs = {job.id: job.next_run_time.timestamp() if job.next_run_time else None
                               for job in self.scheduler.get_jobs()}
        next_runs = self._next_runs  # while stopping, the last known ones: the scheduler may be locked
        return {"pid": os.getpid(), "started": self.started, "config": self.config_path,
                "reload_error": self.reload_error, "last_reload": self.last_reload, "next_runs": next_runs,
                "log_format": self.log_format, "metrics_listen": self.config.settings.scheduler.metrics_listen}

    def write_outputs(self, up: bool = True) -> None:
        """State file for `status`, metrics textfile for node_exporter. Failures are logged, never fatal."""
        info = self.info()
        try:
            state.write_state(self.config.state_dir, {**info, "running": up, "updated": utcnow()})
            path = textfile_path(self.config)
            if path is not None:
                extra = scheduler_metrics(info) if up else []
                write_textfile(path, render(self.config, extra))
        except (OSError, BackupctlError) as exc:
            log.error("cannot write the state or metrics file: %s", exc)

    def _start_metrics_server(self) -> None:
        listen = self.config.settings.scheduler.metrics_listen
        if not listen:
            return
        collector = CatalogCollector(lambda: self.config, lambda: scheduler_metrics(self.info()))
        try:
            self._metrics_server = serve(listen, collector)
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s (the textfile is still written)", listen, exc)
            return
        log.info("serving metrics on http://%s/metrics", listen)

    @staticmethod
    def _describe_changes(changes: dict[str, list[str]]) -> str:
        parts = [f"{k} {', '.join(v)}" for k, v in changes.items() if v and k != "kept"]
        return "; ".join(parts) or "schedules unchanged"


def _signal(proc: Child, signum: int) -> None:
    proc.send(signum)


class Wakeup:
    """The main thread's one wake-up channel: a pipe that receives signal numbers (set_wakeup_fd, written by
    the interpreter's C handler, so no Python lock is ever taken inside a signal handler) and a 0 byte when
    a job process ends."""

    CHILD = 0

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def install(self, signums: tuple[int, ...]) -> None:
        for signum in signums:
            signal.signal(signum, lambda *_: None)  # the number arrives through the pipe
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def uninstall(self) -> None:
        signal.set_wakeup_fd(-1)

    def notify(self, value: int = CHILD) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.write_fd, bytes([value]))

    def wait(self, timeout: float) -> list[int]:
        """Up to `timeout` seconds for something to happen; the signal numbers (and 0s) that arrived."""
        ready, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            return list(os.read(self.read_fd, 512))
        except BlockingIOError:
            return []
