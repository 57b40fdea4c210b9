"""The `orthanc` job source on a real, running Orthanc: consistent copy, bounded downtime, always restarted."""

from __future__ import annotations

import errno
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupctl.actions.backup import BackupOutcome, run_backup
from backupctl.actions.init import initialize
from backupctl.actions.restore import restore_snapshot
from backupctl.catalog import open_catalog
from backupctl.catalog import pacs as pacs_rows
from backupctl.catalog import runs as run_rows
from backupctl.config import Config, load_config
from backupctl.dicom.synth import WrittenInstance
from backupctl.errors import (
    DowntimeExceeded,
    Interrupted,
    OrthancError,
    OrthancStopError,
    SourceUnreadable,
)
from backupctl.pacs import source as pacs_source
from backupctl.pacs.drill import expected_from_files, run_pacs_drill
from backupctl.pacs.orthanc import OrthancClient, find_orthanc, free_port
from backupctl.process import pid_alive
from backupctl.repository import staging_restic
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, wait_for
from tests.pacs.support import LivePacs, StoringLoop

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def install_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    initialize(root, CONFIG_TEXT)
    return root


@pytest.fixture
def make_config(install_root: Path, live_pacs: LivePacs) -> Iterator:
    """Write jobs/pacs.toml for the live PACS (with overrides) and load the config."""

    def make(**overrides: object) -> Config:
        (install_root / "jobs" / "pacs.toml").write_text(live_pacs.job_toml(**overrides))
        return load_config(install_root / "backupctl.toml")

    yield make


@dataclass
class BusyBackup:
    config: Config
    outcome: BackupOutcome
    acked: list[tuple[str, str]]          # (SOP UID, UTC time) acknowledged by the live PACS
    acked_after: int                      # acknowledgements once the backup returned
    refused: int
    pid_before: int | None


@pytest.fixture(scope="module")
def busy_backup(install_root: Path, live_pacs_session: LivePacs,
                more_instances: list[WrittenInstance]) -> BusyBackup:
    """One backup of the live PACS taken while storescu keeps storing into it; shared by the tests that
    look at the snapshot in different ways."""
    pacs = live_pacs_session
    if pacs.pid() is None:
        pacs.start()
    (install_root / "jobs" / "pacs.toml").write_text(pacs.job_toml())
    config = load_config(install_root / "backupctl.toml")
    pid_before = pacs.pid()
    with StoringLoop(pacs, [(w.path, w.sop_uid) for w in more_instances]) as loop:
        wait_for(lambda: len(loop.acked) >= 3, timeout=60, what="storescu to store into the live PACS")
        outcome = run_backup(config, "pacs", replicate=False)
        acked_at_end = len(loop.acked)
        wait_for(lambda: len(loop.acked) > acked_at_end, timeout=60, what="the PACS to accept stores again")
    return BusyBackup(config, outcome, list(loop.acked), len(loop.acked) - acked_at_end, loop.refused, pid_before)


def _last_run_and_copy(config: Config) -> tuple[dict, dict | None]:
    with open_catalog(config.catalog_path) as catalog:
        run = run_rows.list_runs(catalog, "pacs", limit=1)[0]
        return run, pacs_rows.copy_for_run(catalog, run["id"])


def _snapshot_count(config: Config) -> int:
    return len(staging_restic(config).snapshots())


def _restore_layout(config: Config, snapshot_id: str, scratch: Path) -> Path:
    restored = scratch / "restored"
    if not restored.exists():
        restore_snapshot(config, snapshot_id, restored)
    return next(restored.rglob(pacs_source.MARKER)).parent


@pytest.mark.slow
def test_backup_of_a_busy_orthanc_keeps_every_acknowledged_instance(
        busy_backup: BusyBackup, live_pacs: LivePacs, pacs_archive: tuple[Path, list[WrittenInstance]],
        tmp_path: Path) -> None:
    config, outcome = busy_backup.config, busy_backup.outcome
    copy = outcome.pacs
    assert outcome.status == "success" and copy is not None and copy["status"] == "ok"
    assert copy["restarted_at"] is not None and 0 < copy["downtime_seconds"] < 60
    assert copy["storage_files"] >= len(pacs_archive[1])
    # Orthanc runs again (a new process, since it was stopped for the copy), stores again, and the copy
    # folder is gone
    assert busy_backup.acked_after >= 1
    assert live_pacs.pid() is not None and live_pacs.pid() != busy_backup.pid_before
    assert not (config.state_dir / "pacs" / "pacs").exists()
    # a fresh Orthanc on the restored index + storage holds every instance acknowledged before the stop:
    # the drill checks it holds exactly what the restored storage files are (REST, C-FIND, MD5 of each)
    layout = _restore_layout(config, outcome.snapshot_id, tmp_path)
    restored = expected_from_files(p for p in (layout / "storage").rglob("*") if p.is_file())
    before_stop = {uid for uid, at in busy_backup.acked if at < copy["stopped_at"]}
    assert before_stop, "storescu should have stored some instances before the stop"
    assert {w.sop_uid for w in pacs_archive[1]} | before_stop <= set(restored.instances)
    drill = run_pacs_drill(tmp_path / "restored", tmp_path / "drill", expected=restored)
    assert drill.ok and drill.mode == "orthanc-index", drill.findings
    assert drill.found["instances"] == drill.matched_instances == len(restored.instances)
    assert busy_backup.refused >= 1 or len(before_stop) == len(busy_backup.acked)   # it saw the downtime
    # the snapshot's layout: marker, index copied (not linked into storage), config with private credentials
    marker = json.loads((layout / pacs_source.MARKER).read_text())
    assert marker["kind"] == "orthanc" and marker["source"]["storage_dir"] == str(live_pacs.storage)
    assert marker["copy"]["downtime_seconds"] > 0
    assert (layout / "index" / "index").is_file() and (layout / "config" / "orthanc.json").is_file()
    assert (layout / "config" / "credentials.json").stat().st_mode & 0o077 == 0
    assert not list((layout / "storage").glob("index*"))


def test_failing_stop_command_fails_the_run_and_orthanc_keeps_running(
        make_config, live_pacs: LivePacs, install_root: Path) -> None:
    config = make_config(stop_command=["/bin/sh", "-c", "echo 'unit not found' >&2; exit 5"])
    pid, snapshots = live_pacs.pid(), _snapshot_count(config)
    with pytest.raises(OrthancStopError) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "exited 5" in exc.value.one_line() and "unit not found" in exc.value.one_line()
    run, copy = _last_run_and_copy(config)
    assert run["status"] == "failed" and "stop command" in run["error"]
    assert copy is not None and copy["status"] == "failed"
    assert _snapshot_count(config) == snapshots            # nothing half-written recorded
    assert live_pacs.pid() == pid and live_pacs.client().system()
    assert not (config.state_dir / "pacs" / "pacs").exists()
    # the same through the CLI: one line, exit 1; the failed copy is in the downtime history
    result = cli(config, "backup", "run", "pacs", "--no-replicate")
    assert_one_line_error(result, 1, "stop command")
    copies = json.loads(cli(config, "pacs", "copies", "--json", check=True).stdout)
    assert copies[0]["status"] == "failed" and "exited 5" in copies[0]["error"]
    checked = json.loads(cli(config, "pacs", "check", "pacs", "--json", check=True).stdout)
    assert checked["ok"] and checked["index_lock_holder"] == live_pacs.pid() and checked["version"] == "1.10.1"


def test_stop_slower_than_max_downtime_aborts_and_orthanc_answers(make_config, live_pacs: LivePacs) -> None:
    config = make_config(stop_command=["sleep", "30"], max_downtime_seconds=1.5)
    snapshots = _snapshot_count(config)
    with pytest.raises(OrthancStopError) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "timed out" in exc.value.one_line()
    assert _snapshot_count(config) == snapshots
    assert live_pacs.client().system()


@pytest.mark.slow
def test_orthanc_not_back_within_limit_is_started_again_and_run_fails(
        make_config, live_pacs: LivePacs, tmp_path: Path) -> None:
    # the first start "succeeds" without starting anything (a lost start); the second really starts
    flaky = tmp_path / "flaky-start.sh"
    flag = tmp_path / "first-start-done"
    flaky.write_text(f'#!/bin/sh\nif [ ! -e "{flag}" ]; then touch "{flag}"; exit 0; fi\n'
                     f'exec "{live_pacs.start_script}"\n')
    flaky.chmod(0o755)
    config = make_config(start_command=[str(flaky)], max_downtime_seconds=8)
    snapshots = _snapshot_count(config)
    with pytest.raises(DowntimeExceeded) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "second start" in exc.value.one_line()
    assert live_pacs.pid() is not None and live_pacs.client().system()
    assert _snapshot_count(config) == snapshots
    run, copy = _last_run_and_copy(config)
    assert run["status"] == "failed" and copy is not None and copy["downtime_seconds"] >= 8


def test_copy_failure_while_stopped_still_restarts_orthanc(
        make_config, live_pacs: LivePacs, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(stop_command=[str(live_pacs.stop_script)])

    def disk_full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pacs_source, "copy_index", disk_full)   # fault injection in our own copy step
    snapshots = _snapshot_count(config)
    with pytest.raises(OrthancError) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "No space left" in exc.value.one_line()
    assert live_pacs.pid() is not None and live_pacs.client().system()
    assert _snapshot_count(config) == snapshots
    assert not (config.state_dir / "pacs" / "pacs").exists()


def test_interrupt_while_stopped_restarts_orthanc(
        make_config, live_pacs: LivePacs, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(stop_command=[str(live_pacs.stop_script)])

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pacs_source, "copy_config", ctrl_c)
    with pytest.raises(Interrupted):
        run_backup(config, "pacs", replicate=False)
    assert live_pacs.pid() is not None and live_pacs.client().system()
    run, copy = _last_run_and_copy(config)
    assert run["status"] == "interrupted"
    assert copy is not None and copy["status"] == "failed" and "interrupted" in copy["error"]
    assert copy["restarted_at"] is not None and copy["downtime_seconds"] > 0


@pytest.mark.slow
def test_stopped_orthanc_is_left_stopped_unless_backupctl_stopped_it(
        make_config, live_pacs: LivePacs, tmp_path: Path, pacs_archive: tuple[Path, list[WrittenInstance]]) -> None:
    config = make_config(stop_command=[str(live_pacs.stop_script)])
    live_pacs.kill()
    outcome = run_backup(config, "pacs", replicate=False)
    assert live_pacs.pid() is None                         # an operator stopped it: it stays stopped
    assert outcome.pacs is not None and outcome.pacs["was_running"] == 0
    assert outcome.pacs["downtime_seconds"] == 0
    layout = _restore_layout(config, outcome.snapshot_id, tmp_path)
    assert (layout / "index" / "index").is_file()
    stored = [p for p in (layout / "storage").rglob("*") if p.is_file()]
    assert len(stored) == outcome.pacs["storage_files"] >= len(pacs_archive[1])
    # what a run killed (SIGKILL, power loss) while Orthanc was down leaves: the flag, a stopped Orthanc.
    # The next run starts it first, then copies it as usual (stop, copy, start)
    flag = config.state_dir / "pacs" / "pacs.orthanc-stopped"
    flag.write_text('{"pid": 1, "stopped_at": "2026-01-01T02:00:00+00:00"}')
    again = run_backup(config, "pacs", replicate=False)
    assert again.status == "success" and again.pacs is not None and again.pacs["was_running"] == 1
    assert live_pacs.pid() is not None and not flag.exists()


def test_bad_orthanc_source_is_refused_before_anything_stops(make_config, live_pacs: LivePacs,
                                                             tmp_path: Path) -> None:
    config = make_config(snapshot_dir="/dev/shm/backupctl-test-elsewhere")
    with pytest.raises(SourceUnreadable) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "same filesystem" in exc.value.one_line() or "not on the filesystem" in exc.value.one_line()
    config = make_config(storage_dir=str(tmp_path / "nowhere"))
    result = cli(config, "backup", "run", "pacs", "--no-replicate")
    assert_one_line_error(result, 2, "storage_dir", "does not exist")
    assert live_pacs.client().system()


@pytest.mark.slow
def test_pacs_drill_on_an_orthanc_copy_names_the_study_whose_files_are_lost(
        busy_backup: BusyBackup, tmp_path: Path) -> None:
    layout = _restore_layout(busy_backup.config, busy_backup.outcome.snapshot_id, tmp_path)
    files = sorted(p for p in (layout / "storage").rglob("*") if p.is_file())
    expected = expected_from_files(files)                     # stands for the snapshot's manifest
    victim = sorted(expected.studies())[0]
    for inst in expected.studies()[victim].values():
        Path(inst.path).unlink()                              # that study's stored files are lost
    result = run_pacs_drill(tmp_path / "restored", tmp_path / "drill", expected=expected)
    assert result.mode == "orthanc-index" and not result.ok
    assert result.error is None, result.findings
    assert "ingest" not in result.phases and result.found["instances"] == len(expected.instances)
    assert {f.subject for f in result.errors} == {victim}
    assert result.md5_failed == len(expected.studies()[victim]) and result.md5_checked == len(expected.instances)
    assert not pid_alive(result.orthanc_pid)


@pytest.mark.slow
def test_as_orthanc_lays_out_an_orthanc_that_starts_with_the_same_studies(
        busy_backup: BusyBackup, live_pacs: LivePacs, tmp_path: Path) -> None:
    config, outcome = busy_backup.config, busy_backup.outcome
    dest = tmp_path / "orthanc"
    result = cli(config, "restore", outcome.snapshot_id[:8], "--as-orthanc", str(dest), "--json")
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    stored = expected_from_files(p for p in (dest / "storage").rglob("*") if p.is_file()).counts()
    assert made["start_command"] == f"Orthanc {dest / 'config'}" and made["storage_files"] == stored["instances"]
    cfg = json.loads((dest / "config" / "orthanc.json").read_text())
    assert cfg["StorageDirectory"] == str(dest / "storage") and cfg["IndexDirectory"] == str(dest / "index")
    # start it as an operator would (on other ports than the live PACS), with the restored credentials
    cfg["HttpPort"], cfg["DicomPort"] = free_port(), free_port()
    (dest / "config" / "orthanc.json").write_text(json.dumps(cfg))
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([str(find_orthanc()), str(dest / "config")], stdout=log, stderr=log)
    try:
        client = OrthancClient(f"http://127.0.0.1:{cfg['HttpPort']}", live_pacs.credentials)
        client.wait_ready(time.monotonic() + 30)
        assert client.counts() == {k: stored[k] for k in ("patients", "studies", "series", "instances")}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
