"""Cheap facts about a file's first bytes, taken while they are in memory for hashing anyway."""

from __future__ import annotations

_PE, _ELF = b"MZ", b"\x7fELF"


SAMPLE = 16 * 1024   # enough for random bytes to show ~8 bits/byte; more costs as much as hashing the head


def byte_entropy(head: bytes) -> float | None:
    """Shannon entropy in bits per byte of the last SAMPLE bytes of a file's first block (past a DICOM header,
    in the pixel data, for files bigger than that), rounded to 2 decimals; None under 256 bytes."""
    data = head[-SAMPLE:]
    if len(data) < 256:
        return None
    import numpy as np  # loaded once per process, by the first file read

    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return round(float(-(p * np.log2(p)).sum()) + 0.0, 2) if len(p) > 1 else 0.0


def executable_preamble(head: bytes) -> str | None:
    """'pe' or 'elf' when the first bytes (a DICOM file's preamble) are an executable's header."""
    if head[:2] == _PE:
        return "pe"
    if head[:4] == _ELF:
        return "elf"
    return None

