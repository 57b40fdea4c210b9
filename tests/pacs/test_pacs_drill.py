"""Drill depth `pacs` on real restores: a throw-away Orthanc ingests, is queried over REST and DICOM, and
is stopped; a missing study is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.restore import restore_snapshot
from backupctl.config import Config
from backupctl.dicom.synth import WrittenInstance
from backupctl.pacs.drill import (
    DRILL_AET,
    expected_from_files,
    findscu_study_counts,
    run_pacs_drill,
)
from backupctl.process import pid_alive
from tests.drill_support import Site
from tests.helpers import assert_one_line_error, cli, make_installation
from tests.pacs.conftest import PACS_SPEC

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def restored_snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, Path]:
    """A real backup of a small archive, restored: (config, archive, restored copy of the archive)."""
    root = tmp_path_factory.mktemp("drill-install")
    config = make_installation(root, PACS_SPEC)
    outcome = run_backup(config, "pacs", replicate=False)
    restored = root / "restored"
    restore_snapshot(config, outcome.snapshot_id, restored)
    return config, root / "archive", restored / (root / "archive").relative_to("/")


@pytest.mark.slow
def test_pacs_drill_passes_then_names_the_study_removed_from_the_restore(
        restored_snapshot: tuple[Config, Path, Path], tmp_path: Path) -> None:
    _, archive, restored = restored_snapshot
    expected = expected_from_files(sorted(archive.rglob("*.dcm")))   # stands for the snapshot's manifest
    good = run_pacs_drill(restored, tmp_path / "good", expected=expected)
    assert good.ok, good.findings
    assert good.found["instances"] == good.expected["instances"] == 12 == good.matched_instances
    assert good.found["studies"] == 4 and good.findscu_studies == 4
    assert good.md5_checked == 12 and good.md5_failed == 0 and good.sampled == 5
    assert set(good.phases) == {"start", "ingest", "query", "verify", "stop"}
    assert good.orthanc_pid is not None and not pid_alive(good.orthanc_pid)

    damaged = tmp_path / "damaged"
    shutil.copytree(restored, damaged)
    patient = sorted(p for p in damaged.iterdir() if p.is_dir())[0]
    gone = sorted(patient.iterdir())[0]
    shutil.rmtree(gone)                               # one study's files lost from the restored copy
    bad = run_pacs_drill(damaged, tmp_path / "bad", expected=expected)
    assert not bad.ok
    kinds = {(f.kind, f.subject) for f in bad.errors}
    assert ("missing-study", gone.name) in kinds and ("findscu-missing-study", gone.name) in kinds
    assert {f.subject for f in bad.errors} == {gone.name}   # only that study is blamed
    assert bad.matched_instances == 9
    assert not pid_alive(bad.orthanc_pid)


def test_drill_without_orthanc_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             pacs_archive: tuple[Path, list[WrittenInstance]]) -> None:
    monkeypatch.setenv("BACKUPCTL_ORTHANC", "/nonexistent/Orthanc")
    result = run_pacs_drill(pacs_archive[0], tmp_path / "w")
    assert not result.ok and result.error and "Orthanc is not installed" in result.error
    assert [f.kind for f in result.errors] == ["pacs-unavailable"] and result.orthanc_pid is None


def test_drill_on_an_orthanc_that_cannot_start_fails_and_leaves_no_process(tmp_path: Path) -> None:
    # an Orthanc-layout restore whose index is damaged: Orthanc refuses to start
    layout = tmp_path / "restored" / "var" / "pacs" / "job"
    (layout / "index").mkdir(parents=True)
    (layout / "storage").mkdir()
    (layout / "index" / "index").write_bytes(b"garbage" * 500)
    (layout / "backupctl-orthanc.json").write_text('{"kind": "orthanc", "format": 1}')
    result = run_pacs_drill(tmp_path / "restored", tmp_path / "w", start_timeout=20)
    assert result.mode == "orthanc-index" and not result.ok
    assert result.error and "Orthanc" in result.error
    assert [f.kind for f in result.errors] == ["pacs-failed"]
    assert not _orthanc_processes_under(tmp_path)


def _orthanc_processes_under(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "Orthanc" in cmd and str(root) in cmd:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_pacs_drill_command_on_a_restored_folder(restored_snapshot: tuple[Config, Path, Path],
                                                 tmp_path: Path) -> None:
    config, archive, restored = restored_snapshot
    result = cli(config, "pacs", "drill", str(restored), "--expected-from", str(archive), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["matched_instances"] == 12 and report["expected_source"] == f"files in {archive}"
    assert not any((config.state_dir / "scratch").iterdir())      # its scratch folder is gone


def test_drill_runner_step_ingests_queries_and_names_the_missing_study(
        tmp_path: Path, pacs_archive: tuple[Path, list[WrittenInstance]]) -> None:
    from backupctl.pacs.drill import OrthancDrillStep
    from backupctl.progress import NullProgress

    written = pacs_archive[1]
    studies: dict[str, int] = {}
    for w in written:
        studies[w.study_uid] = studies.get(w.study_uid, 0) + 1
    lost = written[0].study_uid
    files = []
    for w in written:
        if w.study_uid != lost:                        # that study's files are lost from the restore
            shutil.copy(w.path, tmp_path / w.path.name)
            files.append((f"/archive/{w.path.name}", tmp_path / w.path.name))
    step = OrthancDrillStep(None, tmp_path / "scratch", sample=100)
    try:
        ingested = step.ingest(files, NullProgress())
        assert ingested.files == len(files) and not ingested.findings
        changed = files[-1][1]                         # the restored file changes after it was sent
        data = bytearray(changed.read_bytes())
        data[-1] ^= 0xFF
        changed.write_bytes(bytes(data))
        queried = step.query(studies, NullProgress())
        assert step.orthanc is not None
        pid, port = step.orthanc.pid, step.orthanc.dicom_port
        # its DICOM port answers C-FIND to backupctl's own AET only, and only when called by its AET
        assert len(findscu_study_counts(port, DRILL_AET)) == 3
        assert findscu_study_counts(port, DRILL_AET, calling_aet="INTRUDER") == {}
        assert findscu_study_counts(port, "WRONGAET") == {}
    finally:
        step.close()
    assert queried.checked == 4
    assert [(f.kind, f.path) for f in queried.findings] == [("not-found", lost), ("sample-mismatch", files[-1][0])]
    assert pid is not None and not pid_alive(pid) and step.orthanc is None


def test_drill_runner_step_without_orthanc_raises_a_clear_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from backupctl.errors import OrthancNotInstalled
    from backupctl.pacs.drill import OrthancDrillStep
    from backupctl.progress import NullProgress

    monkeypatch.setenv("BACKUPCTL_ORTHANC", "/nonexistent/Orthanc")
    step = OrthancDrillStep(None, tmp_path)
    with pytest.raises(OrthancNotInstalled) as exc:
        step.ingest([], NullProgress())
    step.close()
    assert "not installed" in exc.value.one_line() and step.orthanc is None


@pytest.mark.slow
def test_drill_runner_at_depth_pacs_passes_and_without_orthanc_fails_clearly(site: Site) -> None:
    from backupctl.actions.drill import run_drill

    config = site.define("deep", 'job = "pacs"\ndepth = "pacs"\nscope = "all"\n')
    result = run_drill(config, "deep", seed=1)
    assert result.passed, result.first_failures()
    checks = {c.name: c for c in result.checks}
    assert checks["ingest"].status == "pass" and checks["query"].status == "pass"
    assert checks["query"].checked == 6                           # the 6 studies of the drill site
    assert {p.name: p.status for p in result.phases}["query"] == "ok"
    assert not _orthanc_processes_under(site.scratch_root)
    # the PACS capability is installed, the Orthanc binary is not: the drill runs, is recorded as failed and
    # says why; no scratch and no process is left
    failed = cli(config, "drill", "run", "deep", env={"BACKUPCTL_ORTHANC": "/nonexistent/Orthanc"})
    assert_one_line_error(failed, 1, "Orthanc is not installed")
    assert not any(site.scratch_root.iterdir())


@pytest.mark.slow
def test_demo_pacs_key_is_measured_and_holds(restored_snapshot: tuple[Config, Path, Path], tmp_path: Path) -> None:
    from backupctl.pacs.demo import demo_pacs

    config, archive, _ = restored_snapshot
    result = demo_pacs(config, tmp_path / "demo", archive)
    assert result["ok"], result
    assert result["instances_stored"] == result["instances_restored"] == result["instances_matched"] == 12
    assert 0 < result["downtime_seconds"] < 60 and result["orthanc_running_after_backup"] is True
    assert result["drill"]["mode"] == "orthanc-index" and result["drill"]["md5_checked"] == 12
    assert not _orthanc_processes_under(tmp_path)
