"""One scheduled execution, as the daemon runs it: notify start, run the chain in a child process, record,
notify the outcome, refresh the metrics.

`run_scheduled_job(config_path, kind, name)` is what the persistent job store pickles: a top-level function
with plain arguments. The work runs in a child `backupctl scheduler exec KIND NAME` process so that stopping
is the CLI's own tested path: SIGTERM to the child stops restic with SIGINT (which removes restic's lock) and
records the run as interrupted. The child gets that SIGTERM from the kernel too if the daemon dies. The
daemon keeps the notification secrets; the child never sees them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from backupctl.catalog import open_catalog
from backupctl.catalog import scheduler as sched_rows
from backupctl.catalog.db import utcnow
from backupctl.config import Config
from backupctl.errors import BackupctlError
from backupctl.logs import child_env, log_context
from backupctl.notify import Notice, Notifier, event_of
from backupctl.process import Child
from backupctl.scheduler.kinds import EXIT_CODES, schedule_id

log = logging.getLogger("backupctl.scheduler")
STATUS_OF_EXIT = {code: status for status, code in EXIT_CODES.items() if status != "skipped"}


class Host(Protocol):
    """What an execution needs from the daemon that runs it."""

    config: Config
    config_path: str
    log_format: str
    stop_event: threading.Event

    def spawn(self, argv: list[str], env: dict[str, str]) -> Child | None: ...

    def forget_child(self, proc: Child) -> None: ...

    def execution_started(self, schedule: str) -> None: ...

    def execution_finished(self, schedule: str) -> None: ...


_host: Host | None = None


def set_host(host: Host | None) -> None:
    global _host
    _host = host


def run_scheduled_job(config_path: str, kind: str, name: str) -> str:
    """The job function APScheduler stores and calls. Returns the execution's final status."""
    if _host is None:
        raise RuntimeError("run_scheduled_job runs inside `backupctl scheduler run` only")
    return Execution(_host, kind, name).run()


@dataclass
class ChildOutcome:
    status: str
    error: str | None
    steps: list[dict[str, Any]]
    pid: int | None
    figures: dict[str, Any]


class Execution:
    def __init__(self, host: Host, kind: str, name: str) -> None:
        self.host, self.kind, self.name = host, kind, name
        self.config = host.config           # the config as of the last good (re)load
        self.schedule = schedule_id(kind, name)
        self.execution = uuid.uuid4().hex[:16]

    def run(self) -> str:
        fields = {"job" if self.kind == "backup" else "drill": self.name}
        self.host.execution_started(self.schedule)
        try:
            with log_context(schedule=self.schedule, execution=self.execution, **fields):
                return self._run()
        finally:
            self.host.execution_finished(self.schedule)

    def _run(self) -> str:
        notifier = self._notifier()
        started_mono, started = time.monotonic(), utcnow()
        with open_catalog(self.config.catalog_path) as catalog:
            row = sched_rows.start_execution(catalog, schedule_id=self.schedule, kind=self.kind, name=self.name,
                                             execution=self.execution)
        log.info("%s %s: starting", self.kind, self.name)
        if notifier:
            notifier.send(self._notice("start", "running", started))
        outcome = self._run_child(row)
        if restarted := self._start_a_pacs_left_stopped():
            outcome.error = f"{outcome.error}; {restarted}" if outcome.error else restarted
        seconds = time.monotonic() - started_mono
        with open_catalog(self.config.catalog_path) as catalog:
            rows = sched_rows.runs_of_process(catalog, outcome.pid, started) if outcome.pid else []
            run_ids = [r["id"] for r in rows]
            sched_rows.finish_execution(catalog, row, outcome.status, run_ids=run_ids, steps=outcome.steps,
                                        error=outcome.error, seconds=seconds)
        level = logging.INFO if outcome.status == "success" else logging.ERROR
        log.log(level, "%s %s: %s in %.1f s%s", self.kind, self.name, outcome.status, seconds,
                f": {outcome.error}" if outcome.error else "", extra={"run_ids": run_ids, "status": outcome.status})
        self._audit(outcome, run_ids, seconds)
        if notifier:
            notice = self._notice(event_of(outcome.status), outcome.status, started, seconds=seconds,
                                  error=outcome.error, run_ids=run_ids, steps=outcome.steps, figures=outcome.figures)
            notifier.send(notice)
        return outcome.status

    def _audit(self, outcome: ChildOutcome, run_ids: list[int], seconds: float) -> None:
        """The daemon's own record of the execution (the child recorded its command at the CLI edge)."""
        import backupctl.audit as audit

        result = {"success": "ok", "partial": "partial", "interrupted": "interrupted"}.get(outcome.status, "failed")
        audit.record(self.config, f"scheduled {self.kind}", result, actor=None,
                     details={"execution": self.execution, "status": outcome.status, "run_ids": run_ids,
                              "seconds": round(seconds, 1), "child_pid": outcome.pid},
                     **{"job" if self.kind == "backup" else "drill": self.name})
        audit.seal(self.config)

    def _start_a_pacs_left_stopped(self) -> str | None:
        """A job process that dies while its Orthanc is stopped for the copy (killed, out of memory) cannot
        start it again: the daemon does, now, rather than leave the PACS down until the job's next run. A
        no-op unless that process had stopped it (the flag `restart_if_left_stopped` reads)."""
        if self.kind != "backup":
            return None
        from backupctl.pacs.source import resolve_orthanc, restart_if_left_stopped

        try:
            job = self.config.job(self.name)
            if job.orthanc is None:
                return None
            return restart_if_left_stopped(resolve_orthanc(self.config, job))
        except BackupctlError as exc:
            log.error("%s %s: Orthanc was left stopped and could not be started: %s", self.kind, self.name,
                      exc.one_line())
            return f"Orthanc was left stopped and could not be started: {exc.one_line()}"

    def _notifier(self) -> Notifier | None:
        try:
            return Notifier.for_schedule(self.config, self.kind, self.name, self.host.stop_event)
        except BackupctlError as exc:
            # a broken notification secret must not stop the backup itself; it is loud in the log
            log.error("%s %s: notifications disabled for this run: %s", self.kind, self.name, exc.one_line())
            return None

    def _notice(self, event: str, status: str, started: str, **more: Any) -> Notice:
        return Notice(event=event, kind=self.kind, name=self.name, execution=self.execution, status=status,
                      started=started, finished=None if event == "start" else utcnow(), **more)

    def _run_child(self, row: int) -> ChildOutcome:
        argv = [sys.executable, "-m", "backupctl", "--config", self.host.config_path, "scheduler", "exec",
                self.kind, self.name]
        env = child_env(self.host.log_format)
        proc = self.host.spawn(argv, env)
        if proc is None:
            return ChildOutcome("interrupted", "the scheduler was stopping; not started", [], None, {})
        try:
            with open_catalog(self.config.catalog_path) as catalog:
                sched_rows.set_child(catalog, row, proc.pid)
            stdout, _ = proc.communicate()
        finally:
            self.host.forget_child(proc)
        return parse_child_output(proc.returncode, stdout, proc.pid)


def parse_child_output(returncode: int, stdout: str, pid: int) -> ChildOutcome:
    """The child prints one JSON object (its ChainResult); without one, the exit code tells what happened."""
    data: Any = None
    for text in (stdout, *reversed(stdout.strip().splitlines()[-1:])):
        try:
            data = json.loads(text)
            break
        except json.JSONDecodeError:
            continue
    if isinstance(data, dict) and data.get("status") in EXIT_CODES:
        figures = next((s.get("figures", {}) for s in data.get("steps", []) if s.get("step") == "backup"), {})
        return ChildOutcome(data["status"], data.get("error"), data.get("steps", []), pid, figures)
    if returncode < 0:
        status, error = "failed", f"the job process was killed by signal {-returncode}"
    else:
        status = STATUS_OF_EXIT.get(returncode, "failed")
        error = f"the job process exited with code {returncode}"
    if status == "interrupted":
        error = "stopped by a signal"
    return ChildOutcome(status, error, [], pid, {})
