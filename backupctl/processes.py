"""Is a process still there? One answer for the catalog, the scheduler, drills and the PACS controller."""

from __future__ import annotations

import os
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
