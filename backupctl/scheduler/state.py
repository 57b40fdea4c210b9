"""Files the daemon keeps under the state folder, and what other commands read from them.

* `scheduler.pid`: flock-ed by the running daemon, so a second daemon on the same configuration refuses to
  start (two would run every job twice) and `status` can tell whether one runs. The kernel drops the lock
  when the daemon dies, so it is never stale.
* `scheduler.sqlite`: APScheduler's job store (SQLAlchemyJobStore): the schedules and their next run times,
  kept across restarts. Its own file, so APScheduler's tables stay out of the catalog's migrations.
* `scheduler-state.json`: pid, start time, config and the last reload's outcome, written atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.errors import LockBusy
from backupctl.fsutil import atomic_write_text

PID_FILE = "scheduler.pid"
STORE_FILE = "scheduler.sqlite"
STATE_FILE = "scheduler-state.json"


def store_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / STORE_FILE}"


@contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PID_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockBusy(f"a scheduler already runs for this configuration (pid {holder})",
                           hint=f"stop it first, or give this one another [paths] state than {state_dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def running_daemon(state_dir: Path) -> int | None:
    """The pid of the daemon running on this state folder, or None."""
    path = state_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    atomic_write_text(state_dir / STATE_FILE, json.dumps(data, indent=2, default=str) + "\n")


def read_state(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def stored_next_runs(state_dir: Path) -> dict[str, datetime | None]:
    """Next run time of each schedule as the persistent job store holds it (also when no daemon runs: a time
    in the past then means the run is due when the daemon starts). Empty when there is no store yet.

    Reads the id and next_run_time columns only: unpickling jobs through the store would make APScheduler
    delete any job it cannot restore, and a read-only command must not change the schedule."""
    if not (state_dir / STORE_FILE).exists():
        return {}
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    store = SQLAlchemyJobStore(url=store_url(state_dir))
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(store.jobs_t.c.id, store.jobs_t.c.next_run_time)).all()
    except SQLAlchemyError:
        return {}
    finally:
        store.engine.dispose()
    return {row.id: datetime.fromtimestamp(row.next_run_time, UTC) if row.next_run_time is not None else None
            for row in rows}
