"""The one place that starts processes (the only module that imports `subprocess`).

What every child gets here:

* its own process group (a session), so a timeout or an interruption can kill the child *and* whatever it
  started, and a Ctrl-C at the terminal reaches backupctl only, which then stops its children in order;
* a signal when backupctl dies (Linux PR_SET_PDEATHSIG, set in the child before it runs the program):
  SIGKILL by default, SIGTERM where the child must clean up (a scheduled job), or none for a command that
  must finish once started (bringing a PACS back up). The kernel sends it when the *thread* that forked the
  child ends, not the process: so a child is forked either by the main thread or, when `start` is called
  from any other thread, by one long-lived forking thread of this module; either lives as long as the
  process. Forked worker pools (`worker_pool`) get the same in their initializer;
* no descriptor backupctl keeps for itself: `subprocess` closes every descriptor on exec, and a forked worker
  closes those registered with `parent_only` (the repository lock, the start gate's FIFO), so a worker that
  outlives its parent for a moment holds neither;
* secrets masked (`***`) in everything logged or kept for an error message: the values given per call and
  those registered with `hide`.

SIGINT and SIGTERM are one interruption: `raise_on_sigterm` makes SIGTERM raise `Terminated` (errors.py)
where Ctrl-C raises KeyboardInterrupt; `INTERRUPTIONS` names both for `except` clauses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backupctl.errors import Terminated

log = logging.getLogger("backupctl.process")

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired
INTERRUPTIONS: tuple[type[BaseException], ...] = (KeyboardInterrupt, Terminated)
TAIL_LINES = 200
MASK = "***"
_PR_SET_PDEATHSIG = 1

_hidden: set[str] = set()


# secrets ----------------------------------------------------------------------------------------------------


def hide(*values: str | None) -> None:
    """Mask these values (a password read from the environment, a token) in everything this module logs."""
    _hidden.update(v for v in values if v and len(v) >= 4)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    for value in sorted({*_hidden, *(s for s in secrets if s)}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def describe(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    return mask(" ".join(str(a) for a in argv), secrets)


# interruption -----------------------------------------------------------------------------------------------


def raise_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C (stop restic cleanly, record the run as interrupted)."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


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


# is a process there? -----------------------------------------------------------------------------------------


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


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names one
    process even after the pid is reused. None when there is no such process (or no /proc)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process_running(pid: int, ticks: int | None) -> bool:
    """The process `pid` that started at `ticks` still runs (not a later one that got its pid)."""
    if not pid_running(pid):
        return False
    return ticks is None or start_ticks(pid) in (None, ticks)


# dying with the parent ----------------------------------------------------------------------------------------

_prctl: Any = None


def _load_prctl() -> Any:
    """libc's prctl, loaded in the parent (ctypes in a just-forked child is best kept to a call)."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):   # not Linux: children are stopped by the parent only
            _prctl = False
    return _prctl


def die_with_parent(signum: int, parent: int) -> None:
    """In a child: get `signum` when the parent dies; exit at once if it died already (between fork and
    here, when the signal could not be asked for yet)."""
    prctl = _load_prctl()
    if prctl:
        prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class _Forker:
    """One long-lived thread that forks the children of other threads: PR_SET_PDEATHSIG fires when the
    forking thread ends, and a pool's or a step's thread may end long before the server it started."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, make: Callable[[], Any]) -> Any:
        if threading.current_thread() is threading.main_thread():
            return make()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="backupctl-forker", daemon=True)
                self._thread.start()
        box: list[Any] = []
        done = threading.Event()
        self._requests.put((make, box, done))
        done.wait()
        ok, value = box
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            make, box, done = self._requests.get()
            try:
                box[:] = [True, make()]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box[:] = [False, exc]
            done.set()


    def forget(self) -> None:
        """In a forked child: the thread was the parent's; a first call here starts the child's own."""
        self._thread, self._lock, self._requests = None, threading.Lock(), queue.SimpleQueue()


_forker = _Forker()
os.register_at_fork(after_in_child=_forker.forget)


# descriptors the parent keeps for itself -----------------------------------------------------------------------

_parent_only: Counter[str] = Counter()


@contextmanager
def parent_only(path: Path | str) -> Iterator[None]:
    """While inside, descriptors open on `path` are closed in forked workers (`worker_pool`). Register before
    opening: a worker forked between the open and the registration would otherwise keep it. By path, not by
    descriptor, because a descriptor may be opened by another thread at any moment (the gate's FIFO)."""
    key = os.path.realpath(path)
    _parent_only[key] += 1
    try:
        yield
    finally:
        _parent_only[key] -= 1
        if _parent_only[key] <= 0:
            del _parent_only[key]


def close_parent_only() -> None:
    """In a forked child: close every descriptor on a path registered with `parent_only`."""
    if not _parent_only:
        return
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}").removesuffix(" (deleted)")
        except OSError:
            continue
        if target in _parent_only:
            with contextlib.suppress(OSError):
                os.close(int(name))


def worker_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> Any:
    """A ProcessPoolExecutor whose workers are forked (they inherit the imported modules, so the pool starts
    in milliseconds), die with backupctl (SIGKILL), exit at once if it is gone already, and hold none of its
    `parent_only` descriptors. Fork it from the thread that also shuts it down."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    return ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    die_with_parent(signal.SIGKILL, parent)
    close_parent_only()
    if initializer is not None:
        initializer(*initargs)


# starting children --------------------------------------------------------------------------------------------


class Child:
    """A started child in its own process group. `stderr_tail` keeps the last lines of a piped stderr."""

    def __init__(self, popen: subprocess.Popen[Any], argv: Sequence[str], secrets: Sequence[str],
                 tail_lines: int) -> None:
        self.popen = popen
        self.argv = list(argv)
        self.secrets = list(secrets)
        self._tail: deque[Any] = deque(maxlen=tail_lines)
        self._reader: threading.Thread | None = None
        if tail_lines and popen.stderr is not None and popen.stdout is not None:   # read stderr aside
            self._reader = threading.Thread(target=self._read_stderr, name="backupctl-stderr", daemon=True)
            self._reader.start()

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us at the end
            for line in self.popen.stderr:
                self._tail.append(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    @property
    def stdout(self) -> IO[Any] | None:
        return self.popen.stdout

    def lines(self) -> Iterator[str]:
        """stdout, line by line (text mode), without the line ends, as the child writes them."""
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            yield line.rstrip("\n")

    def poll(self) -> int | None:
        return self.popen.poll()

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Read piped stdout (and stderr, unless read aside) to the end and wait; see Popen.communicate."""
        return self.popen.communicate(timeout=timeout)

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if it still runs after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_tail(self, join_seconds: float = 5.0) -> str:
        """The last lines of stderr (secrets masked); waits for the reader once the child has ended."""
        if self._reader is not None and self.popen.returncode is not None:
            self._reader.join(timeout=join_seconds)
        text = "".join(self._tail) if self.popen.text_mode else b"".join(self._tail).decode("utf-8", "replace")
        return mask(text, self.secrets)

    def send(self, signum: int) -> None:
        """A signal to the child alone (restic's SIGINT, which makes it remove its lock)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def stop(self, first: int = signal.SIGTERM, grace: float = 5.0, *, group: bool = True) -> bool:
        """`first`, then SIGKILL if it has not ended within `grace` seconds (0: SIGKILL at once); returns when
        it is reaped. With `group`, both go to the child's whole process group, and whatever of the group is
        left once the child ended is killed too. True when it ended on `first` (or had ended already)."""
        if self.popen.poll() is not None:
            return True     # reaped before: its pid, and so its group id, may belong to another process now
        ended = False
        if grace > 0:
            (self.signal_group if group else self.send)(first)
            ended = self.wait(grace) is not None
        if group:
            self.signal_group(signal.SIGKILL)
        elif not ended:
            self.send(signal.SIGKILL)
        self.popen.wait()
        return ended

    def close(self) -> None:
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start(argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
          cwd: Path | str | None = None, stdout: int | IO[Any] | None = DEVNULL,
          stderr: int | IO[Any] | None = DEVNULL,
          text: bool = True, on_parent_death: int | None = signal.SIGKILL, secrets: Sequence[str] = (),
          tail_lines: int = TAIL_LINES) -> Child:
    """Start `argv` in its own process group with stdin closed. `stdout`/`stderr`: DEVNULL, PIPE, STDOUT
    (stderr only), an open file, or None (backupctl's own). With both piped, stderr is read aside and its last
    `tail_lines` lines kept (`Child.stderr_tail`; 0: not read aside); read stdout with `Child.lines()`.
    `on_parent_death`: the signal the child gets when backupctl dies (None: it runs on). Raises OSError when
    the program cannot be run."""
    args = [os.fspath(a) for a in argv]
    log.debug("starting %s", describe(args, secrets))
    preexec: Callable[[], None] | None = None
    if on_parent_death is not None and _load_prctl():
        parent, signum = os.getpid(), on_parent_death

        def preexec() -> None:
            die_with_parent(signum, parent)

    def make() -> subprocess.Popen[Any]:
        return subprocess.Popen(args, env=None if env is None else dict(env), cwd=cwd, stdin=DEVNULL,
                                stdout=stdout, stderr=stderr, text=text, bufsize=1 if text else -1,
                                start_new_session=True, preexec_fn=preexec)

    popen = _forker.call(make) if preexec is not None else make()
    return Child(popen, args, secrets, tail_lines)


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int | None          # None: killed after its timeout
    stdout: Any                     # str or bytes; None when not captured
    stderr: Any                     # str or bytes; None when not captured (or merged into stdout)
    seconds: float
    secrets: tuple[str, ...] = ()

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 1, chars: int = 4000) -> str:
        """The last lines of stderr (of stdout when stderr was merged or not captured), masked: for an
        error message."""
        out = self.stderr if self.stderr is not None else self.stdout
        if out is None:
            return ""
        text = out.decode("utf-8", "replace") if isinstance(out, bytes) else out
        return mask("\n".join(text[-chars:].strip().splitlines()[-lines:]), self.secrets)


def run(argv: Sequence[str | os.PathLike[str]], *, timeout: float | None = None, kill_grace: float = 5.0,
        capture: bool = True, merge_stderr: bool = False, stdout: IO[Any] | None = None, text: bool = True,
        env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
        on_parent_death: int | None = signal.SIGKILL, secrets: Sequence[str] = (),
        kill_leftovers: bool = False) -> Completed:
    """Run `argv` to its end. `kill_leftovers`: once it ended, SIGKILL what is left of its process group (a
    browser's helpers that outlive the browser). `capture`: keep stdout and stderr (`merge_stderr`: as one
    stream in stdout);
    `stdout`: an open file instead (a command that leaves a daemon behind would hold a pipe open). After
    `timeout` seconds the child's group gets SIGTERM, then SIGKILL after `kill_grace` (0: SIGKILL at once),
    and `returncode` is None. An interruption (Ctrl-C, SIGTERM) stops the group the same way and goes on.
    Raises OSError when the program cannot be run."""
    began = time.monotonic()
    out: int | IO[Any]
    err: int | IO[Any]
    if stdout is not None:
        out, err = stdout, STDOUT if merge_stderr else (PIPE if capture else DEVNULL)
    elif capture:
        out, err = PIPE, STDOUT if merge_stderr else PIPE
    else:
        out, err = DEVNULL, DEVNULL
    child = start(argv, env=env, cwd=cwd, stdout=out, stderr=err, text=text, on_parent_death=on_parent_death,
                  secrets=secrets, tail_lines=0)   # communicate reads both pipes
    popen = child.popen
    code: int | None
    try:
        try:
            got_out, got_err = popen.communicate(timeout=timeout)
            code = popen.returncode
        except subprocess.TimeoutExpired:
            log.debug("%s timed out after %.0f s: stopping its process group", describe(child.argv, secrets),
                      timeout or 0)
            child.stop(signal.SIGTERM, kill_grace)
            got_out, got_err = popen.communicate()
            code = None
    except BaseException:          # an interruption: the child's group must not outlive it
        child.stop(signal.SIGTERM, kill_grace)
        child.close()
        raise
    if kill_leftovers:
        child.signal_group(signal.SIGKILL)
    return Completed(child.argv, code, got_out, got_err, time.monotonic() - began, tuple(secrets))
