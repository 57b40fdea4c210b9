"""The `orthanc` job source: a consistent point-in-time copy of a running Orthanc, with the least downtime.

Orthanc's SQLite index is locked exclusively while Orthanc runs and must never be opened live; the Orthanc
Book's procedure is: stop Orthanc, copy configuration, storage and `index*` files, start again. Storage
files are written once under a random UUID and only ever unlinked, so a hard link taken while Orthanc is
stopped is as good as a copy, at the cost of one `link()` per file and no data. The steps:

1. while Orthanc runs: hard-link the whole storage area into the snapshot folder (the slow part, no
   downtime; files written meanwhile are complete by step 3, since a link shares the inode);
2. stop Orthanc (systemd unit, a command, or REST `/tools/shutdown`) and wait until its index is unlocked
   (a kernel lock query, `F_GETLK`: the index is never opened) and its HTTP port is silent;
3. copy the `index*` files and the configuration, and bring the links up to date (link new files, drop
   the links of deleted ones): only a directory walk and the delta happen while the PACS is down;
4. start Orthanc ALWAYS (also when a step failed) and wait until `/system` answers.

The downtime (stop issued -> `/system` answers) is measured and bounded by `max_downtime_seconds`: past it,
the copy is abandoned and discarded, Orthanc is started again, and the run fails saying so. An Orthanc that
was not running when the run began is copied as it is and left stopped (backupctl never starts a PACS an
operator stopped). The snapshot folder holds `config/`, `index/`, `storage/` and `backupctl-orthanc.json`
(what was copied, from where, the downtime), which restores and drills use to recognise the layout.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupctl import process
from backupctl.catalog.db import utcnow
from backupctl.config import Config, Job, OrthancSource
from backupctl.errors import (
    BackupctlError,
    DowntimeExceeded,
    OrthancError,
    OrthancStopError,
    OrthancUnreachable,
    SourceUnreadable,
)
from backupctl.fsutil import atomic_write_text
from backupctl.pacs.orthanc import Credentials, OrthancClient, index_lock_holder, read_credentials
from backupctl.progress import NullProgress, Progress, Task

log = logging.getLogger("backupctl.pacs.source")

MARKER = "backupctl-orthanc.json"        # written into every Orthanc snapshot folder
TAG_FILE = ".backupctl-orthanc-snapshot"  # proves a folder is ours before it is cleared
COPY_CHUNK = 8 << 20
POLL = 0.05


@dataclass
class ResolvedOrthanc:
    """An `[orthanc]` job source with its paths made absolute and checked."""

    job: str
    cfg: OrthancSource
    config_path: Path
    storage_dir: Path
    index_dir: Path
    snapshot_dir: Path
    credentials: Credentials | None

    @property
    def index_file(self) -> Path:
        return self.index_dir / "index"

    def client(self, timeout: float = 10.0) -> OrthancClient:
        return OrthancClient(self.cfg.url, self.credentials, timeout=timeout, verify_tls=self.cfg.verify_tls)


@dataclass
class OrthancCopy:
    """What one consistent copy took; recorded in the catalog and in the snapshot's marker file."""

    root: Path
    was_running: bool = True
    stopped_at: str | None = None
    restarted_at: str | None = None
    downtime_seconds: float = 0.0
    stop_seconds: float = 0.0
    copy_seconds: float = 0.0
    start_seconds: float = 0.0
    prelink_seconds: float = 0.0
    storage_files: int = 0
    storage_bytes: int = 0
    linked_while_stopped: int = 0
    unlinked_while_stopped: int = 0
    index_bytes: int = 0
    instances_before: int | None = None       # /statistics just before the stop (stores may race the stop)
    orthanc_version: str | None = None
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        return data


# checking the configuration before anything runs -------------------------------------------------------


def snapshot_dir_for(config: Config, job: Job) -> Path:
    assert job.orthanc is not None
    if job.orthanc.snapshot_dir is not None:
        return config.resolve(job.orthanc.snapshot_dir)
    return config.state_dir / "pacs" / job.name


def resolve_orthanc(config: Config, job: Job) -> ResolvedOrthanc:
    """Check an `[orthanc]` source: folders exist and are readable, the snapshot folder can hold hard links
    of the storage area (same filesystem), commands exist, credentials are readable. Changes nothing."""
    cfg = job.orthanc
    assert cfg is not None
    where = f"job {job.name}: orthanc"
    config_path = config.resolve(cfg.config)
    storage = config.resolve(cfg.storage_dir)
    index_dir = config.resolve(cfg.index_dir) if cfg.index_dir else storage
    snapshot = snapshot_dir_for(config, job)
    for what, path in (("config", config_path), ("storage_dir", storage), ("index_dir", index_dir)):
        if not path.exists():
            raise SourceUnreadable(f"{where}.{what}: {path} does not exist", hint="fix the job's [orthanc] table")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise SourceUnreadable(f"{where}.{what}: {path} is not readable by this user",
                                   hint="run backupctl as root or as the orthanc user")
    if not (index_dir / "index").is_file():
        raise SourceUnreadable(f"{where}: no Orthanc index in {index_dir} (expected the file 'index')",
                               hint="set index_dir to Orthanc's IndexDirectory")
    if _inside(snapshot, storage) or _inside(storage, snapshot):
        raise SourceUnreadable(f"{where}.snapshot_dir {snapshot} overlaps storage_dir {storage}",
                               hint="use a sibling folder on the same filesystem")
    anchor = _existing_ancestor(snapshot)
    if anchor.stat().st_dev != storage.stat().st_dev:
        raise SourceUnreadable(f"{where}.snapshot_dir {snapshot} is not on the filesystem of {storage}",
                               hint="hard links need the same filesystem: set snapshot_dir next to storage_dir")
    for argv in (cfg.stop_command, cfg.start_command):
        if argv and shutil.which(argv[0]) is None:
            raise SourceUnreadable(f"{where}: command {argv[0]!r} not found", hint="give its full path")
    if cfg.systemd_unit and shutil.which("systemctl") is None:
        raise SourceUnreadable(f"{where}.systemd_unit is set but systemctl is not installed")
    creds_file = config.resolve(cfg.credentials_file) if cfg.credentials_file else None
    credentials = read_credentials(creds_file, cfg.credentials_env)
    return ResolvedOrthanc(job.name, cfg, config_path, storage, index_dir, snapshot, credentials)


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


# service control ---------------------------------------------------------------------------------------


def _run_command(argv: list[str], timeout: float, what: str) -> None:
    """Run a stop/start command; raise OrthancStopError (what failed) on non-zero exit or timeout.

    Output goes to a file, not a pipe: a start command that leaves Orthanc running in the background
    would otherwise hold the pipe open and look like a hung command. A start command runs on if backupctl
    dies meanwhile (the PACS must come back; the next run also restarts one left stopped); a stop command
    dies with it (SIGKILL), since the copy it was for will not be taken."""
    with tempfile.TemporaryFile() as output:
        try:
            done = process.run(argv, timeout=max(timeout, 0.1), kill_grace=0, stdout=output, merge_stderr=True,
                               text=False, on_parent_death=None if what == "start" else signal.SIGKILL)
        except OSError as exc:
            raise OrthancStopError(f"{what} command `{' '.join(argv)}` cannot run: {exc.strerror}") from None
        if done.timed_out:
            raise OrthancStopError(f"{what} command `{' '.join(argv)}` timed out after {timeout:.0f}s "
                                   "(killed)")
        if done.returncode != 0:
            output.seek(0)
            tail = output.read()[-2000:].decode("utf-8", "replace").strip().splitlines()[-1:]
            raise OrthancStopError(f"{what} command `{' '.join(argv)}` exited {done.returncode}"
                                   + (f": {process.mask(tail[0][:200])}" if tail else ""))


def _stop_argv(src: ResolvedOrthanc) -> list[str] | None:
    if src.cfg.systemd_unit:
        return ["systemctl", "stop", src.cfg.systemd_unit]
    return src.cfg.stop_command


def _start_argv(src: ResolvedOrthanc) -> list[str]:
    if src.cfg.systemd_unit:
        return ["systemctl", "start", src.cfg.systemd_unit]
    assert src.cfg.start_command
    return src.cfg.start_command


def is_running(src: ResolvedOrthanc) -> bool:
    return index_lock_holder(src.index_file) is not None or src.client(timeout=2).answers(timeout=2)


def stop_orthanc(src: ResolvedOrthanc, deadline: float) -> None:
    """Ask Orthanc to stop, then wait until its index is unlocked and its HTTP port silent."""
    argv = _stop_argv(src)
    remaining = deadline - time.monotonic()
    if argv:
        _run_command(argv, min(src.cfg.command_timeout_seconds, remaining), "stop")
    else:
        try:
            src.client(timeout=max(1.0, min(10.0, remaining))).shutdown()
        except OrthancUnreachable:
            pass  # already going down, or never answered: the lock check below decides
        except OrthancError as exc:
            raise OrthancStopError(f"REST shutdown of Orthanc at {src.cfg.url} refused: {exc.message}",
                                   hint="check credentials_file, or configure a stop command") from None
    client = src.client(timeout=1)
    while True:
        holder = index_lock_holder(src.index_file)
        if holder is None and not client.answers(timeout=0.5):
            return
        if time.monotonic() >= deadline:
            who = f"process {holder} still holds {src.index_file}" if holder else f"{src.cfg.url} still answers"
            raise DowntimeExceeded(f"Orthanc did not stop within max_downtime_seconds "
                                   f"({src.cfg.max_downtime_seconds:g}s): {who}")
        time.sleep(POLL)   # polling with a deadline


def start_orthanc(src: ResolvedOrthanc, deadline: float) -> None:
    """Run the start command and wait until `/system` answers (401 counts when no credentials are set)."""
    error: BackupctlError | None = None
    try:
        _run_command(_start_argv(src), max(1.0, min(src.cfg.command_timeout_seconds,
                                                     deadline - time.monotonic())), "start")
    except OrthancStopError as exc:
        error = exc   # it may be up anyway (e.g. it never stopped): readiness decides
    client = src.client(timeout=2)
    while True:
        if _ready(client, src.credentials):
            return
        if time.monotonic() >= deadline:
            why = error.message if error else f"{src.cfg.url} does not answer /system"
            raise DowntimeExceeded(f"Orthanc did not come back in time: {why}")
        time.sleep(POLL)


def _ready(client: OrthancClient, credentials: Credentials | None) -> bool:
    try:
        client.system(timeout=2)
        return True
    except OrthancUnreachable:
        return False
    except OrthancError as exc:
        return credentials is None and getattr(exc, "status", 0) == 401


# copying -----------------------------------------------------------------------------------------------


class _Deadline:
    def __init__(self, at: float | None, what: str) -> None:
        self.at, self.what = at, what

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise DowntimeExceeded(f"max downtime reached while {self.what}; copy abandoned")


@dataclass
class LinkStats:
    files: int = 0
    bytes: int = 0
    linked: int = 0
    unlinked: int = 0


def sync_links(src: Path, dst: Path, *, skip_top: frozenset[str] = frozenset(), deadline: _Deadline,
               task: Task | None = None, stats: LinkStats | None = None, measure: bool = True) -> LinkStats:
    """Make `dst` a tree of hard links to every file of `src`: link what is new or relinked (another
    inode), drop what `src` no longer has. Names are enough to compare because storage files are
    write-once, and the inode comparison catches the rest. Without `measure` no file is stat'ed (only
    directories are read: what runs while the PACS is stopped stays as short as possible)."""
    stats = stats or LinkStats()
    dst.mkdir(parents=True, exist_ok=True)
    have = {e.name: e for e in os.scandir(dst)}
    for entry in os.scandir(src):
        if skip_top and entry.name in skip_top:
            continue
        deadline.check()
        target = dst / entry.name
        old = have.pop(entry.name, None)
        if entry.is_dir(follow_symlinks=False):
            if old is not None and not old.is_dir(follow_symlinks=False):
                os.unlink(target)
            sync_links(Path(entry.path), target, deadline=deadline, task=task, stats=stats, measure=measure)
            continue
        if not entry.is_file(follow_symlinks=False):
            continue      # sockets, fifos, symlinks: never part of Orthanc's storage
        stats.files += 1
        if measure:
            stats.bytes += entry.stat(follow_symlinks=False).st_size
        if old is not None and old.is_file(follow_symlinks=False) and old.inode() == entry.inode():
            continue
        if old is not None:
            _remove(target, old.is_dir(follow_symlinks=False))
        _link(entry.path, target)
        stats.linked += 1
        if task is not None:
            task.advance()
    for name, old in have.items():
        _remove(dst / name, old.is_dir(follow_symlinks=False))
        stats.unlinked += 1
    return stats


def _link(source: str, target: Path) -> None:
    try:
        os.link(source, target)
    except FileNotFoundError:
        pass  # deleted by the live Orthanc between listing and linking: the next pass sees it gone
    except PermissionError as exc:
        raise SourceUnreadable(f"cannot hard-link {source}: {exc.strerror}",
                               hint="run backupctl as root or as the user owning Orthanc's storage") from None
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise SourceUnreadable(f"cannot hard-link {source} across filesystems",
                                   hint="set orthanc.snapshot_dir on the storage's filesystem") from None
        raise


def _remove(path: Path, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def copy_file(src: Path, dst: Path, deadline: _Deadline) -> int:
    """A plain copy (never a link: Orthanc rewrites its index in place), chunked to honour the deadline."""
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(COPY_CHUNK):
            deadline.check()
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, dst)
    return size


def index_files(index_dir: Path) -> list[Path]:
    """Orthanc's SQLite files: `index` and its `-wal`/`-shm`/`-journal` companions."""
    return sorted(p for p in index_dir.iterdir() if p.is_file() and p.name.startswith("index"))


def copy_index(src: ResolvedOrthanc, root: Path, deadline: _Deadline) -> int:
    dest = root / "index"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return sum(copy_file(f, dest / f.name, deadline) for f in index_files(src.index_dir))


def copy_config(src: ResolvedOrthanc, root: Path) -> None:
    dest = root / "config"
    if dest.exists():
        shutil.rmtree(dest)
    if src.config_path.is_dir():
        shutil.copytree(src.config_path, dest, symlinks=False)
    else:
        dest.mkdir()
        shutil.copy2(src.config_path, dest / src.config_path.name)


def _skip_top(src: ResolvedOrthanc) -> frozenset[str]:
    """With the Debian layout the index sits in the storage folder: it is copied, never linked."""
    if src.index_dir.resolve() != src.storage_dir.resolve():
        return frozenset()
    return frozenset(p.name for p in src.storage_dir.iterdir() if p.name.startswith("index"))


def prepare_snapshot_dir(root: Path) -> None:
    """Create the snapshot folder, or take over the one a killed run left (only if it carries our tag)."""
    if root.exists() and any(root.iterdir()) and not (root / TAG_FILE).exists():
        raise SourceUnreadable(f"{root} exists, is not empty and was not made by backupctl",
                               hint="choose another orthanc.snapshot_dir or empty it")
    root.mkdir(parents=True, exist_ok=True)
    (root / TAG_FILE).touch()
    (root / MARKER).unlink(missing_ok=True)   # a marker only ever describes a finished copy


def discard_snapshot_dir(root: Path) -> None:
    """Drop the copy: unlinking hard links never touches the live files' data."""
    if (root / TAG_FILE).exists():
        shutil.rmtree(root, ignore_errors=True)


# the whole step ----------------------------------------------------------------------------------------


def take_copy(src: ResolvedOrthanc, progress: Progress | None = None) -> OrthancCopy:
    """Steps 1-4 of the module docstring. On any failure Orthanc is started again (if it was running),
    the copy is discarded, and the error says what happened; `OrthancCopy` figures are kept on the error."""
    progress = progress or NullProgress()
    root = src.snapshot_dir
    copy = OrthancCopy(root=root)
    restarted = restart_if_left_stopped(src)
    prepare_snapshot_dir(root)
    try:
        if restarted:
            copy.notes.append(restarted)
        copy.was_running = is_running(src)
        _remember_live_facts(src, copy)
        began = time.monotonic()
        with progress.task("orthanc: link storage (live)", total=None, unit="files") as task:
            live = sync_links(src.storage_dir, root / "storage", skip_top=_skip_top(src),
                              deadline=_Deadline(None, "linking"), task=task)
        copy.prelink_seconds = time.monotonic() - began
        copy.storage_bytes = live.bytes          # as linked while running; the stopped pass only reads dirs
        log.info("orthanc %s: %d storage files linked while running in %.1fs", src.job, live.linked,
                 copy.prelink_seconds)
        if copy.was_running:
            _stopped_copy(src, copy)
        else:
            copy.notes.append("Orthanc was not running: copied as it was and left stopped")
            _copy_while_stopped(src, copy, _Deadline(None, "copying"))
        _write_marker(src, copy)
    except BaseException as exc:
        discard_snapshot_dir(root)
        with contextlib.suppress(AttributeError, TypeError):
            exc.orthanc_copy = copy  # type: ignore[attr-defined]  # figures for the catalog
        raise
    return copy


def _stopped_flag(src: ResolvedOrthanc) -> Path:
    """Beside the snapshot folder: exists while backupctl has Orthanc stopped (and not seen it back)."""
    return src.snapshot_dir.with_name(src.snapshot_dir.name + ".orthanc-stopped")


def restart_if_left_stopped(src: ResolvedOrthanc) -> str | None:
    """An earlier run stopped Orthanc and died before it was back (killed, power loss): start it now.

    Only an Orthanc that backupctl itself stopped is started; returns a note saying so, or None."""
    flag = _stopped_flag(src)
    if not flag.exists():
        return None
    try:
        stopped = json.loads(flag.read_text()).get("stopped_at", "?")
    except (OSError, ValueError):
        stopped = "?"
    if is_running(src):
        flag.unlink(missing_ok=True)
        return None
    log.warning("orthanc %s: left stopped by an interrupted run (stopped at %s); starting it", src.job, stopped)
    _start_with_retry(src, time.monotonic() + src.cfg.command_timeout_seconds)
    flag.unlink(missing_ok=True)
    return f"Orthanc had been left stopped by an interrupted run (stopped at {stopped}); started it again"


def _remember_live_facts(src: ResolvedOrthanc, copy: OrthancCopy) -> None:
    if not copy.was_running:
        return
    with contextlib.suppress(OrthancError, KeyError, ValueError, TypeError):
        client = src.client(timeout=5)
        copy.orthanc_version = str(client.system().get("Version"))
        copy.instances_before = client.counts()["instances"]


def _stopped_copy(src: ResolvedOrthanc, copy: OrthancCopy) -> None:
    cfg = src.cfg
    t0 = time.monotonic()
    deadline = t0 + cfg.max_downtime_seconds
    copy.stopped_at = utcnow()
    failure: BaseException | None = None
    started_again = False
    # if backupctl dies (SIGKILL, power) while Orthanc is down, the next run sees this and starts it
    _stopped_flag(src).write_text(json.dumps({"pid": os.getpid(), "stopped_at": copy.stopped_at}))
    try:
        stop_orthanc(src, deadline)
        copy.stop_seconds = time.monotonic() - t0
        began = time.monotonic()
        _copy_while_stopped(src, copy, _Deadline(deadline, "copying the stopped Orthanc"))
        copy.copy_seconds = time.monotonic() - began
    except BaseException as exc:
        failure = exc
    finally:
        # ALWAYS start again, whatever happened above (also Ctrl+C: a PACS must not stay down)
        restart_began = time.monotonic()
        try:
            _start_with_retry(src, deadline)
            started_again = True
        except BaseException as exc:
            if failure is None:
                failure = exc
            else:
                log.error("orthanc %s: restart after a failed copy also failed: %s", src.job, exc)
                failure = DowntimeExceeded(f"{_one_line(failure)}; and Orthanc did not come back: "
                                           f"{_one_line(exc)}", hint=f"start it by hand: {' '.join(_start_argv(src))}")
        copy.start_seconds = time.monotonic() - restart_began
        copy.downtime_seconds = time.monotonic() - t0
        copy.restarted_at = utcnow() if started_again or _ready(src.client(2), src.credentials) else None
        if copy.restarted_at is not None:
            _stopped_flag(src).unlink(missing_ok=True)
    if failure is not None:
        raise failure
    if copy.downtime_seconds > cfg.max_downtime_seconds:
        raise DowntimeExceeded(f"Orthanc was down {copy.downtime_seconds:.1f}s, more than max_downtime_seconds "
                               f"({cfg.max_downtime_seconds:g}s); the copy was discarded",
                               hint="raise max_downtime_seconds or find out why Orthanc stops/starts slowly")


def _start_with_retry(src: ResolvedOrthanc, deadline: float) -> None:
    """Start and wait until the downtime deadline; if Orthanc is not back, start once more and give it
    `command_timeout_seconds`, so that a slow or lost first start still ends with a running PACS."""
    try:
        start_orthanc(src, max(deadline, time.monotonic() + 5.0))
        return
    except DowntimeExceeded as first:
        log.warning("orthanc %s: %s; starting it again", src.job, first.message)
        try:
            start_orthanc(src, time.monotonic() + src.cfg.command_timeout_seconds)
        except DowntimeExceeded as second:
            raise DowntimeExceeded(f"Orthanc did not come back after two starts: {second.message}",
                                   hint=f"start it by hand: {' '.join(_start_argv(src))}") from None
        raise DowntimeExceeded(f"Orthanc came back only after a second start ({first.message}); "
                               "the copy was discarded") from None


def _copy_while_stopped(src: ResolvedOrthanc, copy: OrthancCopy, deadline: _Deadline) -> None:
    if index_lock_holder(src.index_file) is not None:  # never copy an index someone holds
        raise OrthancStopError(f"{src.index_file} is locked by a running process")
    try:
        copy.index_bytes = copy_index(src, src.snapshot_dir, deadline)
        copy_config(src, src.snapshot_dir)
        stats = sync_links(src.storage_dir, src.snapshot_dir / "storage", skip_top=_skip_top(src),
                           deadline=deadline, measure=False)
    except (OSError, shutil.Error) as exc:
        raise OrthancError(f"copying the stopped Orthanc into {src.snapshot_dir} failed: {exc}",
                           hint="check free space and permissions there") from None
    copy.storage_files = stats.files
    copy.linked_while_stopped, copy.unlinked_while_stopped = stats.linked, stats.unlinked


def _write_marker(src: ResolvedOrthanc, copy: OrthancCopy) -> None:
    marker = {
        "format": 1,
        "kind": "orthanc",
        "job": src.job,
        "source": {"config": str(src.config_path), "storage_dir": str(src.storage_dir),
                   "index_dir": str(src.index_dir), "url": src.cfg.url},
        "layout": {"config": "config", "index": "index", "storage": "storage"},
        "copy": {k: v for k, v in copy.figures().items() if k != "root"},
    }
    atomic_write_text(src.snapshot_dir / MARKER, json.dumps(marker, indent=2))


def _one_line(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, BackupctlError) else repr(exc)


@contextmanager
def orthanc_copy(src: ResolvedOrthanc, progress: Progress | None = None) -> Iterator[OrthancCopy]:
    """A consistent copy for the duration of the block (restic reads it), discarded afterwards."""
    copy = take_copy(src, progress)
    try:
        yield copy
    finally:
        discard_snapshot_dir(copy.root)
