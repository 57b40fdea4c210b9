"""Suspect-snapshot detection: the attack simulator is flagged with the signals that fired, normal PACS days
are not, a polyglot preamble is flagged, a header correction alone is not."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from backupctl.config import SuspectConfig
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.incident.entropy import byte_entropy, executable_preamble
from backupctl.incident.suspect import SuspectReport, compare
from backupctl.manifest import Manifest, build_manifest
from backupctl.signing import SigningKey, generate_key
from tests.ransom_sim import RANSOM_NOTE, attack, dicom_files, header_correction, normal_day, plant_polyglot

SPEC = ArchiveSpec(patients=6, studies_per_patient=2, series_per_study=2, instances_per_series=4, rows=32,
                   columns=32, seed=11)   # 96 instances


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return generate_key(tmp_path_factory.mktemp("key") / "signing.key")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    write_archive(root, SPEC)
    return root


def _next(root: Path, key: SigningKey, previous: Manifest) -> tuple[Manifest, SuspectReport]:
    new, _ = build_manifest("j", [root], key, previous=previous, workers=1)
    return new, compare(SuspectConfig(), previous.entries, new.entries)


def _fired(report: SuspectReport) -> dict[str, int]:
    return {s.name: s.count for s in report.fired()}


def test_entropy_and_preamble_facts() -> None:
    assert byte_entropy(bytes(4096)) == 0.0
    assert byte_entropy(random.Random(1).randbytes(65536)) > 7.9   # type: ignore[operator]
    assert byte_entropy(b"ab") is None
    assert executable_preamble(b"MZ\x90\x00") == "pe"
    assert executable_preamble(b"\x7fELF\x02") == "elf"
    assert executable_preamble(bytes(128) + b"DICM") is None


def test_manifest_records_entropy_of_files_it_reads(archive: Path, key: SigningKey) -> None:
    manifest, _ = build_manifest("j", [archive], key, workers=1)
    figures = [e.entropy for e in manifest.entries]
    assert all(f is not None and 0 < f < 7.5 for f in figures)   # pixel data with noise, not random bytes


def test_attack_is_flagged_with_the_signals_that_fired(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    done = attack(archive, share=0.3, rename_share=0.3)
    _, report = _next(archive, key, before)
    assert report.suspect
    fired = _fired(report)
    in_place = len(done.encrypted) - len(done.renamed)
    assert fired["lost_dicom"] == in_place
    assert fired["entropy_jump"] == in_place
    assert fired["ransom_notes"] == 1
    assert fired["encrypted_extensions"] == len(done.renamed)
    assert fired["renamed"] == len(done.renamed)
    notes = next(s for s in report.signals if s.name == "ransom_notes")
    assert notes.examples == [str(archive / RANSOM_NOTE)]
    assert "deleted" not in fired and "header_corrections" not in fired
    assert "lost the DICM marker" in report.summary()


def test_a_normal_day_is_not_flagged(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    normal_day(archive, 1, corrections=3, deleted_studies=1)
    _, report = _next(archive, key, before)
    assert report.compared and not report.suspect, report.summary()
    counts = {s.name: s.count for s in report.signals}
    assert counts["header_corrections"] == 3 and counts["rewritten_instances"] == 0
    assert counts["deleted"] > 0   # seen, under the threshold


def test_header_correction_alone_is_not_flagged_but_a_pixel_rewrite_is(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    files = dicom_files(archive)
    rng = random.Random(3)
    for path in files[:10]:
        header_correction(path, rng)
    middle, report = _next(archive, key, before)
    assert not report.suspect and _fired(report) == {}
    assert {s.name: s.count for s in report.signals}["header_corrections"] == 10
    # same UIDs, still DICOM, but the pixel data replaced with random bytes: not a correction
    for path in files[20:30]:
        data = bytearray(path.read_bytes())
        data[-2048:] = random.Random(path.name).randbytes(2048)
        path.write_bytes(bytes(data))
    _, report = _next(archive, key, middle)
    assert _fired(report).get("rewritten_instances") == 10


def test_polyglot_preamble_is_flagged(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    victim = dicom_files(archive)[5]
    plant_polyglot(victim)
    new, report = _next(archive, key, before)
    assert _fired(report) == {"executable_preamble": 1}
    entry = new.by_path()[str(victim)]
    assert entry.kind == "dicom" and entry.dicom and entry.dicom["preamble"] == "pe"
    # a new polyglot file too, not only a changed one
    shutil.copy(victim, victim.with_name("new-instance.dcm"))
    _, report = _next(archive, key, new)
    assert _fired(report) == {"executable_preamble": 1}


def test_mass_deletion_is_flagged(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    for folder in sorted(archive.iterdir())[:3]:   # half the patients
        shutil.rmtree(folder)
    _, report = _next(archive, key, before)
    assert _fired(report) == {"deleted": 48}


def test_first_backup_says_nothing(archive: Path, key: SigningKey) -> None:
    attack(archive)
    new, _ = build_manifest("j", [archive], key, workers=1)
    report = compare(SuspectConfig(), [], new.entries)
    assert not report.compared and not report.suspect


def test_false_positive_rate_over_generated_normal_days(archive: Path, key: SigningKey) -> None:
    """The figure quoted in docs/incident.md: 20 normal days, none flagged; then the attack is."""
    previous, _ = build_manifest("j", [archive], key, workers=1)
    flagged = []
    for day in range(1, 21):
        normal_day(archive, day, seed=5, new_studies=random.Random(day).randint(0, 3),
                   deleted_studies=random.Random(day + 50).randint(0, 2),
                   corrections=random.Random(day + 99).randint(0, 4))
        previous, report = _next(archive, key, previous)
        if report.suspect:
            flagged.append((day, report.summary()))
    assert flagged == []
    attack(archive)
    _, report = _next(archive, key, previous)
    assert report.suspect


def test_renames_are_paired_whichever_name_sorts_first(archive: Path, key: SigningKey) -> None:
    before, _ = build_manifest("j", [archive], key, workers=1)
    files = dicom_files(archive)
    for path in files[:6]:              # sorts after the old name
        path.rename(path.with_name(path.name + ".locked"))
    for path in files[10:16]:           # sorts before it: x.crypt < x.dcm
        path.rename(path.with_suffix(".crypt"))
    _, report = _next(archive, key, before)
    counts = {s.name: s.count for s in report.signals}
    assert counts["renamed"] == 12 and counts["deleted"] == 12 and counts["encrypted_extensions"] == 12
    assert "renamed" in _fired(report)
