"""Verification end to end with real restic, real media copies and real DICOM files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.restore import restore_snapshot
from backupctl.catalog import open_catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.manifest import DICOM, MANIFEST_NAME, SIGNATURE_NAME
from backupctl.repofiles import list_repository
from backupctl.repository import staging_restic
from backupctl.restic import job_tag
from backupctl.signing import generate_key
from backupctl.sources import check_sources
from backupctl.verify.repo import in_slice
from backupctl.verify.restore import verify_restore
from backupctl.verify.restored import verify_restored_tree
from backupctl.verify.run import VerifyOptions, run_verify
from backupctl.verify.snapshot_manifest import (
    prepare_manifest,
    read_snapshot_manifest,
    record_snapshot_manifest,
    sources_only,
    trusted_key,
)
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, make_installation

pytestmark = pytest.mark.slow

SPEC = ArchiveSpec(patients=2, studies_per_patient=2, series_per_study=2, instances_per_series=3,
                   rows=32, columns=32, seed=21)
SLICES = 4
VERIFY_CONFIG = CONFIG_TEXT + f"\n[verify]\nread_data_slices = {SLICES}\ndecode_sample = 5\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One installation with two snapshots (the second adds a study), copied to the offline disk."""
    root = tmp_path_factory.mktemp("verify") / "base"
    config = make_installation(root, SPEC, VERIFY_CONFIG)
    cli(config, "media", "init", "offline", "--label", "DISK-A", check=True)
    assert run_backup(config, "pacs").replicated_ok
    write_archive(root / "archive" / "late", ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                         instances_per_series=2, rows=32, columns=32, seed=22))
    assert run_backup(config, "pacs").replicated_ok
    return root


@pytest.fixture
def inst(base: Path, tmp_path: Path) -> Config:
    """A private copy of the base installation (its job still reads the base archive, never changed)."""
    root = tmp_path / "inst"
    shutil.copytree(base, root, symlinks=True)
    return load_config(root / "backupctl.toml")


def _flip(path: Path, offset: int, keep_mtime: bool = True) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _latest_manifest(config: Config):  # noqa: ANN202
    restic = staging_restic(config)
    snap = max(restic.snapshots(tags=[job_tag("pacs")]), key=lambda s: s.time)
    return snap, read_snapshot_manifest(restic, snap, trusted_key(config))


def test_snapshot_carries_its_signed_manifest_and_the_catalog_indexes_it(inst: Config) -> None:
    snap, got = _latest_manifest(inst)
    archive = inst.job("pacs").sources[0]
    dicom_files = sorted(str(p) for p in archive.rglob("*.dcm"))
    assert sorted(e.path for e in got.manifest.entries if e.kind == DICOM) == dicom_files
    with open_catalog(inst.catalog_path) as catalog:
        row = verify_rows.manifest_of(catalog, snap.id)
        studies = {s["study_uid"] for s in verify_rows.studies_of(catalog, snap.id)}
    assert row is not None and row["sha256"] == got.sha256 and row["dicom"] == len(dicom_files)
    assert studies == set(got.manifest.studies()) and len(studies) == 5


def test_all_levels_pass_on_intact_copies_and_coverage_is_recorded(inst: Config) -> None:
    result = cli(inst, "verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    levels = {r["level"]: r for r in report["levels"]}
    assert report["ok"] and set(levels) == {"repo", "replicas", "restore"}
    assert levels["restore"]["checked"] == 26 and levels["restore"]["dicom_parsed"] == 26
    assert levels["restore"]["decoded"] == 5 and levels["replicas"]["checked"] > 0
    status = json.loads(cli(inst, "verify", "--status", "--json", check=True).stdout)
    coverage = {c["what"]: c for c in status["coverage"]}
    assert coverage["studies"]["never_verified"] == 0 and coverage["studies"]["total"] == 5
    assert coverage["replicas"]["never_verified"] == 0
    assert coverage["packs"]["never_verified"] > 0          # one slice of four was read, not all
    assert status["ok"]                                       # nothing is older than the bound yet


def test_rotating_slices_read_every_pack_within_n_runs(inst: Config) -> None:
    packs = {f.name for f in list_repository(inst.staging_repository) if f.kind == "data"}
    slices = []
    for _ in range(SLICES):
        report = run_verify(inst, ["repo"])
        assert report.ok, report.first_failures()
        slices.append(report.results[0].figures["slice"])
    assert sorted(slices) == [f"{n}/{SLICES}" for n in range(1, SLICES + 1)]
    with open_catalog(inst.catalog_path) as catalog:
        read = verify_rows.pack_reads(catalog, str(inst.staging_repository))
    assert packs <= set(read) and all(ok for _, ok in read.values())
    assert run_verify(inst, ["repo"]).results[0].figures["slice"] == slices[0]   # the oldest slice again


def test_flipped_byte_in_a_pack_is_found_by_the_slice_that_reads_it(inst: Config) -> None:
    data = [f for f in list_repository(inst.staging_repository) if f.kind == "data"]
    victim = max(data, key=lambda f: f.size)
    _flip(inst.staging_repository / victim.rel, victim.size // 2)
    found_in = []
    for _ in range(SLICES):
        result = run_verify(inst, ["repo"]).results[0]
        if not result.ok:
            found_in.append(result.figures["slice"])
            assert [f.subject for f in result.errors] == [victim.name]
            assert result.errors[0].kind == "pack-damaged"
    (expected,) = [n for n in range(1, SLICES + 1) if in_slice(victim.name, n, SLICES)]
    assert found_in == [f"{expected}/{SLICES}"]             # restic read it exactly where we said it would
    status = cli(inst, "verify", "--status")
    assert status.returncode == 1 and "packs" in status.stderr


def test_flipped_byte_in_the_media_copy_is_named(inst: Config) -> None:
    copy = inst.base / "disk" / "backupctl" / "repository"
    victim = [f for f in list_repository(copy) if f.kind == "data"][0]
    _flip(copy / victim.rel, 100)
    result = cli(inst, "verify", "--level", "replicas")
    assert_one_line_error(result, 1, "altered", victim.rel)


def test_damage_in_restored_files_is_detected_and_named(inst: Config, tmp_path: Path) -> None:
    snap, got = _latest_manifest(inst)
    restore_snapshot(inst, snap.id, tmp_path / "r")
    dicom = [e for e in got.manifest.entries if e.kind == DICOM]
    pixel, header, cut, gone = dicom[:4]

    def restored(e) -> Path:  # noqa: ANN001
        return tmp_path / "r" / e.path.lstrip("/")

    _flip(restored(pixel), pixel.size - 10)                                        # inside pixel data
    _flip(restored(header), restored(header).read_bytes().index(header.dicom["study"].encode()) + 12)
    st = restored(cut).stat()
    restored(cut).chmod(0o644)
    restored(cut).write_bytes(restored(cut).read_bytes()[:-300])
    os.utime(restored(cut), ns=(st.st_atime_ns, st.st_mtime_ns))
    restored(gone).unlink()
    tree = verify_restored_tree(tmp_path / "r", got.manifest, workers=2)
    kinds = {}
    for f in tree.findings:
        kinds.setdefault(f.subject, set()).add((f.severity, f.kind))
    assert kinds.pop(pixel.path) == {("error", "hash-mismatch")}
    assert kinds.pop(header.path) == {("error", "hash-mismatch"), ("error", "uid-mismatch")}
    assert kinds.pop(cut.path) == {("error", "hash-mismatch"), ("error", "truncated")}
    assert kinds.pop(gone.path) == {("error", "missing")}
    assert kinds == {} and not tree.ok
    study = pixel.study
    assert tree.studies[study] is False


def test_truncated_and_non_dicom_source_files_are_reported_as_such(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    archive = tmp_path / "archive"
    good = sorted(archive.rglob("*.dcm"))[0]
    truncated = archive / "broken" / "cut.dcm"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:-700])
    fake = archive / "broken" / "report.dcm"
    fake.write_bytes(b"this is a scanned letter, not DICOM\n" * 30)
    run_backup(config, "pacs", replicate=False)
    result = run_verify(config, ["restore"]).results[0]
    by_path = {f.subject: f for f in result.findings}
    assert by_path[str(truncated)].kind == "truncated" and by_path[str(fake)].kind == "not-dicom"
    assert {f.severity for f in result.findings} == {"warning"}     # faithful backups of damaged sources
    assert "backup time" in by_path[str(fake)].detail and result.ok
    assert result.checked == 26


def test_manifest_signed_by_another_key_or_altered_is_refused(inst: Config, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other.key")
    result = cli(inst, "verify", "--level", "restore", "--public-key", str(other.path) + ".pub")
    assert_one_line_error(result, 1, "signature", "another key")
    # a snapshot whose manifest signature was tampered with (one character of the signature changed)
    forged = tmp_path / "forged" / ".backupctl-manifest"
    shutil.copytree(inst.state_dir / "manifests" / "pacs" / ".backupctl-manifest", forged)
    doc = json.loads((forged / SIGNATURE_NAME).read_text())
    doc["signature"] = ("A" if doc["signature"][0] != "A" else "B") + doc["signature"][1:]
    (forged / SIGNATURE_NAME).write_text(json.dumps(doc))
    snap = staging_restic(inst).backup([forged], tags=[job_tag("pacs")]).snapshot
    result = cli(inst, "verify", "--level", "restore", "--snapshot", snap.short_id)
    assert_one_line_error(result, 1, "signature", "does not verify")


def _back_up_between(config: Config, before_restic, after_restic) -> tuple:  # noqa: ANN001
    """Manifest pass, `before_restic()`, restic, `after_restic()`, then the cross-check as a backup runs it."""
    job = config.job("pacs")
    paths = check_sources(config, job)
    prepared = prepare_manifest(config, job, paths)
    before_restic()
    restic = staging_restic(config)
    summary = sources_only(restic.backup([*paths, prepared.folder], tags=[job_tag("pacs")]), prepared)
    after_restic()
    snap = summary.snapshot
    with open_catalog(config.catalog_path) as catalog:
        snapshot_rows.record_snapshot(catalog, snapshot_id=snap.id, short_id=snap.short_id, job="pacs",
                                      time=snap.time, run_id=None, size=None, files=None, tags=snap.tags,
                                      paths=snap.paths)
        figures = record_snapshot_manifest(catalog, restic, summary, prepared)
        changed = verify_rows.changed_during_backup(catalog, snap.id)
    return snap, figures, list(changed)


def test_a_file_changed_during_backup_is_marked_not_reported_as_corruption(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    victim = sorted((tmp_path / "archive").rglob("*.dcm"))[3]
    # after the manifest pass, before restic reads: restic's byte count differs from the manifest's
    snap, figures, changed = _back_up_between(
        config, lambda: victim.write_bytes(victim.read_bytes() + b"\0\0"), lambda: None)
    assert figures["changed_during_backup"] == 1 and changed == [str(victim)]
    # without the catalog (a lost backup host), the restored mtime still tells change from damage
    result = verify_restore(config, None, None, _null(), snapshot=snap.id)
    assert [(f.severity, f.kind, f.subject) for f in result.findings] == \
        [("warning", "changed-during-backup", str(victim))]
    assert result.ok


def test_a_file_touched_during_backup_is_marked_though_no_count_differs(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    victim = sorted((tmp_path / "archive").rglob("*.dcm"))[2]
    st = victim.stat()
    # same size, new mtime: only looking again at the sources (then listing the snapshot) can tell
    _, figures, changed = _back_up_between(
        config, lambda: os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000)), lambda: None)
    assert figures["changed_during_backup"] == 1 and changed == [str(victim)]


def test_a_file_changed_after_restic_read_it_is_not_marked(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    victim = sorted((tmp_path / "archive").rglob("*.dcm"))[1]
    created = tmp_path / "archive" / "late.dcm"
    # the sources no longer look as described, but the snapshot holds what the manifest describes
    _, figures, changed = _back_up_between(
        config, lambda: None, lambda: (victim.write_bytes(b"changed later"), created.write_bytes(b"new")))
    assert figures["changed_during_backup"] == 0 and changed == []


def test_a_file_created_during_backup_is_marked(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    created = tmp_path / "archive" / "arrived.dcm"
    _, figures, changed = _back_up_between(config, lambda: created.write_bytes(b"arrived"), lambda: None)
    assert figures["changed_during_backup"] == 1 and changed == [str(created)]


def _null():  # noqa: ANN202
    from backupctl.progress import NullProgress

    return NullProgress()


def test_catalog_rebuild_from_the_offline_copy_alone(inst: Config, tmp_path: Path) -> None:
    with open_catalog(inst.catalog_path) as catalog:
        before = [(s["id"], s["job"], s["time"], s["files"], s["size"]) for s in snapshot_rows.list_snapshots(catalog)]
        index = verify_rows.study_index(catalog)
    refused = cli(inst, "catalog", "rebuild", "--from", "offline")
    assert_one_line_error(refused, 2, "exists")
    staging = inst.staging_repository
    shutil.move(staging, tmp_path / "staging-gone")         # only the offline disk is left
    inst.catalog_path.unlink()
    result = cli(inst, "catalog", "rebuild", "--from", "offline", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["snapshots"] == 2 and report["manifests"] == 2
    with open_catalog(inst.catalog_path) as catalog:
        after = [(s["id"], s["job"], s["time"], s["files"], s["size"]) for s in snapshot_rows.list_snapshots(catalog)]
        assert verify_rows.study_index(catalog) == index
        replicas = snapshot_rows.replicas_of(catalog, after[0][0])
    assert after == before and replicas[0]["target"] == "offline"


def test_find_and_restore_one_study(inst: Config, tmp_path: Path) -> None:
    snap, got = _latest_manifest(inst)
    study = sorted(got.manifest.studies())[0]
    found = json.loads(cli(inst, "find", "--study", study, "--json", check=True).stdout)
    assert [s["id"] for s in found["snapshots"]][0] == snap.id and len(found["snapshots"]) == 2
    result = cli(inst, "restore", "--study", study, "--to", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["verified"] and outcome["snapshot_id"] == snap.id
    restored = sorted("/" + str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                      if p.is_file())
    assert restored == sorted(e.path for e in got.manifest.study_entries(study))
    missing = cli(inst, "find", "--study", "1.2.3.4")
    assert_one_line_error(missing, 2, "in no snapshot")


def test_no_patient_id_in_clear_in_manifest_catalog_logs_or_reports(tmp_path: Path) -> None:
    config = make_installation(tmp_path, SPEC, VERIFY_CONFIG)
    patients = {f"SYN{SPEC.seed:03d}{p:05d}" for p in range(SPEC.patients)}
    sample = next((tmp_path / "archive").rglob("*.dcm")).read_bytes()
    assert any(p.encode() in sample for p in patients)       # the sources do hold them
    outputs = [cli(config, "--debug", "backup", "run", "pacs", "--no-replicate", "--json", check=True),
               cli(config, "--debug", "verify", "--level", "restore", "--level", "repo", "--json", check=True),
               cli(config, "verify", "--status", "--json"),     # exits 1: the medium was never audited
               cli(config, "runs", "--json", check=True)]
    restore_level = json.loads(outputs[1].stdout)["levels"][-1]
    assert restore_level["level"] == "restore" and restore_level["dicom_parsed"] == 24
    texts = [o.stdout + o.stderr for o in outputs]
    stored = [p for p in tmp_path.rglob("*") if p.is_file() and "staging-repo" not in p.parts
              and "archive" not in p.parts and "restic-cache" not in p.parts]
    for path in stored:
        data = path.read_bytes()
        texts.append((gzip.decompress(data) if path.name == MANIFEST_NAME else data).decode("latin-1"))
    assert any(p.name == MANIFEST_NAME for p in stored) and any(p.suffix == ".sqlite" for p in stored)
    for text in texts:
        for patient in patients:
            assert patient not in text


def test_bad_verify_arguments_are_one_line_errors(inst: Config) -> None:
    assert_one_line_error(cli(inst, "verify", "--level", "everything"), 2, "unknown verify level")
    assert_one_line_error(cli(inst, "find"), 2, "--study")
    assert_one_line_error(cli(inst, "verify", "--level", "restore", "--study", "1.2.3"), 2, "not in this snapshot")
    assert_one_line_error(cli(inst, "verify", "--level", "restore", "--job", "nope"), 2, "no job named")
    with open_catalog(inst.catalog_path) as catalog:
        failed = catalog.query("SELECT COUNT(*) FROM runs WHERE kind='verify:restore' AND status='failed'")[0][0]
    assert failed == 1          # the run that started is recorded as failed, with its reason


def test_sampled_restores_walk_every_study(inst: Config) -> None:
    picked: list[set[str]] = []
    for seed in range(3):        # 5 studies, 2 per run: the never-verified ones come first
        result = run_verify(inst, ["restore"], VerifyOptions(sample=2, seed=seed)).results[0]
        assert result.ok and result.figures["scope"] == "2 studies"
        with open_catalog(inst.catalog_path) as catalog:
            reads = verify_rows.study_reads(catalog)
        picked.append(set(reads))
    assert len(picked[0]) == 2 and len(picked[1]) == 4 and len(picked[2]) == 5
