"""One lock per repository across processes (fcntl.flock on a file under the state folder).

A manual `backupctl backup run` and the scheduler never run restic on the same repository at once: the
second waits up to `wait_seconds`, then refuses with a clear message. flock is released by the kernel when
the last descriptor of it is closed, so a killed process never leaves this lock stale, provided no child
keeps a copy: exec'd children get none (Python opens descriptors close-on-exec) and forked workers close it
(`process.parent_only`). The file names its holder while held and is emptied on release: a holder named
at acquisition died holding it, and the new holder says so in the log.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupctl.errors import LockBusy
from backupctl.process import parent_only

POLL_SECONDS = 0.2
log = logging.getLogger("backupctl.locking")


def _holder_text() -> str:
    """What the lock file says about its holder: pid, since when, which command (argv holds no secrets)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join(["backupctl", *sys.argv[1:]])[:200] if sys.argv else "backupctl"
    return f"pid {os.getpid()} since {since}: {command}"


def lock_path(state_dir: Path, repository: str) -> Path:
    digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
    return state_dir / "locks" / f"repo-{digest}.lock"


@contextmanager
def repository_lock(state_dir: Path, repository: str, wait_seconds: float = 0.0) -> Iterator[None]:
    path = lock_path(state_dir, repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    with parent_only(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)     # a lock file made by an older backupctl: it names commands and pids
            _acquire(fd, repository, wait_seconds)
            previous = os.pread(fd, 512, 0).decode(errors="replace").strip()
            if previous:      # emptied by every holder that released it: this one died holding it
                pid, _, rest = previous.removeprefix("pid ").partition(" ")
                log.warning("took over the lock of dead pid %s (command %s) on repository %s", pid,
                            rest.partition(": ")[2] or "?", repository)
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_text().encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _acquire(fd: int, repository: str, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            if time.monotonic() >= deadline:
                raise LockBusy(f"repository {repository} is in use by backupctl ({holder})",
                               hint="wait for that run to finish, or set [staging] lock_wait_seconds") from None
            if not waiting:
                waiting = True
                log.info("repository %s is in use (%s); waiting up to %.0f s", repository, holder, wait_seconds)
            time.sleep(POLL_SECONDS)  # waiting for another process: flock has no timeout of its own
    if waiting:
        log.info("repository lock acquired")
