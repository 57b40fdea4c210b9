"""Restore by what the admin is given (issue 14): find and restore by Patient ID, accession number, study
date, modality and name; 'latest' per job; snapshots show / ls / diff; restore --dry-run. Real restic."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.find import parse_study_date
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.errors import UsageError
from backupctl.identifiers import KEY_FILE_NAME, IdentifierKey, load_identifier_key
from backupctl.manifest import MANIFEST_NAME
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, make_installation

pytestmark = pytest.mark.slow

SPEC = ArchiveSpec(patients=3, studies_per_patient=2, series_per_study=1, instances_per_series=3,
                   rows=16, columns=16, seed=41)
LATE = ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                   rows=16, columns=16, seed=42)
OTHER = ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                    rows=16, columns=16, seed=43)


def _studies(archive: Path, late: bool = False) -> list[dict[str, str]]:
    """Each study of a synthetic archive with what an admin would be handed for it (without the studies
    added later, in `late/`, unless asked)."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(archive.rglob("*.dcm")):
        if not late and path.relative_to(archive).parts[0] == "late":
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.setdefault(ds.StudyInstanceUID, {
            "study": ds.StudyInstanceUID, "patient_id": ds.PatientID, "accession": ds.AccessionNumber,
            "name": str(ds.PatientName), "date": ds.StudyDate, "modality": ds.Modality,
            "files": 0})
        out[ds.StudyInstanceUID]["files"] += 1   # type: ignore[operator]
    return list(out.values())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Job `pacs`: two snapshots (the second adds a study). Job `research`: one snapshot of another archive."""
    root = tmp_path_factory.mktemp("find") / "base"
    config = make_installation(root, SPEC, CONFIG_TEXT)
    assert run_backup(config, "pacs", replicate=False).status == "success"
    write_archive(root / "archive" / "late", LATE)
    assert run_backup(config, "pacs", replicate=False).status == "success"
    write_archive(root / "research-archive", OTHER)
    (root / "jobs" / "research.toml").write_text(
        f'name = "research"\nsources = ["{root / "research-archive"}"]\ntargets = []\nschedule = "0 3 * * *"\n')
    config = load_config(root / "backupctl.toml")
    assert run_backup(config, "research", replicate=False).status == "success"
    return root


@pytest.fixture
def inst(base: Path, tmp_path: Path) -> Config:
    root = tmp_path / "inst"
    shutil.copytree(base, root, symlinks=True)
    return load_config(root / "backupctl.toml")


def _archive(config: Config, job: str = "pacs") -> Path:
    """The job's source as backed up (a copied installation still reads the base's archive)."""
    return Path(config.job(job).sources[0])


def _find(config: Config, *args: str) -> dict:
    result = cli(config, "find", *args, "--json")
    assert result.returncode in (0, 2), result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {"studies": [], "ok": False}


def _uids(found: dict) -> set[str]:
    return {s["study_uid"] for s in found["studies"]}


def test_catalog_and_manifest_hold_identifiers_only_keyed(inst: Config) -> None:
    key_file = inst.signing_key.parent / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    studies = _studies(_archive(inst))
    conn = sqlite3.connect(inst.catalog_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")   # everything into the main file, to read its bytes
    rows = conn.execute("SELECT study_uid, patient_digest, accession_digest, study_date "
                        "FROM snapshot_studies").fetchall()
    conn.close()
    catalog_bytes = inst.catalog_path.read_bytes()
    manifest = gzip.decompress((Path(inst.state_dir) / "manifests" / "pacs" / ".backupctl-manifest"
                                / MANIFEST_NAME).read_bytes())
    key = load_identifier_key(key_file)
    by_uid = {r[0]: r for r in rows}
    for s in studies:
        for value in (s["patient_id"], s["accession"], s["name"]):
            assert value.encode() not in catalog_bytes
            assert value.encode() not in manifest
        uid, pid, acc, day = by_uid[s["study"]]
        assert pid == key.digest(s["patient_id"]) and acc == key.digest(s["accession"]) and day == s["date"]
    # the digest is keyed: another key gives another digest of the same ID
    assert IdentifierKey(b"\x01" * 32).digest(studies[0]["patient_id"]) != key.digest(studies[0]["patient_id"])


def test_lookups_by_each_key_and_combined(inst: Config) -> None:
    studies = _studies(_archive(inst))
    one = studies[0]
    same_patient = {s["study"] for s in studies if s["patient_id"] == one["patient_id"]}
    assert len(same_patient) == 2

    by_id = _find(inst, "--patient-id", one["patient_id"])
    assert _uids(by_id) == same_patient and by_id["query"] == {"patient_id": one["patient_id"]}
    by_acc = _find(inst, "--accession", one["accession"])
    assert _uids(by_acc) == {one["study"]}
    hit = by_acc["studies"][0]
    assert hit["instances"] == one["files"] and hit["study_date"] == one["date"]
    assert hit["modalities"] == one["modality"]
    assert hit["snapshots"] == 2 and hit["job"] == "pacs"   # in both snapshots of pacs; the newest is shown
    assert "patient_name" not in hit                           # not asked for: not printed

    combined = _find(inst, "--patient-id", one["patient_id"], "--modality", one["modality"].lower())
    assert _uids(combined) == {s["study"] for s in studies
                               if s["patient_id"] == one["patient_id"] and s["modality"] == one["modality"]}
    day = _find(inst, "--study-date", one["date"])
    assert one["study"] in _uids(day) and all(s["study_date"] == one["date"] for s in day["studies"])
    none = cli(inst, "find", "--patient-id", one["patient_id"], "--accession", studies[-1]["accession"])
    assert_one_line_error(none, 2, "no study")
    assert one["patient_id"] not in none.stderr
    text = cli(inst, "find", "--accession", one["accession"], check=True).stdout
    assert one["study"] in text and one["patient_id"] not in text and one["name"] not in text


def test_patient_name_wildcards_are_matched_on_the_manifests(inst: Config) -> None:
    studies = _studies(_archive(inst), late=True) + _studies(_archive(inst, "research"))
    one = _studies(_archive(inst))[0]
    mine = {s["study"] for s in studies if s["name"] == one["name"]}   # the synthetic names repeat across seeds
    assert len(mine) > 1
    exact = _find(inst, "--patient-name", one["name"].upper())
    assert _uids(exact) == mine and exact["manifests_read"] >= 1
    assert {s["patient_name"] for s in exact["studies"]} == {one["name"]}
    star = _find(inst, "--patient-name", one["name"][:4] + "*" + one["name"][-3:])
    assert _uids(star) == mine
    question = _find(inst, "--patient-name", "?" + one["name"][1:])
    assert _uids(question) == mine
    everyone = _find(inst, "--patient-name", "*")
    assert _uids(everyone) == {s["study"] for s in studies}
    # a wildcard narrowed by the index: only the candidate snapshot's manifest is read
    narrowed = _find(inst, "--patient-name", "*", "--job", "research")
    assert narrowed["manifests_read"] == 1 and {s["job"] for s in narrowed["studies"]} == {"research"}
    assert_one_line_error(cli(inst, "find", "--patient-name", one["name"] + "X*Y"), 2, "no study")


def test_study_date_ranges(inst: Config) -> None:
    studies = _studies(_archive(inst), late=True)
    dates = sorted({s["date"] for s in studies})
    low, high = dates[0], dates[len(dates) // 2]
    dashed = f"{low[:4]}-{low[4:6]}-{low[6:]}..{high[:4]}-{high[4:6]}-{high[6:]}"
    expected = {s["study"] for s in studies if low <= s["date"] <= high}
    assert _uids(_find(inst, "--study-date", dashed, "--job", "pacs")) == expected
    assert _uids(_find(inst, "--study-date", f"{low}-{high}", "--job", "pacs")) == expected
    assert _uids(_find(inst, "--study-date", f"-{low}", "--job", "pacs")) == {s["study"] for s in studies
                                                                              if s["date"] <= low}
    assert parse_study_date("2024-02-29") == ("20240229", "20240229")
    assert parse_study_date("20240301..") == ("20240301", None)
    for bad in ("2023-02-29", "20240301-20240201", "yesterday", "-"):
        with pytest.raises(UsageError):
            parse_study_date(bad)
    assert_one_line_error(cli(inst, "find", "--study-date", "2024-13-01"), 2, "not a calendar date")


def test_latest_is_per_job(inst: Config, tmp_path: Path) -> None:
    for args in (("restore", "latest", "--to", str(tmp_path / "r")),
                 ("snapshots", "show", "latest"),
                 ("verify", "--level", "restore"),
                 ("ls", "latest")):
        assert_one_line_error(cli(inst, *args), 2, "'latest' is ambiguous", "pacs, research", "--job")
    research = json.loads(cli(inst, "snapshots", "show", "latest", "--job", "research", "--json", check=True).stdout)
    assert research["job"] == "research"
    done = cli(inst, "restore", "latest", "--job", "research", "--to", str(tmp_path / "r"), "--json", check=True)
    assert json.loads(done.stdout)["snapshot_id"] == research["id"]
    assert (tmp_path / "r" / str(_archive(inst, "research")).lstrip("/")).is_dir()
    assert_one_line_error(cli(inst, "restore", "latest", "--job", "nosuch", "--to", str(tmp_path / "x")), 2,
                          "no job named 'nosuch'")
    # with the catalog lost, 'latest' is still the job's newest snapshot, asked of the copy itself
    shutil.move(inst.catalog_path, tmp_path / "catalog-aside.sqlite")
    lost = cli(inst, "restore", "latest", "--job", "research", "--to", str(tmp_path / "r2"), "--json", check=True)
    assert json.loads(lost.stdout)["snapshot_id"] == research["id"] and not inst.catalog_path.exists()
    shutil.move(tmp_path / "catalog-aside.sqlite", inst.catalog_path)
    verified = json.loads(cli(inst, "verify", "--level", "restore", "--job", "research", "--json",
                              check=True).stdout)
    assert research["id"].startswith(verified["levels"][0]["snapshot"])
    (Path(inst.base) / "restore_drills" / "quick.toml").write_text(
        'job = "pacs"\ncopy_from = "staging"\nsnapshot = "latest"\nscope = "all"\ndepth = "hash"\n'
        'rto_minutes = 30\nschedule = "0 5 * * *"\n')
    drilled = json.loads(cli(inst, "drill", "run", "quick", "--job", "research", "--json", check=True).stdout)
    assert drilled["job"] == "research" and drilled["snapshot_id"] == research["id"]


def test_snapshots_show_studies_ls_and_diff(inst: Config) -> None:
    snaps = [s for s in json.loads(cli(inst, "snapshots", "--json", check=True).stdout) if s["job"] == "pacs"]
    first, second = snaps[0]["id"], snaps[1]["id"]
    late = {s["study"] for s in _studies(_archive(inst) / "late")}
    shown = json.loads(cli(inst, "snapshots", "show", first[:8], "--studies", "--json", check=True).stdout)
    assert {s["study_uid"] for s in shown["studies"]} == {s["study"] for s in _studies(_archive(inst))} - late
    text = cli(inst, "snapshots", "show", second[:8], "--studies", check=True).stdout
    assert all(uid in text for uid in late)

    folder = str(_archive(inst) / "late")
    listed = json.loads(cli(inst, "ls", second[:8], folder, "--json", check=True).stdout)
    files = sorted(f["path"] for f in listed["files"] if f["type"] == "file")
    assert files == sorted(str(p) for p in (_archive(inst) / "late").rglob("*.dcm"))
    assert_one_line_error(cli(inst, "ls", first[:8], folder), 2, "holds nothing")

    diff = json.loads(cli(inst, "diff", first[:8], second[:8], "--json", check=True).stdout)
    assert {s["study_uid"] for s in diff["added"]} == late and not diff["removed"] and not diff["changed"]
    assert diff["unchanged"] == SPEC.patients * SPEC.studies_per_patient
    back = json.loads(cli(inst, "diff", second[:8], first[:8], "--json", check=True).stdout)
    assert {s["study_uid"] for s in back["removed"]} == late and not back["added"]
    # nobody asked for an identifier here: none is printed
    printed = text + cli(inst, "diff", first[:8], second[:8], check=True).stdout + json.dumps(shown)
    for s in _studies(_archive(inst), late=True):
        assert s["patient_id"] not in printed and s["accession"] not in printed and s["name"] not in printed


def test_diff_names_a_study_whose_content_changed(tmp_path: Path) -> None:
    config = make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=2, series_per_study=1,
                                                     instances_per_series=2, rows=8, columns=8, seed=44))
    before = run_backup(config, "pacs", replicate=False)
    victim = min((tmp_path / "archive").rglob("*.dcm"))
    ds = pydicom.dcmread(victim)
    ds.InstitutionName = "Amended"
    ds.save_as(victim)
    after = run_backup(config, "pacs", replicate=False)
    diff = json.loads(cli(config, "diff", before.short_id, after.short_id, "--json", check=True).stdout)
    assert [c["study_uid"] for c in diff["changed"]] == [ds.StudyInstanceUID]
    assert diff["changed"][0]["files_altered"] == 1 and diff["unchanged"] == 1 and not diff["added"]


def test_restore_by_accession_dry_run_then_for_real(inst: Config, tmp_path: Path) -> None:
    one = _studies(_archive(inst))[0]
    dry = cli(inst, "restore", "--accession", one["accession"], "--dry-run", "--json", check=True)
    plan = json.loads(dry.stdout)
    assert plan["dry_run"]["studies"] == [one["study"]] and plan["dry_run"]["files"] == one["files"]
    assert plan["dry_run"]["copy"] == "staging" and plan["dry_run"]["expected_seconds"] is None
    assert "no drill" in plan["dry_run"]["basis"]
    assert not (tmp_path / "out").exists()

    # a drill from staging gives the estimate its measure
    (Path(inst.base) / "restore_drills" / "quick.toml").write_text(
        'job = "pacs"\ncopy_from = "staging"\nsnapshot = "latest"\nscope = "all"\ndepth = "hash"\n'
        'rto_minutes = 30\nschedule = "0 5 * * *"\n')
    cli(inst, "drill", "run", "quick", "--json", check=True)
    plan = json.loads(cli(inst, "restore", "--accession", one["accession"], "--dry-run", "--json",
                          check=True).stdout)["dry_run"]
    assert plan["expected_seconds"] is not None and plan["expected_seconds"] > 0 and "drill" in plan["basis"]
    text = cli(inst, "restore", "--accession", one["accession"], "--dry-run", check=True).stdout
    assert "would restore 1 study" in text and one["study"] in text

    done = cli(inst, "restore", "--accession", one["accession"], "--to", str(tmp_path / "out"), "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["verified"] and got["files"] == one["files"] and got["bytes"] == plan["bytes"]
    assert got["find"]["studies"][0]["study_uid"] == one["study"]
    assert got["checks"]["verified"] and got["checks"]["not_verified"]
    restored = [p for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(restored) == one["files"]
    assert {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in restored} == {one["study"]}
    text = cli(inst, "restore", "--patient-id", one["patient_id"], "--to", str(tmp_path / "out2"), check=True).stdout
    assert "verified: SHA-256 of" in text and "Not verified:" in text


def test_bad_queries_are_one_line_errors(inst: Config, tmp_path: Path) -> None:
    assert_one_line_error(cli(inst, "find"), 2, "--study")
    assert_one_line_error(cli(inst, "find", "--patient-id", " "), 2, "--patient-id is empty")
    assert_one_line_error(cli(inst, "find", "--study", "1.2", "--modality", "CT"), 2, "stand alone")
    assert_one_line_error(cli(inst, "restore", "--patient-id", "X", "--to-pacs", "http://127.0.0.1:1"), 2,
                          "into a folder")
    assert_one_line_error(cli(inst, "restore", "--accession", "NOPE", "--to", str(tmp_path / "o")), 2,
                          "nothing restored")
    assert_one_line_error(cli(inst, "diff", "ffffffff", "latest", "--job", "pacs"), 2, "no snapshot ffffffff")


def test_identifiers_key_is_created_at_first_use_and_refused_when_open(tmp_path: Path) -> None:
    config = make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                     instances_per_series=1, rows=8, columns=8, seed=45))
    key_file = config.signing_key.parent / KEY_FILE_NAME
    key_file.unlink()
    assert run_backup(config, "pacs", replicate=False).status == "success"   # first use creates it
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    key_file.chmod(0o644)
    assert_one_line_error(cli(config, "find", "--patient-id", "SYN04500000"), 2, "identifiers key")


class _Recorder:
    """A Progress that keeps every task's total and every completed figure it was told."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[object]:
        record = {"description": description, "total": total, "unit": unit, "completed": []}
        self.tasks.append(record)

        class _Task:
            def advance(self, amount: float = 1) -> None:
                record["completed"].append((record["completed"] or [0])[-1] + amount)

            def update(self, *, completed: float | None = None, total: float | None = None) -> None:
                if completed is not None:
                    record["completed"].append(completed)

        yield _Task()


def test_study_restore_reports_bytes_against_the_catalog_size(inst: Config, tmp_path: Path) -> None:
    from backupctl.catalog import open_catalog
    from backupctl.verify.study import restore_studies

    one = _studies(_archive(inst))[0]
    recorder = _Recorder()
    with open_catalog(inst.catalog_path) as catalog:
        done = restore_studies(inst, catalog, [one["study"]], tmp_path / "out", progress=recorder)
    bars = [t for t in recorder.tasks if t["description"].startswith("restore 1 study")]
    assert len(bars) == 1 and bars[0]["unit"] == "B" and bars[0]["total"] == done.bytes > 0
    assert bars[0]["completed"][-1] == done.bytes and all(c <= done.bytes for c in bars[0]["completed"])


def test_names_in_other_character_sets_are_read_and_matched() -> None:
    import io

    from backupctl.actions.find import name_matcher
    from backupctl.dicom.parse import facts_of

    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Hans"
    ds.AccessionNumber = "A-1"
    ds.StudyDate = "20240131"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
    facts = facts_of(pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True))
    assert (facts["patient_name"], facts["accession"], facts["date"]) == ("Müller^Hans", "A-1", "20240131")
    assert name_matcher("MÜLLER^H*").fullmatch(facts["patient_name"])
    assert name_matcher("M?ller^Hans").fullmatch(facts["patient_name"])
    assert not name_matcher("Müller").fullmatch(facts["patient_name"])     # the whole name must match
    assert name_matcher("a.b*").fullmatch("a.bc") and not name_matcher("a.b*").fullmatch("axbc")   # '.' literal


def test_demo_find_and_dry_run_keys_are_measured(tmp_path: Path) -> None:
    from backupctl import demo
    from backupctl.actions.find_demo import step_dry_run, step_find
    from backupctl.drills.demo import step_drill
    from backupctl.progress import NullProgress

    assert [k for k, _ in demo.STEPS].index("find") > [k for k, _ in demo.STEPS].index("drill")
    assert {"find", "dry_run"} <= {k for k, _ in demo.STEPS}   # so the top-level `ok` holds them too
    ctx = demo.DemoContext(workdir=tmp_path, progress=NullProgress())
    for step in (demo.step_backup, demo.step_media, step_drill):
        assert step(ctx)["ok"]
    found = step_find(ctx)
    assert found["ok"], found
    assert found["by_patient_id"]["studies"] == demo.DEMO_SPEC.studies_per_patient
    assert found["by_accession"]["studies"] == 1 and found["by_name_wildcard"]["studies"] >= 1
    assert found["verified"] and found["restored_files"] == demo.DEMO_SPEC.series_per_study * \
        demo.DEMO_SPEC.instances_per_series
    assert found["catalog_holds_id_in_clear"] is False
    dry = step_dry_run(ctx)
    assert dry["ok"], dry
    assert dry["from"] == "offline" and dry["expected_seconds"] > 0 and "drill" in dry["basis"]
    assert dry["bytes"] == dry["measured_bytes"] > 0 and dry["measured_seconds"] > 0
    printed = json.dumps([found, dry])
    for handed in _studies(tmp_path / "archive"):
        assert handed["patient_id"] not in printed and handed["accession"] not in printed
        assert handed["name"] not in printed


def test_a_rebuilt_catalog_finds_by_identifiers_too(inst: Config) -> None:
    one = _studies(_archive(inst))[0]
    cli(inst, "catalog", "rebuild", "--from", "staging", "--replace", "--json", check=True)
    assert _uids(_find(inst, "--accession", one["accession"])) == {one["study"]}
    assert one["study"] in _uids(_find(inst, "--patient-id", one["patient_id"], "--study-date", one["date"]))
