"""One small progress interface for every long loop: a rich bar on a terminal, log lines in the daemon.

Usage::

    with progress.task("upload", total=n_bytes, unit="B") as task:
        task.advance(len(chunk))
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

log = logging.getLogger("backupctl.progress")


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, *, completed: float | None = None, total: float | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        pass


class NullProgress:
    """For tests and --json runs: progress goes nowhere."""

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        yield _NullTask()


class _LogTask:
    def __init__(self, description: str, total: float | None, unit: str, every: float) -> None:
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.completed = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, amount: float = 1) -> None:
        with self._lock:
            self.completed += amount
        self._maybe_log()

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self._maybe_log()

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            of = f"/{self.total:.0f}" if self.total else ""
            log.info("%s: %.0f%s %s", self.description, self.completed, of, self.unit)


class LogProgress:
    """For the scheduler daemon: a log line at most every `every` seconds per task."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        yield _LogTask(description, total, unit, self.every)


class _RichTask:
    def __init__(self, bar, task_id) -> None:  # noqa: ANN001 - rich types kept private
        self._bar, self._id = bar, task_id

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._id, amount)

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        kwargs = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._bar.update(self._id, **kwargs)


class RichProgress:
    """For an operator at a terminal: rich bars on stderr, so stdout stays clean for --json."""

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as RichBar,
        )

        amount = (DownloadColumn(), TransferSpeedColumn()) if unit == "B" else (MofNCompleteColumn(),)
        eta = (TimeRemainingColumn(),) if total else ()   # an ETA only where the total is known
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), *amount,
                   TimeElapsedColumn(), *eta)
        with RichBar(*columns, console=Console(stderr=True), transient=True) as bar:
            yield _RichTask(bar, bar.add_task(description, total=total))


def _written_bytes(root: Path) -> int:
    # at most the allocated blocks: restic may size a file before its content arrives
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += min(st.st_size, st.st_blocks * 512)
    return total


@contextmanager
def watched(progress: Progress, description: str, root: Path, total: int | None) -> Iterator[None]:
    """A byte bar (percent and ETA when `total` is known) over a restore restic reports nothing of (0.14
    prints no restore progress): the bytes landed under `root`, looked at twice a second."""
    if isinstance(progress, NullProgress):   # nobody looks: no walking the tree twice a second
        yield
        return
    stop = threading.Event()
    with progress.task(description, total=total, unit="B") as task:
        def poll() -> None:
            while not stop.wait(0.5):
                task.update(completed=min(_written_bytes(root), total or 1 << 62))

        watcher = threading.Thread(target=poll, name="restore-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
        task.update(completed=_written_bytes(root) if total is None else total)


def default_progress(quiet: bool = False) -> Progress:
    """Rich bars when stderr is a terminal and the caller did not ask for quiet; otherwise nothing."""
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return RichProgress()
