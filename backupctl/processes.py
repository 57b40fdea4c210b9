"""Is a process still there? One answer for the catalog, the scheduler, drills and the PACS controller."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    """The PID names a process we could signal (it may be a zombie: exited, not yet reaped)."""
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_zombie(pid: int) -> bool:
    """Exited but not yet reaped by its parent; a PID whose /proc entry is gone counts as exited too."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc here: trust the signal check
        return False


def pid_running(pid: int | None) -> bool:
    """Running, not merely signalable: what 'is the run / daemon / Orthanc still there' means."""
    return pid_alive(pid) and not is_zombie(pid)  # type: ignore[arg-type]


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM arriving while the workers are forked take effect just after. Python runs its
    at-fork callbacks (logging's locks) in the parent, and an exception a signal handler raises inside
    them is printed and dropped: the work would go on as if never interrupted. Use it around whatever
    forks (a process pool's first submit). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield   # handlers can only be set, and signals are only handled, in the main thread
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, _frame: caught.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])     # now the real handler raises, where it can be handled


def start_time(pid: int | None) -> int | None:
    """When the process started, in clock ticks after boot (/proc/PID/stat field 22). With the pid it names one
    process: a pid reused by a later process has a later start time. None when the process is gone."""
    if not pid:
        return None
    try:
        # the command name (field 2) may hold spaces and parentheses: count fields after its last ')'
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int | None, started: int | None) -> bool:
    """The process `pid` that started at `started` still runs (`started` None: the pid alone decides)."""
    if not pid_running(pid):
        return False
    return started is None or start_time(pid) == started
