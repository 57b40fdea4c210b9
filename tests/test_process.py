"""The one process layer: timeouts kill the whole group, the stderr tail is kept and masked, children die with
their parent (also those started from a thread that ended), forked workers drop the parent's descriptors; the
repository lock and the start gates left by a dead backupctl are taken over and removed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from backupctl import process
from backupctl.locking import lock_path, repository_lock
from backupctl.process import pid_running
from backupctl.restic import StartGate, remove_dead_gates
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def _gone(pid: int) -> bool:
    return not pid_running(pid)   # a zombie counts as gone: it runs nothing and holds nothing


def test_a_timeout_kills_the_childs_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    done = process.run(["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=1, kill_grace=1)
    assert done.timed_out and done.returncode is None
    grandchild = int(pidfile.read_text())
    wait_for(lambda: _gone(grandchild), timeout=5, what="the grandchild to be killed with its group")


def test_an_interruption_stops_the_group_and_goes_on(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"

    def interrupt_once_started() -> None:
        wait_for(pidfile.exists, what="the child to start its grandchild")
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    stopper = threading.Thread(target=interrupt_once_started)
    stopper.start()
    with pytest.raises(KeyboardInterrupt):
        process.run(["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"],
                    kill_grace=1)
    stopper.join()
    wait_for(lambda: _gone(int(pidfile.read_text())), timeout=5, what="the grandchild to be killed")


def test_the_last_stderr_lines_are_kept_while_stdout_streams() -> None:
    script = "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done; exit 3"
    child = process.start(["/bin/sh", "-c", script], stdout=process.PIPE, stderr=process.PIPE, tail_lines=50)
    lines = list(child.lines())
    assert child.wait() == 3
    assert lines[0] == "out1" and lines[-1] == "out300" and len(lines) == 300
    tail = child.stderr_tail().splitlines()
    assert tail == [f"err{i}" for i in range(251, 301)]


def test_secrets_are_masked_in_the_tail_and_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    process.hide("registered-token-42")
    caplog.set_level(logging.DEBUG, logger="backupctl.process")
    done = process.run(["/bin/sh", "-c", 'echo "using $0 and registered-token-42" >&2; exit 1', "hunter2-secret"],
                       secrets=["hunter2-secret"])
    assert done.returncode == 1
    assert done.tail() == "using *** and ***"
    assert "hunter2-secret" in done.stderr                # the caller still gets the raw output to parse
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/bin/sh -c" in logged and "hunter2-secret" not in logged and "***" in logged


def test_a_program_that_cannot_run_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        process.run(["/nonexistent/program"])


PARENT = textwrap.dedent("""\
    import sys, threading
    from backupctl import process
    how = sys.argv[1]
    if how == "thread":          # started from a thread that ends at once: the child must not die with it
        box = []
        t = threading.Thread(target=lambda: box.append(process.start(["sleep", "300"])))
        t.start(); t.join()
        child = box[0]
    elif how == "runs-on":
        child = process.start(["sleep", "300"], on_parent_death=None)
    else:
        child = process.start(["sleep", "300"])
    print(child.pid, flush=True)
    child.wait()
""")


def _parent(how: str) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


@pytest.mark.parametrize("how", ["main thread", "thread"])
def test_a_child_dies_when_its_parent_is_killed(how: str) -> None:
    parent, child = _parent(how)
    assert pid_running(child)     # alive while its parent is (the starting thread has ended already)
    parent.kill()
    parent.wait()
    wait_for(lambda: _gone(child), timeout=5, what="the child to die with its parent")


def test_a_child_asked_to_run_on_outlives_its_parent() -> None:
    parent, child = _parent("runs-on")
    parent.kill()
    parent.wait()
    try:
        assert pid_running(child)
    finally:
        os.kill(child, signal.SIGKILL)


def _open_targets() -> list[str]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue
    return found


def test_forked_workers_hold_none_of_the_parents_own_descriptors(tmp_path: Path) -> None:
    kept, shared = tmp_path / "parent-only", tmp_path / "shared"
    with process.parent_only(kept):
        fd_kept = os.open(kept, os.O_RDWR | os.O_CREAT, 0o600)
        fd_shared = os.open(shared, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with process.worker_pool(1) as pool:
                in_worker = pool.submit(_open_targets).result()
        finally:
            os.close(fd_kept)
            os.close(fd_shared)
    assert str(shared) in in_worker and str(kept) not in in_worker


WORKERS = textwrap.dedent("""\
    import sys
    from backupctl import process
    with process.worker_pool(2) as pool:
        pool.submit(abs, 1).result()      # with fork, the first task starts every worker
        print("ready", flush=True)
        sys.stdin.read()
""")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def test_forked_workers_die_with_their_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", WORKERS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
    workers = children_of(parent.pid)
    assert len(workers) == 2 and all(pid_running(w) for w in workers)
    parent.kill()
    parent.wait()
    for worker in workers:
        wait_for(lambda w=worker: _gone(w), timeout=5, what=f"worker {worker} to die with its parent")


HOLDER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from backupctl.locking import repository_lock
    with repository_lock(Path(sys.argv[1]), "repo-x"):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_a_lock_whose_holder_died_is_taken_over_with_one_line_naming_it(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert lock_path(tmp_path, "repo-x").stat().st_mode & 0o777 == 0o600
    holder.kill()
    holder.wait()
    caplog.set_level(logging.INFO, logger="backupctl.locking")
    with repository_lock(tmp_path, "repo-x"):
        pass
    took = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert len(took) == 1 and f"dead pid {holder.pid} " in took[0] and "(command backupctl " in took[0], took
    caplog.clear()
    with repository_lock(tmp_path, "repo-x"):      # released normally last time: nothing to take over
        pass
    assert not [r for r in caplog.records if "took over" in r.getMessage()]


def test_start_gates_of_dead_owners_are_removed_and_live_ones_kept(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = tmp_path / f"backupctl-gate-{ended.pid}.12345-abc"
    me = os.getpid()
    live = tmp_path / f"backupctl-gate-{me}.{process.start_ticks(me)}-def"
    reused = tmp_path / f"backupctl-gate-{me}.1-ghi"      # my pid, but a process that started at another time
    unknown = tmp_path / "backupctl-gate-k2j4h5g6"         # an older backupctl's: no owner to ask
    for folder in (dead, live, reused, unknown):
        folder.mkdir()
        (folder / "restic-waits-here").touch()
    assert sorted(remove_dead_gates()) == sorted([dead, reused])
    assert live.exists() and unknown.exists()
    gate = StartGate(lambda: None)       # a new gate sweeps too, and names its folder after its owner
    try:
        assert gate.path.parent.name.startswith(f"backupctl-gate-{me}.{process.start_ticks(me)}-")
    finally:
        gate.close()


def test_a_program_that_cannot_run_raises_in_the_thread_that_asked() -> None:
    raised: list[BaseException] = []

    def start() -> None:
        try:
            process.start(["/nonexistent/program"])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            raised.append(exc)

    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
    assert len(raised) == 1 and isinstance(raised[0], FileNotFoundError)
