"""Synthetic PACS archives: valid DICOM Part 10 files in a patient/study/series/instance hierarchy.

Deterministic for a seed (same UIDs, same bytes), so tests and benchmarks can compare runs. Pixel data is a
smooth elliptical "anatomy" plus noise, so it compresses like real CT or MR rather than like random bytes
(restic compresses, and uniform random data would make every figure meaningless).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

UID_ROOT = "1.2.826.0.1.3680043.10.1407."   # a private-use style root for synthetic data only
MODALITIES = (("CT", CTImageStorage), ("MR", MRImageStorage))


@dataclass(frozen=True)
class ArchiveSpec:
    patients: int = 3
    studies_per_patient: int = 2
    series_per_study: int = 2
    instances_per_series: int = 4
    rows: int = 64
    columns: int = 64
    seed: int = 0


@dataclass(frozen=True)
class WrittenInstance:
    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    size: int


def _uid(seed: int, *parts: object) -> str:
    """A deterministic, valid UID (digits only, <= 64 chars) from the seed and the position in the tree."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    number = str(int.from_bytes(digest[:16], "big"))
    return (UID_ROOT + number)[:64].rstrip(".")


def _phantom(rows: int, columns: int, rng: np.random.Generator, slice_index: int, modality: str) -> bytes:
    """A body-like ellipse with organs, smooth gradients and modest noise, as 16-bit little-endian pixels."""
    y, x = np.mgrid[-1:1:complex(rows), -1:1:complex(columns)]
    body = ((x / 0.85) ** 2 + (y / 0.65) ** 2) <= 1.0
    organ = ((x - 0.3 + 0.02 * slice_index) / 0.25) ** 2 + ((y + 0.1) / 0.3) ** 2 <= 1.0
    bone = np.abs(((x / 0.12) ** 2 + ((y - 0.35) / 0.1) ** 2) - 1.0) < 0.35
    base = 0 if modality == "CT" else 20
    image = np.full((rows, columns), base, dtype=np.float64)
    image[body] = 1000 + 40 * y[body]
    image[organ] = 1060
    image[bone] = 1900
    image += rng.normal(0.0, 25.0, size=image.shape) * body
    return np.clip(image, 0, 4095).astype("<u2").tobytes()


def _dataset(spec: ArchiveSpec, p: int, s: int, r: int, i: int, rng: np.random.Generator) -> Dataset:
    modality, sop_class = MODALITIES[(p + s) % len(MODALITIES)]
    patient_id = f"SYN{spec.seed:03d}{p:05d}"
    study_uid = _uid(spec.seed, p, s)
    series_uid = _uid(spec.seed, p, s, r)
    sop_uid = _uid(spec.seed, p, s, r, i)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient_id
    ds.PatientName = f"Synthetic^Patient{p:04d}"
    ds.PatientBirthDate = (date(1940, 1, 1) + timedelta(days=(p * 3571 + spec.seed) % 25000)).strftime("%Y%m%d")
    ds.PatientSex = "FM"[p % 2]
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = (date(2024, 1, 1) + timedelta(days=(p * 31 + s * 7) % 700)).strftime("%Y%m%d")
    ds.StudyTime = f"{8 + s % 10:02d}{(p * 7) % 60:02d}00"
    ds.StudyID = f"{s + 1}"
    ds.AccessionNumber = f"ACC{spec.seed:02d}{p:05d}{s:03d}"
    ds.StudyDescription = f"{modality} synthetic study {s + 1}"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = r + 1
    ds.Modality = modality
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(i) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
    ds.PixelData = _phantom(spec.rows, spec.columns, rng, i, modality)
    return ds


def iter_archive(spec: ArchiveSpec) -> Iterator[tuple[Path, Dataset]]:
    """(relative path, dataset) for every instance, in a PACS-like patient/study/series layout."""
    rng = np.random.default_rng(spec.seed)
    for p in range(spec.patients):
        for s in range(spec.studies_per_patient):
            for r in range(spec.series_per_study):
                for i in range(spec.instances_per_series):
                    ds = _dataset(spec, p, s, r, i, rng)
                    # folders by position, not by Patient ID: a path is not the place for an identifier
                    # (manifests, snapshots and reports show paths as they are)
                    rel = Path(f"p{p:05d}") / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
                    yield rel, ds


def write_archive(root: Path, spec: ArchiveSpec | None = None, **kwargs: int) -> list[WrittenInstance]:
    """Write the archive under `root` (created if needed); returns what was written."""
    spec = spec or ArchiveSpec(**kwargs)
    written: list[WrittenInstance] = []
    for rel, ds in iter_archive(spec):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        written.append(WrittenInstance(path, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                       ds.SOPInstanceUID, ds.Modality, path.stat().st_size))
    return written
