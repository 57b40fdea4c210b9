"""DICOM fidelity: every file of a real-world-shaped corpus classed right by the parse, and by the whole
backup -> verify (restore level) -> drill path with real restic: no warning on a valid file, the right
finding on each hostile one, every transfer syntax decoded."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, UID

from backupctl.actions.backup import run_backup
from backupctl.actions.drill import run_drill, summary_line
from backupctl.config import load_config
from backupctl.dicom.parse import NO_META, NotDicom, check_bytes, check_file, header_facts
from backupctl.dicom.synth import ArchiveSpec
from backupctl.drills.model import Problem
from backupctl.manifest import DICOM, OTHER, read_file_entry
from backupctl.verify.findings import NOTE
from backupctl.verify.restored import decode_set, dicom_findings
from tests.dicom_corpus import SAMPLES, Sample, build_corpus
from tests.helpers import CONFIG_TEXT, cli, make_installation

CORPUS = [sample for sample, _ in SAMPLES]
VALID = [s for s in CORPUS if s.valid]
HOSTILE = [s for s in CORPUS if not s.valid]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    build_corpus(folder)
    return folder


def _facts(path: Path) -> dict[str, str | None]:
    facts = header_facts(path.read_bytes(), path, whole_file=True)
    facts.pop("patient_id", None)
    return facts


# the parse, file by file -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", VALID, ids=lambda s: s.name)
def test_valid_file_checks_clean_and_decodes(corpus: Path, sample: Sample) -> None:
    path = corpus / sample.name
    result = check_file(path, _facts(path), decode=True)
    assert result.ok and result.kinds == [], result.problems
    assert result.file_class == sample.file_class
    assert result.no_decoder is None
    assert result.decoded == (sample.decodes is not None)
    if sample.decodes:
        assert result.facts["transfer_syntax"] == sample.decodes
    assert not any("decode" in n for n in result.notes)


@pytest.mark.parametrize("sample", HOSTILE, ids=lambda s: s.name)
def test_hostile_file_is_named_with_its_cause(corpus: Path, sample: Sample) -> None:
    data = (corpus / sample.name).read_bytes()
    result = check_bytes(data, decode=True)
    assert set(result.kinds) == sample.kinds, result.problems
    assert not result.decoded
    assert check_file(corpus / sample.name, decode=True).kinds == result.kinds     # from disk, the same


@pytest.mark.parametrize("sample", CORPUS, ids=lambda s: s.name)
def test_manifest_classes_each_file(corpus: Path, sample: Sample) -> None:
    """The backup's header parse: no-meta datasets are DICOM with 'format': 'no-meta', garbage is not."""
    entry = read_file_entry(str(corpus / sample.name), b"k" * 32)
    if sample.file_class == "other":
        assert entry.kind == OTHER
        return
    assert entry.kind == DICOM, entry.error
    assert (entry.dicom or {}).get("format") == (NO_META if sample.file_class == "dicom-no-meta" else None)


def test_no_meta_needs_a_plausible_start_and_sop_uids(tmp_path: Path) -> None:
    """pydicom's force=True reads anything into a dataset: bytes that merely start like group 0008 are not
    taken for DICOM unless they name a SOP class and instance."""
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\x00" * 300)
    with pytest.raises(NotDicom):
        header_facts(fake.read_bytes(), fake, whole_file=True)
    assert check_file(fake).status == "not-dicom"


def test_uid_flip_in_a_no_meta_file_is_a_mismatch(corpus: Path) -> None:
    path = corpus / "no-meta-implicit-ct.dcm"
    expected = _facts(path)
    data = bytearray(path.read_bytes())
    at = data.index(expected["sop_instance"].encode()) + 8
    data[at] = ord("7") if data[at] != ord("7") else ord("6")
    result = check_bytes(bytes(data), expected)
    assert result.file_class == "dicom-no-meta" and result.kinds == ["uid-mismatch"]


def test_a_syntax_without_decoder_is_a_named_gap(corpus: Path, tmp_path: Path) -> None:
    """A transfer syntax no installed plugin covers (here MPEG-4 video) is named, not decoded, not failed."""
    ds = pydicom.dcmread(corpus / "ct-explicit-le.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    result = check_file(path, decode=True)
    assert result.ok and not result.decoded
    assert result.no_decoder is not None and MPEG4HP41.name in result.no_decoder


def test_decode_set_takes_one_of_every_syntax_first(corpus: Path) -> None:
    entries = [read_file_entry(str(corpus / s.name), b"k" * 32) for s in VALID]
    syntaxes = {e.dicom["transfer_syntax"] for e in entries if e.kind == DICOM}
    chosen = decode_set(entries, 1, seed=3)
    by_path = {e.path: e for e in entries}
    assert {by_path[p].dicom["transfer_syntax"] for p in chosen} == syntaxes
    assert len(chosen) == len(syntaxes)          # one each, even when fewer were asked for
    assert decode_set(entries, 0, seed=3) == set()


# the whole path: backup, verify restore, drill ------------------------------------------------------------------


@pytest.mark.slow
def test_backup_verify_and_drill_of_the_corpus(tmp_path: Path) -> None:
    config_text = CONFIG_TEXT + "\n[verify]\ndecode_sample = 1000\n"
    spec = ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                       rows=16, columns=16, seed=4)
    config = make_installation(tmp_path, spec, config_text)
    corpus = tmp_path / "archive" / "corpus"
    samples = build_corpus(corpus)
    outcome = run_backup(config, "pacs")
    assert outcome.snapshot_id

    result = cli(config, "verify", "--level", "restore", "--json", timeout=300)
    report = json.loads(result.stdout)
    level = report["levels"][0]
    findings: dict[str, list[dict[str, str]]] = {}
    for f in level["findings"]:
        findings.setdefault(Path(f["subject"]).name, []).append(f)
    for sample in samples:
        got = findings.get(sample.name, [])
        raised = {f["kind"] for f in got if f["severity"] != NOTE}
        if sample.valid:
            assert raised == set(), (sample.name, got)
        else:
            expected = {"not-dicom"} if sample.file_class == "other" else sample.kinds
            assert raised == expected, (sample.name, got)
            assert all(f["severity"] == "warning" and "at backup time" in f["detail"] for f in got
                       if f["severity"] != NOTE)
    # a hostile file is a source problem: warned about, never a failed restore
    assert result.returncode == 0 and report["ok"], result.stderr
    assert not any(f["kind"] == "not-decoded" for f in level["findings"])
    decoded_syntaxes = {s.decodes for s in samples if s.decodes}
    names = set(level["decoded_by_syntax"])
    assert names == {UID(uid).name for uid in decoded_syntaxes}
    assert level["no_decoder"] == []

    # the drill: the same files, the same findings, one consistent summary line
    (tmp_path / "restore_drills" / "corpus.toml").write_text(
        'job = "pacs"\nscope = "all"\nrto_minutes = 30\ndecode_files = 1000\n')
    config = load_config(tmp_path / "backupctl.toml")
    drill = run_drill(config, "corpus", seed=9)
    problems: dict[str, list[Problem]] = {}
    for p in drill.problems:
        problems.setdefault(Path(p.path or "-").name, []).append(p)
    for sample in samples:
        kinds = {p.kind for p in problems.get(sample.name, [])}
        expected = set() if sample.valid else {"not-dicom"} if sample.file_class == "other" else set(sample.kinds)
        assert kinds == expected, (sample.name, problems.get(sample.name))
    dicom = drill.check("dicom")
    assert dicom is not None and dicom.status == "pass"
    warned = len({p.path for p in drill.problems if p.check == "dicom"})
    assert warned == len(HOSTILE)
    assert "all " not in dicom.detail.split(";")[0]
    assert dicom.detail.startswith(f"{dicom.checked - warned} of {dicom.checked} file(s) parse as complete DICOM")
    assert f"{warned} file(s) with warnings" in dicom.detail
    # every transfer syntax of the corpus decoded, by name
    for uid in decoded_syntaxes:
        assert UID(uid).name in dicom.detail, (uid, dicom.detail)


def test_no_meta_file_an_older_manifest_called_other_is_not_a_warning(corpus: Path) -> None:
    """Manifests built before no-meta datasets were recognised recorded them as 'other': not a false alarm."""
    path = corpus / "no-meta-implicit-ct.dcm"
    entry = read_file_entry(str(path), b"k" * 32)
    entry.kind, entry.dicom = OTHER, None
    found, parsed, _ = dicom_findings(path, path.read_bytes(), entry, decode=False, intact=True)
    assert parsed and [f.severity for f in found] == [NOTE] and "dicom-no-meta" in found[0].detail
    garbage = corpus / "garbage.dcm"
    other = read_file_entry(str(garbage), b"k" * 32)
    found, _, _ = dicom_findings(garbage, garbage.read_bytes(), other, decode=False, intact=True)
    assert [(f.severity, f.kind) for f in found] == [("warning", "not-dicom")]


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.110", "1.2.826.0.1.3680043.10.1407.9.1"],
                         ids=["jpeg-xl-newer-than-pydicom", "private"])
def test_a_transfer_syntax_pydicom_does_not_know_is_checked_and_named(corpus: Path, tmp_path: Path,
                                                                      syntax: str) -> None:
    """Encapsulated data in a syntax pydicom does not know: its items are checked, the gap is named."""
    ds = pydicom.dcmread(corpus / "ct-explicit-le.dcm")
    newer = not syntax.startswith("1.2.826")
    # pydicom writes no syntax it does not know but a private one: the newer one replaces HTJ2K's
    # UID in the written bytes (both 23 characters)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201" if newer else syntax
    ds.PixelData = encapsulate([b"\xff\x0a" + bytes(62)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True     # pydicom cannot tell from a private syntax
    path = tmp_path / "unknown.dcm"
    ds.save_as(path)
    if newer:
        path.write_bytes(path.read_bytes().replace(b"1.2.840.10008.1.2.4.201\x00", syntax.encode() + b"\x00", 1))
    result = check_file(path, decode=True)
    assert result.facts["transfer_syntax"] == syntax
    assert result.ok and not result.decoded, result.problems
    assert result.no_decoder == syntax
    data = path.read_bytes()
    cut = check_bytes(data[:-20], decode=True)            # inside the fragment: named, not a crash
    assert cut.kinds == ["truncated"], cut.problems


def test_damaged_bytes_never_escape_the_checks(corpus: Path) -> None:
    """Seeded byte flips and cuts of every corpus file: the full check always returns a verdict, and the
    backup's header parse raises only NotDicom or ValueError (a crash would stop a drill's worker or a
    backup's manifest)."""
    rng = random.Random(16)
    for sample in CORPUS:
        original = (corpus / sample.name).read_bytes()
        for _ in range(12):
            data = bytearray(original)
            if data and rng.random() < 0.5:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data = data[:rng.randrange(len(data) + 1)]
            result = check_bytes(bytes(data), decode=True)
            assert result.ok or result.kinds, sample.name
            with contextlib.suppress(NotDicom, ValueError):
                header_facts(bytes(data), corpus / sample.name, whole_file=True)


def test_summary_line_stays_true() -> None:
    what = "parse as complete DICOM"
    assert summary_line(78, [], what) == "all 78 file(s) parse as complete DICOM"
    warned = [Problem("dicom", "warning", "not-dicom", f"/a/{i}.dcm") for i in range(4)]
    line = summary_line(78, warned, what)
    assert line == "74 of 78 file(s) parse as complete DICOM; 4 file(s) with warnings: not-dicom 4"
    both = [Problem("dicom", "error", "truncated", "/a/x.dcm"), Problem("dicom", "error", "decode", "/a/x.dcm"),
            Problem("dicom", "warning", "meta-mismatch", "/a/y.dcm")]
    assert summary_line(10, both, what) == ("8 of 10 file(s) parse as complete DICOM; 1 of 10 file(s) failed: "
                                            "decode 1, truncated 1; 1 file(s) with warnings: meta-mismatch 1")
    unlisted = [Problem("hash", "warning", "unlisted", "/a/new.dcm")]
    assert summary_line(5, unlisted, "match", outside={"/a/new.dcm"}).startswith("5 of 5 file(s) match; 1 file(s)")
