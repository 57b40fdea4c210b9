"""Checking restored files against the signed manifest while restic is still restoring them.

restic's restore leaves part of the machine idle (its start, key derivation and index loading, runs on one
core; then it keeps about 1.8 of 2 cores busy), while the checks of a drill (SHA-256 of every file, a full
DICOM parse) cost almost as much CPU as the restore. Run one after the other, they add up; run side by side,
the checks use what restic leaves and only the files restic writes last are checked after it ends.

When is a file complete? restic 0.14 writes a file's blobs in pack order, possibly in several pieces, into a
file preallocated at its full size, so neither its size nor its being closed says so. Its bytes hashing to
the manifest's SHA-256 does (see `verify.restored.prove_early` and `still_proven` for the one case where a
partly written file could match, and how it is ruled out once restic has ended).

The schedule: a watcher thread stats the files not proven yet every SWEEP_SECONDS; a file with the
manifest's size that restic has not written to for SETTLE_SECONDS goes to the process pool (fork, started
before restic so the workers inherit nothing restic-related). A file that does not hash right yet is tried
again only after restic writes to it again (its mtime moves), so a file costs at most one wasted read per
piece restic writes, and usually none. When restic has ended: files proven early are confirmed (size, zero
regions), and every other file gets the full check with the usual rules (missing, changed during backup,
hash mismatch, ...).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.manifest import MANIFEST_DIR_NAME, Entry
from backupctl.process import signals_deferred, worker_pool
from backupctl.progress import Progress, Task
from backupctl.verify.findings import WARNING, Finding
from backupctl.verify.restored import (
    WHOLE_FILE_BYTES,
    EarlyProof,
    FileCheck,
    check_once,
    prove_early,
    restored_path,
    still_proven,
)

log = logging.getLogger("backupctl.verify")

SWEEP_SECONDS = 0.2          # how often the files not proven yet are looked at while restic restores
SETTLE_SECONDS = 0.15        # restic has not written to a file for this long: worth reading
BATCH_FILES = 16             # files per task sent to a worker
QUEUED_PER_WORKER = 2        # tasks queued per worker: enough to keep it busy, few enough to stop quickly
WORKER_NICE = 5              # restic keeps its pace; the checks use what it leaves


@dataclass
class Outcome:
    """What the checks of one restore found: a check per entry (by position in the entries given) and when
    it was obtained (on the caller's clock), plus what restic wrote."""

    checks: list[FileCheck]
    at: list[float]
    early_files: int = 0                 # proven while restic was still restoring
    early_bytes: int = 0
    restored_files: int = 0              # what restic wrote (the manifest folder too)
    restored_bytes: int = 0
    unlisted: list[Finding] = field(default_factory=list)


class AlongsideChecker:
    """Checks restored files under `root` while restic restores them: `start()` (or `with`) before restic
    starts, `provide()` the manifest's entries to check (also later), `finish()` once restic has ended,
    `close()` always.

    `parse`: run the DICOM check (on intact files only); `now`: the caller's clock.
    """

    def __init__(self, root: Path, *, parse: bool, workers: int, progress: Progress,
                 now: Callable[[], float]) -> None:
        self.root, self.parse = root, parse
        self.changed: frozenset[str] = frozenset()
        self.workers, self.now = max(1, workers), now
        self.entries: list[Entry] = []
        self.decode: set[str] = set()
        self.paths: list[str] = []
        self.proofs: dict[int, EarlyProof] = {}
        self.proven_at: dict[int, float] = {}
        self._names: list[str] = []
        self._pending: dict[str, list[int]] = {}  # folder -> files in it not proven yet
        self._tried: dict[int, int] = {}          # index -> mtime when it did not hash right yet
        self._holed: dict[int, int] = {}          # index -> mtime when the filesystem showed a hole in it
        self._ready: deque[int] = deque()
        self._inflight: dict[Future[list[EarlyProof | int]], list[int]] = {}
        self._provided = threading.Event()
        self._restic_ended = threading.Event()
        self._failure: BaseException | None = None
        self._sweeps = self._misses = 0             # for the debug log: how much early work was wasted
        self._watcher_cpu = 0.0
        self._progress = progress
        self._task: Task | None = None
        self._stack = ExitStack()
        self._pool: ProcessPoolExecutor | None = None
        self._watcher: threading.Thread | None = None

    def provide(self, entries: list[Entry], decode: set[str], changed: frozenset[str] = frozenset()) -> None:
        """The files to check (`decode`: paths whose pixel data is also decoded; `changed`: paths the backup
        saw change while it ran). Once only, from any thread: the manifest may arrive while restic already
        restores."""
        self.entries, self.decode, self.changed = entries, decode, changed
        self.paths = [str(restored_path(self.root, e.path)) for e in entries]
        self._names = [os.path.basename(p) for p in self.paths]
        # worth proving early: content a hash can prove, small enough to hold in memory; by folder
        for i, e in enumerate(entries):
            if e.sha256 is not None and 0 < e.size <= WHOLE_FILE_BYTES:
                self._pending.setdefault(os.path.dirname(self.paths[i]), []).append(i)
        if self._task is not None:
            self._task.update(total=sum(e.size for e in entries))
        self._provided.set()

    # starting and stopping -------------------------------------------------------------------------------

    def __enter__(self) -> AlongsideChecker:
        self.start()
        return self

    def start(self) -> None:
        """Start the workers and the watcher, from the main thread, before restic starts."""
        total = sum(e.size for e in self.entries) if self._provided.is_set() else None
        self._task = self._stack.enter_context(self._progress.task("verify restored files", total=total, unit="B"))
        self._pool = worker_pool(self.workers, _init_worker, (self.parse,))
        # with fork, the first task starts every worker: do it now, from this thread, before restic runs (not
        # waiting for it: the workers import pydicom while restic derives its key)
        with signals_deferred():
            self._pool.submit(_ready)
        self._watcher = threading.Thread(target=self._watch, name="backupctl-check-alongside", daemon=True)
        self._watcher.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the watcher and the workers (idempotent; also after an interruption)."""
        self._restic_ended.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._stack.close()

    # while restic restores (the watcher thread) -----------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._provided.wait(0.05):
                if self._restic_ended.is_set():
                    return
            next_sweep = time.monotonic()
            while not self._restic_ended.is_set():
                # no need to look for more files while the workers have plenty queued
                if len(self._ready) < self.workers * BATCH_FILES and time.monotonic() >= next_sweep:
                    # at most about 5 % of a core on looking: a slow restic with many files gets fewer sweeps
                    next_sweep = time.monotonic() + max(SWEEP_SECONDS, 20 * self._sweep())
                self._submit_ready()
                # wake for the next sweep, or when a worker has room for what is ready (never spin)
                wake = SWEEP_SECONDS if self._ready else max(0.0, next_sweep - time.monotonic())
                self._collect_early(timeout=wake)
            while self._inflight:
                self._collect_early(timeout=None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which decides
            self._failure = exc
        finally:
            self._watcher_cpu = time.thread_time()

    def _sweep(self) -> float:
        """Move files that look written to the ready queue (see `_looks_written`); returns the CPU seconds it
        took. One directory listing per folder with files still to prove: files restic has not created yet
        cost nothing."""
        started = time.thread_time()
        self._sweeps += 1
        now_ns = time.time_ns()
        for folder, waiting in list(self._pending.items()):
            try:
                with os.scandir(folder) as listing:
                    present = {d.name: d for d in listing}
            except OSError:
                continue                          # restic has not created the folder yet
            still = []
            for i in waiting:
                found = present.get(self._names[i])
                if found is not None and self._looks_written(i, found.stat(follow_symlinks=False), now_ns):
                    self._ready.append(i)
                else:
                    still.append(i)
            if still:
                self._pending[folder] = still
            else:
                del self._pending[folder]
        return time.thread_time() - started

    def _looks_written(self, i: int, st: os.stat_result, now_ns: int) -> bool:
        """The manifest's size, not written to for SETTLE_SECONDS, not already tried at this mtime, and no
        region left unwritten as far as the filesystem tells."""
        if st.st_size != self.entries[i].size or st.st_mtime_ns == self._tried.get(i) \
                or now_ns - st.st_mtime_ns < SETTLE_SECONDS * 1e9 or st.st_mtime_ns == self._holed.get(i):
            return False
        if _has_hole(self.paths[i], st.st_size):
            self._holed[i] = st.st_mtime_ns       # not worth looking again before restic writes to it again
            return False
        return True

    def _submit_ready(self) -> None:
        assert self._pool is not None
        while self._ready and len(self._inflight) < self.workers * QUEUED_PER_WORKER:
            batch = [self._ready.popleft() for _ in range(min(BATCH_FILES, len(self._ready)))]
            items = [(self.entries[i], self.paths[i], self.entries[i].path in self.decode) for i in batch]
            self._inflight[self._pool.submit(_prove_batch, items, self.parse)] = batch

    def _collect_early(self, timeout: float | None) -> None:
        if not self._inflight:
            self._restic_ended.wait(timeout)
            return
        done, _ = wait(self._inflight, timeout=timeout, return_when=FIRST_COMPLETED)
        for fut in done:
            batch = self._inflight.pop(fut)
            for i, got in zip(batch, fut.result(), strict=True):
                if isinstance(got, EarlyProof):
                    self.proofs[i] = got
                    self.proven_at[i] = self.now()
                    self._advance(self.entries[i].size)
                else:
                    self._misses += 1
                    self._tried[i] = got
                    self._pending.setdefault(os.path.dirname(self.paths[i]), []).append(i)

    def _advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._task.advance(nbytes)

    # once restic has ended (the caller's thread) ------------------------------------------------------------

    def finish(self, *, unlisted_from: set[str] | None = None) -> Outcome:
        """restic has ended: confirm the files proven early, check all others, return everything found.
        `unlisted_from`: every path the manifest lists, to report restored files it does not list."""
        self._restic_ended.set()
        assert self._watcher is not None and self._pool is not None and self._provided.is_set()
        self._watcher.join()
        if self._failure is not None:
            raise self._failure
        log.debug("%d of %d files proven while restic restored (%d sweeps, %d reads too early, %.2f s CPU)",
                  len(self.proofs), len(self.entries), self._sweeps, self._misses, self._watcher_cpu)
        outcome = Outcome(checks=[FileCheck() for _ in self.entries], at=[0.0] * len(self.entries))
        outcome.early_files = len(self.proofs)
        outcome.early_bytes = sum(self.entries[i].size for i in self.proofs)
        # what restic wrote, and what it wrote beyond the manifest
        outcome.restored_files, outcome.restored_bytes, outcome.unlisted = _walk(self.root, unlisted_from)
        pending: dict[Future[list[FileCheck | None]], list[int]] = {}
        for batch in _batches(len(self.entries)):
            items = [(self.entries[i], self.paths[i], self.entries[i].path in self.decode,
                      self.entries[i].path in self.changed, self.proofs[i].zeros if i in self.proofs else None)
                     for i in batch]
            pending[self._pool.submit(_final_batch, items, self.parse)] = batch
            if len(pending) >= self.workers * 3:
                self._collect_final(pending, outcome)
        while pending:
            self._collect_final(pending, outcome)
        return outcome

    def _collect_final(self, pending: dict[Future[list[FileCheck | None]], list[int]], outcome: Outcome) -> None:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            batch = pending.pop(fut)
            for i, got in zip(batch, fut.result(), strict=True):
                if got is None:                  # the early proof stands
                    outcome.checks[i], outcome.at[i] = self.proofs[i].check, self.proven_at[i]
                    continue
                if i in self.proofs:             # it did not: restic wrote to it after it matched
                    outcome.early_files -= 1
                    outcome.early_bytes -= self.entries[i].size
                else:
                    self._advance(self.entries[i].size)
                outcome.checks[i], outcome.at[i] = got, self.now()


def _has_hole(path: str, size: int) -> bool:
    """Whether the file still has a region restic has not written: restic preallocates files, and ext4, XFS
    and btrfs report preallocated space nobody wrote as a hole. Only a hint for when to read a file (a
    filesystem may report no holes at all, and a piece smaller than a block shows none): the hash decides."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < size
    except OSError:
        return False
    finally:
        os.close(fd)


def _batches(count: int) -> Iterator[range]:
    for start in range(0, count, BATCH_FILES):
        yield range(start, min(count, start + BATCH_FILES))


def _walk(root: Path, listed: set[str] | None) -> tuple[int, int, list[Finding]]:
    """Files and bytes under `root`, and (when `listed` is given) the files the manifest does not list."""
    files = size = 0
    unlisted = []
    top = len(str(root))
    for dirpath, _, filenames in os.walk(root):
        folder = dirpath[top:]                   # the folder's path in the snapshot ('' for the root)
        in_manifest_dir = MANIFEST_DIR_NAME in folder.split(os.sep)
        for name in filenames:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
            snap_path = f"{folder}/{name}"
            if listed is not None and not in_manifest_dir and snap_path not in listed:
                unlisted.append(Finding(WARNING, "unlisted", snap_path,
                                        "restored but not in the manifest (added during the backup?)"))
    return files, size, unlisted


# in the workers -------------------------------------------------------------------------------------------


def _init_worker(parse: bool) -> None:
    # Ctrl-C reaches the whole process group: the parent stops restic and this pool; a worker must not die
    # mid-task on its own. SIGTERM gets its default action back (the CLI's handler raises in the parent).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.nice(WORKER_NICE)
    if parse:   # pydicom is imported now, while restic starts, rather than on the first file
        from backupctl.dicom.parse import silence_for_process

        silence_for_process()


def _ready() -> None:
    """The no-op task that starts the workers."""


def _prove_batch(items: list[tuple[Entry, str, bool]], parse: bool) -> list[EarlyProof | int]:
    return [prove_early(Path(path), e, decode, parse) for e, path, decode in items]


def _final_batch(items: list[tuple[Entry, str, bool, bool, list[tuple[int, int]] | None]],
                 parse: bool) -> list[FileCheck | None]:
    """The check of each file once restic has ended (None: its early proof stands)."""
    out: list[FileCheck | None] = []
    for e, path, decode, changed, zeros in items:
        restored = Path(path)
        if zeros is not None and still_proven(restored, e, zeros):
            out.append(None)
        else:
            out.append(check_once(restored, e, decode, changed, parse=parse, parse_damaged=False))
    return out
