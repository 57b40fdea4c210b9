"""DICOM parse checks on real files: truncation, non-DICOM, damaged headers, pixel data length."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from backupctl.dicom.parse import NotDicom, check_file, header_facts
from backupctl.dicom.synth import ArchiveSpec, write_archive

SPEC = ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                   rows=48, columns=40, seed=11)


@pytest.fixture
def dicom_file(tmp_path: Path) -> Path:
    return write_archive(tmp_path / "a", SPEC)[0].path


def _facts(path: Path) -> dict[str, str | None]:
    data = path.read_bytes()
    facts = header_facts(data, path, whole_file=True)
    facts.pop("patient_id")
    return facts


def test_intact_file_passes_and_matches_its_facts(dicom_file: Path) -> None:
    result = check_file(dicom_file, _facts(dicom_file), decode=True)
    assert result.ok, result.problems
    assert result.decoded
    ds = pydicom.dcmread(dicom_file)
    assert result.facts["study"] == ds.StudyInstanceUID and result.facts["sop_instance"] == ds.SOPInstanceUID
    assert "patient_id" not in result.facts


def test_header_facts_from_first_bytes_equal_those_from_the_file(dicom_file: Path) -> None:
    data = dicom_file.read_bytes()
    from_head = header_facts(data[:2048], dicom_file, whole_file=False)
    from_file = header_facts(data[:200], dicom_file, whole_file=False)   # too short: read from the path
    assert from_head == from_file and from_head["patient_id"].startswith("SYN")


def test_truncated_in_pixel_data(dicom_file: Path) -> None:
    data = dicom_file.read_bytes()
    dicom_file.write_bytes(data[: len(data) - 500])
    result = check_file(dicom_file)
    assert result.status == "truncated" and "pixel data" in " ".join(result.problems)


def test_truncated_in_header(dicom_file: Path) -> None:
    data = dicom_file.read_bytes()
    cut = data.index(b"MONOCHROME2")          # inside the header, before Rows/Columns and pixel data
    dicom_file.write_bytes(data[:cut + 4])
    result = check_file(dicom_file)
    assert result.status == "truncated", result.problems


def test_non_dicom_with_dcm_name(tmp_path: Path) -> None:
    fake = tmp_path / "report.dcm"
    fake.write_bytes(b"%PDF-1.4 not an image " * 20)
    assert check_file(fake).status == "not-dicom"
    with pytest.raises(NotDicom):
        header_facts(fake.read_bytes(), fake, whole_file=True)


def test_flipped_byte_in_a_uid_is_a_mismatch(dicom_file: Path) -> None:
    expected = _facts(dicom_file)
    data = bytearray(dicom_file.read_bytes())
    at = data.index(expected["study"].encode()) + 10
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    dicom_file.write_bytes(bytes(data))
    result = check_file(dicom_file, expected)
    assert result.status == "uid-mismatch" and "study" in result.problems[0]


def test_pixel_data_length_must_match_the_header(dicom_file: Path) -> None:
    ds = pydicom.dcmread(dicom_file)
    ds.Rows = ds.Rows + 2                     # header now promises more pixels than stored
    ds.save_as(dicom_file)
    result = check_file(dicom_file)
    assert result.status == "truncated" and "image pixel module needs" in result.problems[0]
