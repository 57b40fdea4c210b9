"""restic's start gate: the manifest is built while restic opens the repository, and restic reads no source
before it is done (`restic.StartGate`: an empty FIFO given as `--exclude-file`, read after the key derivation
and the lock, before any source). Real restic throughout."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from backupctl import process
from backupctl.actions.backup import run_backup
from backupctl.config import Config
from backupctl.errors import BackupctlError, ResticError, WrongPassword
from backupctl.process import pid_running
from backupctl.repository import staging_restic
from backupctl.restic import Restic
from backupctl.secrets import PasswordSource
from tests.helpers import wait_for
from tests.test_unlock_skip import wrong_password_restic


def _locks(config: Config) -> list[Path]:
    return list((config.staging_repository / "locks").iterdir())


def _snapshot_files(config: Config) -> set[str]:
    return {p.name for p in (config.staging_repository / "snapshots").iterdir()}


@pytest.fixture(autouse=True)
def own_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates made here go to this test's folder: other tests' backups run meanwhile (xdist)."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _gates() -> list[Path]:
    """The gate folders left in this test's temporary folder."""
    return list(Path(tempfile.gettempdir()).glob("backupctl-gate-*"))


def _restic_waits_at_the_gate() -> bool:
    """A restic process holds a FIFO of this test's temporary folder open: it opened the repository and now
    waits at the gate."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if (fd_dir.parent / "comm").read_text().strip() != "restic":
                continue
            if any(str(fd.readlink()).startswith(tempfile.gettempdir()) for fd in fd_dir.iterdir()):
                return True
        except OSError:      # the process ended meanwhile
            continue
    return False


def test_restic_reads_the_sources_only_once_the_work_before_it_is_done(installation: Config,
                                                                        tmp_path: Path) -> None:
    restic = staging_restic(installation)
    source = tmp_path / "late-source"
    source.mkdir()

    def work() -> None:
        # restic has opened the repository, locked it and waits at the gate: only now does the file it must
        # store appear (had restic listed the folder before the gate, the snapshot would lack it)
        assert _locks(installation)
        (source / "written-while-restic-waits.txt").write_text("complete")

    def work_once_restic_waits() -> None:
        wait_for(_restic_waits_at_the_gate, what="restic to reach the gate")
        work()

    summary = restic.backup([source], before_reading=work_once_restic_waits)
    assert summary.total_files == 1 and summary.snapshot is not None
    out = tmp_path / "restored"
    restic.run(["restore", summary.snapshot.id, "--target", str(out)])
    assert (out / source.relative_to("/") / "written-while-restic-waits.txt").read_text() == "complete"
    assert not _locks(installation) and not _gates()


class BuildFailed(BackupctlError):
    """The manifest could not be built (what the work raises here)."""


@pytest.mark.parametrize("failure", [BuildFailed, KeyboardInterrupt])
@pytest.mark.parametrize("when", ["while restic starts", "while restic waits at the gate"])
def test_work_that_fails_turns_restic_away_with_no_snapshot_and_no_lock(installation: Config, tmp_path: Path,
                                                                         failure: type[BaseException],
                                                                         when: str) -> None:
    restic = staging_restic(installation)
    before = _snapshot_files(installation)

    def work() -> None:
        if when == "while restic waits at the gate":
            wait_for(_restic_waits_at_the_gate, what="restic to reach the gate")
        raise failure("the manifest could not be built")

    with pytest.raises(failure, match="the manifest could not be built"):
        restic.backup([installation.base], before_reading=work)
    assert _snapshot_files(installation) == before
    # restic ended on the refused pattern: a restic killed after the grace time would have left its lock
    assert not _locks(installation) and not _gates()


def test_restic_that_cannot_even_start_leaves_no_gate_behind(installation: Config, tmp_path: Path) -> None:
    restic = Restic(installation.staging_repository, PasswordSource(file=tmp_path / "no-such-password-file"),
                    no_cache=True)
    with pytest.raises(BackupctlError):
        restic.backup([installation.base], before_reading=lambda: None)
    assert not _gates()
    assert not [t for t in threading.enumerate() if t.name == "backupctl-gate"]


def test_restic_failing_before_the_gate_is_reported_and_nothing_hangs(installation: Config,
                                                                        tmp_path: Path) -> None:
    ran: list[bool] = []
    with pytest.raises(WrongPassword):
        wrong_password_restic(installation, tmp_path).backup([installation.base],
                                                             before_reading=lambda: ran.append(True))
    assert ran == [True] and not _gates()


def test_a_backup_reports_how_long_restic_waited_for_the_manifest(installation: Config) -> None:
    outcome = run_backup(installation, "pacs")
    assert outcome.manifest is not None
    # restic waited at most as long as the manifest took to build (the rest overlapped its start)
    assert 0 <= outcome.manifest["restic_waited_seconds"] <= outcome.manifest["seconds"]
    assert json.loads(json.dumps(outcome.manifest)) == outcome.manifest   # plain figures, ready for --json


def _kill_restic_at_the_gate() -> None:
    wait_for(_restic_waits_at_the_gate, what="restic to reach the gate")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if (fd_dir.parent / "comm").read_text().strip() == "restic" and any(
                    str(fd.readlink()).startswith(tempfile.gettempdir()) for fd in fd_dir.iterdir()):
                os.kill(int(fd_dir.parent.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.mark.parametrize("operation", ["check", "forget --prune", "backup", "restore"])
def test_the_lock_of_a_killed_restic_is_removed_by_our_next_operation_that_locks(installation: Config,
                                                                                  tmp_path: Path,
                                                                                  operation: str) -> None:
    restic = staging_restic(installation)
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    first = restic.backup([source])
    assert first.snapshot is not None
    with pytest.raises(ResticError, match="killed by signal 9"):
        restic.backup([source], before_reading=_kill_restic_at_the_gate)   # as if killed with its backupctl
    assert _locks(installation), "restic was killed holding its lock (else this test proves nothing)"
    fresh = staging_restic(installation)
    if operation == "check":
        fresh.check()
    elif operation == "forget --prune":
        fresh.forget(tags=[], keep={"keep_last": 1})
    elif operation == "backup":
        assert fresh.backup([source]).snapshot is not None
    else:
        fresh.restore(first.snapshot.id, tmp_path / "restored")
    assert not _locks(installation)


def test_an_interruption_while_restic_is_being_started_turns_it_away_at_the_gate(
        installation: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    restic = staging_restic(installation)
    before = _snapshot_files(installation)
    started: list[int] = []
    real_start = process.start

    def start_then_ctrl_c(*args: object, **kwargs: object) -> process.Child:
        child = real_start(*args, **kwargs)  # type: ignore[arg-type]
        started.append(child.pid)
        signal.raise_signal(signal.SIGINT)   # Ctrl-C in the instant restic has just been started
        return child

    monkeypatch.setattr(process, "start", start_then_ctrl_c)
    worked: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        restic.backup([installation.base], before_reading=lambda: worked.append(True))
    assert started and not worked
    assert not pid_running(started[0])       # stopped and reaped, not left running on its own
    assert _snapshot_files(installation) == before
    assert not _locks(installation) and not _gates()
