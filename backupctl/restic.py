"""The restic driver: the only place that builds restic argv, runs it, reads its JSON and maps its errors.

The repository password reaches restic through RESTIC_PASSWORD_FILE (or RESTIC_PASSWORD from the
environment), never argv. stdin is closed so restic can never sit at a password prompt. restic runs through
`backupctl.process`. On SIGINT/SIGTERM the child gets SIGINT, which makes restic remove its own lock before it
exits; a child that does not stop in time is killed, and so is a restic whose backupctl died (SIGKILL from the
kernel: a restic left running would hold the repository for nobody). The stale lock such a restic leaves is
removed before our next operation that takes a lock (`_clear_stale_locks`), never by hand.

restic 0.14 (Debian 12) is the floor: its exit codes are only 0, 1, 3 and 130, so errors are told apart by
stderr; 0.17+ adds 10/11/12, used when `version()` says they exist (see FEATURES).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from backupctl import process
from backupctl.errors import (
    Interrupted,
    PartialSnapshot,
    RepositoryLocked,
    RepositoryNotFound,
    ResticError,
    ResticNotInstalled,
    UnknownSnapshot,
    WrongPassword,
    did_you_mean,
)
from backupctl.process import Child
from backupctl.progress import NullProgress, Progress
from backupctl.secrets import PasswordSource

log = logging.getLogger("backupctl.restic")

MIN_VERSION = (0, 14, 0)
# feature -> first restic version that has it (borgmatic's feature table, for restic)
FEATURES: dict[str, tuple[int, int, int]] = {
    "exit_codes_10_11_12": (0, 17, 0),  # 10 no repository, 11 lock failed, 12 wrong password
    "restore_json": (0, 16, 0),
    "full_snapshot_id_in_summary": (0, 15, 0),
}
STOP_GRACE_SECONDS = 30.0
JOB_TAG_PREFIX = "job:"
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    paths: list[str]
    tags: list[str]
    hostname: str
    parent: str | None = None

    @property
    def job(self) -> str | None:
        for tag in self.tags:
            if tag.startswith(JOB_TAG_PREFIX):
                return tag[len(JOB_TAG_PREFIX):]
        return None


@dataclass
class BackupSummary:
    snapshot: Snapshot | None
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    total_files: int = 0
    total_bytes: int = 0
    data_added: int = 0
    data_blobs: int = 0                 # new file-content blobs: 0 when no file data changed
    seconds: float = 0.0
    unreadable: list[str] = field(default_factory=list)        # each path once
    causes: dict[str, str] = field(default_factory=dict)       # path -> why it was not read
    waited_seconds: float = 0.0         # how long restic waited at the start gate for `before_reading`


@dataclass(frozen=True)
class Node:
    path: str
    type: str
    size: int
    mtime: str


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout_lines: list[str]
    stderr_tail: str


@cache
def restic_binary() -> str:
    path = shutil.which("restic")
    if not path:
        raise ResticNotInstalled("restic is not installed", hint="apt-get install restic, or run `make demo`")
    return path


@cache
def version() -> tuple[int, int, int]:
    out = process.run([restic_binary(), "version"], timeout=60).stdout or ""
    m = re.search(r"restic (\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise ResticError(f"cannot tell restic's version from {out.strip()[:80]!r}")
    found = (int(m[1]), int(m[2]), int(m[3]))
    if found < MIN_VERSION:
        raise ResticNotInstalled(f"restic {'.'.join(map(str, found))} is too old; backupctl needs >= 0.14")
    return found


def has(feature: str) -> bool:
    return version() >= FEATURES[feature]


def _classify(returncode: int, stderr: str, repo: str) -> ResticError:
    """One function decides what a failed restic run means."""
    if returncode < 0:
        return ResticError(f"restic was killed by signal {-returncode} while working on {repo}",
                           hint="run again; the next run removes its stale lock", stderr_tail=stderr)
    tail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
    tail = tail.removeprefix("Fatal: ")
    if has("exit_codes_10_11_12") and returncode in (10, 11, 12):
        returncode_kind = {10: "missing", 11: "locked", 12: "password"}[returncode]
    elif "wrong password or no key found" in stderr:
        returncode_kind = "password"
    elif "Is there a repository at the following location?" in stderr or "unable to open config file" in stderr:
        returncode_kind = "missing"
    elif "repository is already locked" in stderr or "unable to create lock" in stderr:
        returncode_kind = "locked"
    else:
        returncode_kind = "other"
    if returncode_kind == "password":
        return WrongPassword(f"wrong password for repository {repo}",
                             hint="check the password file or environment variable named in the config",
                             stderr_tail=stderr)
    if returncode_kind == "missing":
        return RepositoryNotFound(f"no restic repository at {repo}",
                                  hint="run `backupctl init` or fix the repository path", stderr_tail=stderr)
    if returncode_kind == "locked":
        return RepositoryLocked(f"repository {repo} is locked by another restic process",
                                hint="wait for it to finish; the lock of a restic that is gone is removed by the next "
                                     "run (or `backupctl unlock`)",
                                stderr_tail=stderr)
    return ResticError(f"restic failed on {repo}: {tail}", stderr_tail=stderr)


class StartGate:
    """Lets restic start while work it must not overtake is still running (the manifest of the snapshot).

    restic reads its `--exclude-file`s right after it opened the repository (key derivation, lock) and before
    it loads the index or reads a single source, in every version from 0.14 on, with a plain read (a FIFO
    will do). Given an empty FIFO as one, it waits there until the FIFO is closed: `pass_when_done` runs the
    work, then closes it, so restic's ~0.7 s of start-up overlaps the work instead of following it, and restic
    cannot read a source before the work is done, however long either takes.

    If the work fails (or is interrupted), restic is turned away at the gate: it is handed an invalid exclude
    pattern, which every version treats as a fatal error before reading anything (exit 1, no snapshot, its
    lock removed). SIGINT would stop a waiting restic only up to 0.16 (later versions merely cancel a context
    restic does not look at while it reads), and stopping restic before the gate could leave a half-written
    lock file. If restic ends before it reaches the gate (a wrong password, a locked repository), `close`
    unblocks the keeper thread.

    The FIFO's folder is named after its owner (pid and start time): a gate of a backupctl that was killed is
    removed by the next one (`remove_dead_gates`). Forked workers close the FIFO's write end (`parent_only`):
    one that kept it would keep restic waiting at the gate after backupctl died.
    """

    REFUSE = b"[\n"     # an exclude pattern restic rejects: its fatal error ends the run before any read
    PREFIX = "backupctl-gate-"

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.failed = False                    # the work raised: restic was turned away
        self.reached_at: float | None = None   # when restic reached the gate (monotonic)
        self.done_at: float | None = None      # when the work was done
        remove_dead_gates()
        pid = os.getpid()
        self._folder = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{pid}.{process.start_ticks(pid) or 0}-"))
        self.path = self._folder / "restic-waits-here"
        os.mkfifo(self.path, 0o600)
        self._parent_only = contextlib.ExitStack()
        self._parent_only.enter_context(process.parent_only(self.path))
        self._release = threading.Event()
        self._refuse = False
        self._keeper = threading.Thread(target=self._keep, name="backupctl-gate", daemon=True)
        self._keeper.start()

    @property
    def waited_seconds(self) -> float:
        """How long restic waited for the work: what the work added to restic's own time."""
        if self.reached_at is None or self.done_at is None:
            return 0.0
        return max(0.0, self.done_at - self.reached_at)

    def _keep(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)   # returns once restic (or `close`) opens the FIFO to read
        except OSError:
            return
        self.reached_at = time.monotonic()
        try:
            self._release.wait()
            if self._refuse:
                with contextlib.suppress(OSError):  # restic may have ended meanwhile (EPIPE)
                    os.write(fd, self.REFUSE)
        finally:
            os.close(fd)                           # end of file: restic goes on (or fails on the pattern)

    @property
    def passed(self) -> bool:
        """The gate was opened (the work done, or restic turned away)."""
        return self._release.is_set()

    def pass_when_done(self, proc: Child, stop: Callable[[Child], None]) -> None:
        try:
            self.work()
            self.done_at = time.monotonic()
            self._release.set()
        except BaseException:
            self.turn_away(proc, stop)
            raise

    def turn_away(self, proc: Child, stop: Callable[[Child], None]) -> None:
        """The work failed (or never began): restic ends at the gate, before reading a source."""
        self.failed = True
        if self._release.is_set():      # restic is past the gate already: stop it as Ctrl-C would
            stop(proc)
            return
        self._refuse = True
        self._release.set()
        proc.wait(STOP_GRACE_SECONDS)   # it reaches the gate after its key derivation
        stop(proc)                      # only if it is still running

    def close(self) -> None:
        """Once restic has ended, or never started: let the keeper finish, remove the FIFO (idempotent)."""
        self._release.set()
        if self._keeper.is_alive():
            try:   # restic never opened the FIFO: open it ourselves, so the keeper's open returns
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                fd = -1
            self._keeper.join(timeout=STOP_GRACE_SECONDS)
            if fd >= 0:
                os.close(fd)
        self._parent_only.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def remove_dead_gates(folder: Path | None = None) -> list[Path]:
    """Remove the gate folders of backupctl processes that are gone (killed while restic waited at their gate;
    a live one removes its own). Returns what was removed."""
    removed: list[Path] = []
    root = Path(folder or tempfile.gettempdir())
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(StartGate.PREFIX):
            continue
        owner = entry.name[len(StartGate.PREFIX):].split("-", 1)[0]
        pid_text, _, ticks_text = owner.partition(".")
        if not (pid_text.isdigit() and ticks_text.isdigit()):
            continue        # not named after its owner (an older backupctl's): no way to tell it is stale
        if process.same_process_running(int(pid_text), int(ticks_text) or None):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue    # another user's (sticky /tmp would refuse anyway)
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
        log.info("removed the start gate %s of dead pid %s", entry.path, pid_text)
    return removed


class Restic:
    """restic bound to one repository and its password source."""

    def __init__(self, repository: str | Path, password: PasswordSource, *, cache_dir: Path | None = None,
                 no_cache: bool = False, extra_env: dict[str, str] | None = None,
                 host: str | None = None) -> None:
        self.repository = str(repository)
        self.password = password
        self.cache_dir = cache_dir
        self.no_cache = no_cache
        self.extra_env = extra_env or {}
        self.host = host or socket.gethostname()
        self._stale_cleared = False

    # running -------------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        # restic must only see the repository and password we give it, never stray RESTIC_* settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(self.password.restic_env())
        env["RESTIC_REPOSITORY"] = self.repository
        if self.cache_dir is not None:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        env.update(self.extra_env)
        return env

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [restic_binary(), *args]
        if self.no_cache:
            argv.insert(1, "--no-cache")
        return argv

    def run(self, args: Sequence[str], *, on_stdout: Callable[[str], None] | None = None,
            ok_codes: tuple[int, ...] = (0,), env: dict[str, str] | None = None,
            stop: threading.Event | None = None, gate: StartGate | None = None) -> Result:
        """Run restic; stream stdout lines to `on_stdout`; raise a typed error unless the code is ok.
        `stop`: set from another thread, it stops restic as Ctrl-C would (then Interrupted is raised here).
        `gate`: work that must be done before restic reads its sources, done here while restic opens the
        repository (see `StartGate`); if it raises, restic is stopped and the exception goes on. Whoever made
        the gate closes it."""
        argv = self._argv(args)
        full_env = {**self._env(), **(env or {})}
        proc: Child | None = None
        lines: list[str] = []
        try:
            # restic dies with backupctl: a restic left running would hold the repository lock for nobody, and
            # one waiting at the start gate would wait forever. An interruption while it is being started takes
            # effect once there is a child to stop (else restic would run on, unknown to us)
            with process.signals_deferred():
                proc = process.start(argv, env=full_env, stdout=process.PIPE, stderr=process.PIPE,
                                     secrets=[full_env.get("RESTIC_PASSWORD", "")])
            if stop is not None:
                threading.Thread(target=self._stop_when_set, args=(stop, proc), daemon=True).start()
            if gate is not None:
                gate.pass_when_done(proc, self._stop)
            for line in proc.lines():
                if on_stdout is not None:
                    on_stdout(line)
                else:
                    lines.append(line)
            proc.wait()
        except BaseException:
            if proc is None:
                raise           # restic cannot run, or the interruption came before it was started
            if gate is not None and not gate.failed and not gate.passed:
                gate.turn_away(proc, self._stop)   # interrupted before the work began: as if the work failed
            else:
                self._stop(proc)
            if gate is not None and gate.failed:
                raise           # the work's own error (or interruption); restic was turned away at the gate
            raise Interrupted("interrupted; restic was stopped and its lock removed") from None
        stderr = proc.stderr_tail()
        proc.close()
        if proc.returncode == 130:
            raise Interrupted("restic was interrupted", hint="run the command again; nothing was lost")
        if proc.returncode not in ok_codes:
            raise _classify(proc.returncode or 0, stderr, self.repository)
        return Result(proc.returncode or 0, lines, stderr)

    def _stop_when_set(self, stop: threading.Event, proc: Child) -> None:
        while proc.poll() is None:
            if stop.wait(0.1):
                self._stop(proc)
                return

    def _stop(self, proc: Child) -> None:
        """SIGINT lets restic remove its lock; SIGKILL only if it does not stop within the grace time."""
        if proc.poll() is not None:
            return
        if not proc.stop(signal.SIGINT, STOP_GRACE_SECONDS, group=False):
            log.warning("restic did not stop within %.0f s and was killed; its lock is stale",
                        STOP_GRACE_SECONDS)

    def _json(self, args: Sequence[str]) -> Any:
        out = self.run([*args, "--json"]).stdout_lines
        text = "\n".join(out).strip()
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError as exc:
            raise ResticError(f"restic printed unexpected output for {args[0]}: {text[:120]!r}") from exc

    # commands --------------------------------------------------------------------------------------------

    def init(self) -> None:
        self.run(["init"])

    def exists(self) -> bool:
        try:
            self.run(["cat", "config"])
        except RepositoryNotFound:
            return False
        return True

    def config(self) -> dict[str, Any]:
        return json.loads("\n".join(self.run(["cat", "config"]).stdout_lines))

    def unlock(self) -> None:
        """Remove stale locks only (restic's default): locks of dead processes or older than 30 min.

        Skipped when a local repository holds no lock file at all: there is nothing to remove, and every
        restic start pays the repository's key derivation (~0.5 s here), a third of an incremental backup."""
        if self._holds_no_locks():
            return
        self.run(["unlock"])

    def _clear_stale_locks(self) -> None:
        """Before an operation that takes a lock: remove the locks of restic processes that are gone (a
        backupctl killed with its restic), so no run waits for `backupctl unlock`. Free when a local repository
        holds no lock; a remote one is asked once per instance."""
        if self._stale_cleared:
            return
        if not self._holds_no_locks():
            self.run(["unlock"])
        self._stale_cleared = not _is_local(self.repository)

    def _holds_no_locks(self) -> bool:
        try:
            with os.scandir(Path(self.repository) / "locks") as entries:
                return next(entries, None) is None
        except OSError:  # not a local repository (or unreadable): let restic look
            return False

    def holds_snapshot(self, snapshot_id: str) -> bool:
        """True when a local repository holds the snapshot (full id): a file lookup, no restic start."""
        return _FULL_ID.match(snapshot_id) is not None and (Path(self.repository) / "snapshots" / snapshot_id).is_file()

    def snapshots(self, *, tags: Sequence[str] = (), ids: Sequence[str] = ()) -> list[Snapshot]:
        args = ["snapshots"]
        for tag in tags:
            args += ["--tag", tag]
        data = self._json([*args, *ids]) or []
        return [_snapshot(s) for s in data]

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """One snapshot by id, unique prefix or 'latest'; an unknown or ambiguous one is bad input (exit 2)."""
        local = self._local_snapshot_ids()
        if local is not None and snapshot_id != "latest":
            # a local repository answers from its file names: an ambiguous prefix is named as such (restic only
            # says it found nothing), and a typo costs no restic start
            matches = [i for i in local if i.startswith(snapshot_id)]
            if len(matches) > 1:
                width = len(snapshot_id) + 4
                raise UnknownSnapshot(f"snapshot {snapshot_id} is ambiguous: matches "
                                      f"{', '.join(m[:width] for m in matches)}", hint="give more digits")
            if not matches:
                raise UnknownSnapshot(f"no snapshot {snapshot_id} in {self.repository}"
                                      f"{did_you_mean(snapshot_id, [i[:len(snapshot_id)] for i in local])}",
                                      hint="list them with `backupctl snapshots`")
        found = self.snapshots(ids=[snapshot_id])
        if not found:
            raise UnknownSnapshot(f"no snapshot {snapshot_id} in {self.repository}",
                                  hint="list them with `backupctl snapshots`")
        return found[0]

    def _local_snapshot_ids(self) -> list[str] | None:
        """The full ids of a local repository's snapshots, sorted; None when it is not a local folder."""
        try:
            with os.scandir(Path(self.repository) / "snapshots") as entries:
                return sorted(e.name for e in entries if _FULL_ID.match(e.name))
        except OSError:
            return None

    def add_tag(self, snapshot: Snapshot, tag: str) -> Snapshot:
        """Add a tag to a snapshot. restic rewrites the snapshot under a new id (the old one is `original`):
        the snapshot returned is the new one."""
        self.run(["tag", "--add", tag, snapshot.id])
        for data in self._json(["snapshots", "--tag", tag]) or []:
            if data.get("original") == snapshot.id or data.get("id") == snapshot.id:
                return _snapshot(data)
        raise ResticError(f"snapshot {snapshot.short_id} not found after tagging it {tag!r}")

    def backup(self, paths: Sequence[Path], *, excludes: Sequence[str] = (), tags: Sequence[str] = (),
               progress: Progress | None = None, ignore_ctime: bool = False,
               parent: str | None = None, not_before: int | None = None,
               before_reading: Callable[[], None] | None = None) -> BackupSummary:
        """Back up `paths`; exit 3 (some files unreadable, snapshot saved) raises PartialSnapshot.

        `ignore_ctime`: for hard-linked copies (Orthanc storage), whose ctime changes at every link while
        content, mtime and inode do not; without it restic would re-read every file of every run.
        `parent`: the snapshot restic compares with (full id); without it restic picks the latest one of the
        same host and paths, and the returned snapshot's `parent` is unknown (None).

        The snapshot is described without asking restic again (every restic start pays the repository's key
        derivation, most of an incremental backup's time): its time is set here (`--time`, whole seconds,
        UTC), its paths, tags, host and parent are what was asked for, and its full id is found in the
        repository's `snapshots/` folder by the short id restic 0.14 prints. `not_before` (epoch seconds):
        the earliest time to give it, so that whole-second times still order a job's snapshots strictly
        (restic's `latest` and retention policies order by time).

        `before_reading`: work that must be complete before restic reads `paths` (the manifest it stores),
        run while restic starts: restic's key derivation and lock take ~0.7 s here (see `StartGate`)."""
        taken = max(datetime.now(UTC).replace(microsecond=0),
                    datetime.fromtimestamp(not_before or 0, UTC))
        args = ["backup", "--json", "--host", self.host, "--time", taken.strftime("%Y-%m-%d %H:%M:%S")]
        if ignore_ctime:
            args.append("--ignore-ctime")
        if parent:
            args += ["--parent", parent]
        for tag in tags:
            args += ["--tag", tag]
        for pattern in excludes:
            args += ["--exclude", pattern]
        self._clear_stale_locks()
        gate = StartGate(before_reading) if before_reading is not None else None
        if gate is not None:
            args += ["--exclude-file", str(gate.path)]
        args += ["--", *(str(p) for p in paths)]
        summary: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        progress = progress or NullProgress()
        started = time.monotonic()
        with progress.task("backup", total=None, unit="B") as task:

            def on_line(line: str) -> None:
                msg = _parse_json_line(line)
                if msg is None:
                    return
                kind = msg.get("message_type")
                if kind == "status":
                    task.update(completed=msg.get("bytes_done", 0), total=msg.get("total_bytes") or None)
                elif kind == "summary":
                    summary.update(msg)
                elif kind == "error":
                    errors.append(_error_item(msg))

            try:
                result = self.run(args, on_stdout=on_line, ok_codes=(0, 3), env={"TZ": "UTC"}, gate=gate)
            finally:
                if gate is not None:    # also when restic could not even be started
                    gate.close()
        errors += _unreadable_from_stderr(result.stderr_tail)
        asked = Snapshot(id="", short_id="", time=taken.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         paths=sorted(os.path.abspath(p) for p in paths), tags=list(tags), hostname=self.host,
                         parent=parent)
        causes: dict[str, str] = {}
        for path, cause in errors:   # restic may report one path twice (lstat, then open)
            causes.setdefault(path, cause)
        out = self._summary(summary, list(causes), time.monotonic() - started, asked)
        out.causes = causes
        out.waited_seconds = gate.waited_seconds if gate is not None else 0.0
        if result.returncode == 3:
            message, hint = partial_message(out)
            raise PartialSnapshot(message, hint=hint, stderr_tail=result.stderr_tail).with_summary(out)
        return out

    def _summary(self, summary: dict[str, Any], errors: list[str], seconds: float,
                 asked: Snapshot) -> BackupSummary:
        short = summary.get("snapshot_id")
        full = self._full_snapshot_id(short) if short else None
        snap = replace(asked, id=full, short_id=full[:8]) if full else None
        return BackupSummary(
            snapshot=snap,
            files_new=summary.get("files_new", 0),
            files_changed=summary.get("files_changed", 0),
            files_unmodified=summary.get("files_unmodified", 0),
            total_files=summary.get("total_files_processed", 0),
            total_bytes=summary.get("total_bytes_processed", 0),
            data_added=summary.get("data_added", 0),
            data_blobs=summary.get("data_blobs", 0),
            seconds=seconds,
            unreadable=errors,
        )

    def _full_snapshot_id(self, short: str) -> str:
        """The full id of a snapshot restic just printed (0.14 prints the short one only)."""
        if _FULL_ID.match(short):
            return short
        try:
            with os.scandir(Path(self.repository) / "snapshots") as entries:
                found = [e.name for e in entries if e.name.startswith(short) and _FULL_ID.match(e.name)]
        except OSError:  # not a local repository: ask restic
            found = []
        if len(found) == 1:
            return found[0]
        return self.snapshot(short).id   # ambiguous prefix, or not local: restic resolves it

    def restore(self, snapshot_id: str, target: Path, *, includes: Sequence[str] = (),
                excludes: Sequence[str] = (), keep_going: bool = False,
                progress: Progress | None = None, stop: threading.Event | None = None) -> list[tuple[str, str]]:
        """Restore into `target` (restic 0.14 takes includes or excludes, not both). With `keep_going`,
        files restic could not restore (a damaged pack) are returned as (path, error) instead of raising,
        so a restore drill can report them and still check everything else. `stop`: see `run`."""
        self._clear_stale_locks()    # restore takes a lock too (a shared one)
        args = ["restore", snapshot_id, "--target", str(target)]
        for pattern in includes:
            args += ["--include", pattern]
        for pattern in excludes:
            args += ["--exclude", pattern]
        with (progress or NullProgress()).task(f"restore {snapshot_id[:8]}", total=None):
            result = self.run(args, ok_codes=(0, 1) if keep_going else (0,), stop=stop)
        if result.returncode == 0:
            return []
        failed = _restore_errors(result.stderr_tail)
        if not failed:
            raise _classify(result.returncode, result.stderr_tail, self.repository)
        return failed

    def ls(self, snapshot_id: str) -> Iterator[Node]:
        """Every node of a snapshot (restic ls --json prints the snapshot first, then one node per line)."""
        return iter(self.listing(snapshot_id)[1])

    def listing(self, snapshot_id: str) -> tuple[Snapshot, list[Node]]:
        """The snapshot (full id, time, paths, tags) and every node of it, from one `restic ls --json`."""
        snap: Snapshot | None = None
        nodes: list[Node] = []
        for line in self.run(["ls", "--json", snapshot_id]).stdout_lines:
            msg = _parse_json_line(line)
            if not isinstance(msg, dict):
                continue
            if msg.get("struct_type") == "node":
                nodes.append(Node(msg["path"], msg["type"], msg.get("size", 0), msg.get("mtime", "")))
            elif msg.get("struct_type") == "snapshot" and snap is None:
                snap = _snapshot(msg)
        if snap is None:
            raise ResticError(f"no snapshot {snapshot_id} in {self.repository}",
                              hint="list them with `backupctl snapshots`")
        return snap, nodes

    def dump(self, snapshot_id: str, path: str) -> bytes:
        """One file's content from a snapshot."""
        env = self._env()
        done = process.run(self._argv(["dump", snapshot_id, path]), env=env, text=False,
                           secrets=[env.get("RESTIC_PASSWORD", "")])
        if done.returncode != 0:
            raise _classify(done.returncode or 0, done.stderr.decode(errors="replace"), self.repository)
        return bytes(done.stdout)

    def stats(self, snapshot_id: str | None = None, mode: str = "restore-size") -> dict[str, Any]:
        args = ["stats", "--mode", mode]
        if snapshot_id:
            args.append(snapshot_id)
        return self._json(args)

    def check(self, *, read_data_subset: str | None = None, read_data: bool = False,
              no_lock: bool = False) -> str:
        """`restic check`; raises on any problem, returns restic's report."""
        args = ["check"]
        if read_data:
            args.append("--read-data")
        elif read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        if no_lock:
            args.append("--no-lock")
        else:
            self._clear_stale_locks()   # check takes an exclusive lock: a stale lock would refuse it
        result = self.run(args)
        return "\n".join(result.stdout_lines)

    def forget(self, *, tags: Sequence[str], keep: dict[str, int], prune: bool = True,
               dry_run: bool = False) -> list[dict[str, Any]]:
        """Apply a keep-policy to the snapshots carrying `tags`; returns restic's keep/remove/reasons groups."""
        args = ["forget", "--group-by", "host"]
        for tag in tags:
            args += ["--tag", tag]
        for key, value in keep.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        if dry_run:
            args.append("--dry-run")
        elif prune:
            args.append("--prune")
        self._clear_stale_locks()       # forget locks the repository (prune exclusively)
        out = self.run([*args, "--json"]).stdout_lines
        # with --prune, restic prints prune's plain-text report after the JSON line
        for line in out:
            msg = _parse_json_line(line)
            if isinstance(msg, list):
                return msg
        return []


    def forget_snapshots(self, ids: Sequence[str], *, prune: bool = True) -> None:
        """Forget exactly these snapshots (a plan already decided), then prune."""
        if ids:
            self.run(["forget", *ids, *(["--prune"] if prune else [])])


_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _is_local(repository: str) -> bool:
    return (Path(repository) / "config").is_file()


def restic_time_ns(text: str) -> int | None:
    """restic's RFC 3339 time with nanoseconds as integer nanoseconds since the epoch."""
    m = _TIME.match(text)
    if not m:
        return None
    zone = "+00:00" if m[3] == "Z" else m[3]
    seconds = int(datetime.fromisoformat(m[1] + zone).timestamp())
    return seconds * 1_000_000_000 + int((m[2] or "0")[:9].ljust(9, "0"))


def _snapshot(data: dict[str, Any]) -> Snapshot:
    return Snapshot(id=data["id"], short_id=data.get("short_id", data["id"][:8]), time=data["time"],
                    paths=data.get("paths", []), tags=data.get("tags") or [], hostname=data.get("hostname", ""),
                    parent=data.get("parent"))


def _parse_json_line(line: str) -> Any:
    if not line.startswith(("{", "[")):
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


_RESTORE_ERROR = re.compile(r"^ignoring error for (/.*?): (.*)$")


def _restore_errors(stderr: str) -> list[tuple[str, str]]:
    """(path, error) per file restic could not restore; the first error of each path only."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        m = _RESTORE_ERROR.match(line.strip())
        if m and m[1] not in found:
            found[m[1]] = m[2]
    return list(found.items())


_UNREADABLE = re.compile(r"^error: (?:open|lstat|read) (\S+?): (.*)$")


def _unreadable_from_stderr(stderr: str) -> list[tuple[str, str]]:
    """(path, cause) of items restic could not read: JSON error lines (backup --json) or plain `error: open
    ...` lines."""
    found: list[tuple[str, str]] = []
    for line in stderr.splitlines():
        msg = _parse_json_line(line.strip())
        if isinstance(msg, dict) and msg.get("message_type") == "error":
            found.append(_error_item(msg))
        elif m := _UNREADABLE.match(line.strip()):
            found.append((m[1], _cause(m[2])))
    return found


def _error_item(msg: dict[str, Any]) -> tuple[str, str]:
    """One `error` message of `backup --json`: 0.14 gives {Op, Path, Err: errno}, later versions {message}."""
    error = msg.get("error")
    path = str(msg.get("item") or (error.get("Path") if isinstance(error, dict) else None) or "?")
    if isinstance(error, dict) and isinstance(error.get("Err"), int):
        return path, _cause(os.strerror(error["Err"]))
    text = error.get("message") if isinstance(error, dict) else error
    # 0.14 reports an unreadable folder with an empty error: look at the path now, as restic's user
    return path, _cause(str(text)) if text else _cause_now(path)


def _cause_now(path: str) -> str:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except OSError as exc:
        return _cause(exc.strerror or type(exc).__name__)
    return "could not be read (restic gave no cause; it reads now)"


def _cause(text: str) -> str:
    """Why a path was not read, in the words an operator acts on."""
    lowered = text.lower()
    if "no such file" in lowered:
        return "vanished during the backup"
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return "permission denied"
    return lowered.rsplit(": ", 1)[-1]


def partial_message(out: BackupSummary) -> tuple[str, str | None]:
    """restic exit 3, as one line: each unread path once with its cause, and a snapshot of 0 files said so."""
    short = out.snapshot.short_id if out.snapshot else "?"
    saved = f"snapshot {short} saved with 0 files" if out.total_files == 0 else f"snapshot {short} saved"
    listed = ", ".join(f"{path} ({cause})" for path, cause in list(out.causes.items())[:3])
    more = f" and {len(out.causes) - 3} more" if len(out.causes) > 3 else ""
    message = f"{saved}, but {len(out.causes) or 'some'} path(s) could not be read: {listed or '?'}{more}"
    causes = set(out.causes.values())
    if "permission denied" in causes:
        return message, "check permissions on the source"
    if causes == {"vanished during the backup"}:
        return message, "removed while the backup ran; the next run saves what is there then"
    return message, None


def job_tag(job: str) -> str:
    return f"{JOB_TAG_PREFIX}{job}"
