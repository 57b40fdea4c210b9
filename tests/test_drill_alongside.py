"""Checking restored files while they are being written: when a file counts as proven, and when not.

A writer in the test plays restic's part the way restic 0.14 writes a restore: each file preallocated at its
full size (zeros), then its pieces written in any order. The drill tests run the real thing with restic."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.manifest import Entry, read_file_entry
from backupctl.progress import NullProgress
from backupctl.verify.alongside import AlongsideChecker
from backupctl.verify.restored import MIN_BLOB, EarlyProof, prove_early, still_proven, zero_regions
from tests.helpers import wait_for

SPEC = ArchiveSpec(patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=3,
                   rows=64, columns=64, seed=5)


def _zero_runs_by_hand(data: bytes) -> list[tuple[int, int]]:
    runs, i = [], 0
    while i < len(data):
        if data[i] == 0:
            j = i
            while j < len(data) and data[j] == 0:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    found = [r for r in runs if r[1] - r[0] >= MIN_BLOB]
    if runs and runs[-1][1] == len(data) and runs[-1] not in found:
        found.append(runs[-1])
    return found


def test_zero_regions_are_the_zero_tail_and_every_run_a_blob_could_fill() -> None:
    rng = random.Random(3)
    for _ in range(60):
        size = rng.choice([1, 4096, 100_000, MIN_BLOB - 1, MIN_BLOB + 3, 3 * MIN_BLOB + 777])
        data = bytearray(rng.randbytes(size))
        for _ in range(rng.randint(0, 3)):
            at, length = rng.randrange(size), rng.choice([1, 100, 70_000, MIN_BLOB, MIN_BLOB + 5000, size])
            data[at:at + length] = bytes(len(data[at:at + length]))
        if rng.random() < 0.3:
            tail = rng.randint(1, size)
            data[size - tail:] = bytes(tail)
        assert zero_regions(bytes(data)) == _zero_runs_by_hand(bytes(data))


def _entry(path: Path, data: bytes) -> Entry:
    return Entry(str(path), len(data), 1_700_000_000_000_000_000, 1, "other", hashlib.sha256(data).hexdigest())


def _preallocated(path: Path, size: int) -> None:
    """What restic does first with a file it restores: create it at its full size, every byte zero."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)


def _write(path: Path, data: bytes, start: int, end: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(data[start:end])


def test_a_file_is_proven_only_once_its_bytes_hash_right(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(MIN_BLOB + 20_000)
    path = tmp_path / "f.bin"
    _preallocated(path, len(data))
    _write(path, data, 0, MIN_BLOB)                     # the first blob; the last one not yet
    assert isinstance(prove_early(path, _entry(path, data), False, parse=False), int)
    _write(path, data, MIN_BLOB, len(data))
    proof = prove_early(path, _entry(path, data), False, parse=False)
    assert isinstance(proof, EarlyProof) and proof.check.intact and proof.zeros == []
    assert still_proven(path, _entry(path, data), proof.zeros)


def test_a_match_on_zeros_restic_had_not_written_yet_does_not_stand(tmp_path: Path) -> None:
    # The manifest's version ends with zeros; restic's (the file changed during the backup, same size and
    # mtime) has bytes there. Before restic writes its last blob, the file matches the manifest.
    restic_version = random.Random(2).randbytes(MIN_BLOB + 5000)
    manifest_version = restic_version[:MIN_BLOB] + bytes(5000)
    path = tmp_path / "f.bin"
    entry = _entry(path, manifest_version)
    _preallocated(path, len(restic_version))
    _write(path, restic_version, 0, MIN_BLOB)
    proof = prove_early(path, entry, False, parse=False)
    assert isinstance(proof, EarlyProof) and proof.zeros == [(MIN_BLOB, MIN_BLOB + 5000)]
    _write(path, restic_version, MIN_BLOB, len(restic_version))
    assert not still_proven(path, entry, proof.zeros)


def _source(tmp_path: Path) -> list[tuple[Entry, bytes]]:
    files = [f.path for f in write_archive(tmp_path / "archive", SPEC)]
    return [(read_file_entry(str(p), b"k" * 32), p.read_bytes()) for p in files]


def _checker(root: Path, entries: list[Entry], remove: bool = False) -> AlongsideChecker:
    checker = AlongsideChecker(root, parse=True, workers=2, remove_checked=remove, progress=NullProgress(),
                               now=lambda: 0.0)
    checker.provide(entries, set())
    return checker


def test_files_are_checked_as_they_complete_and_the_rest_when_restic_ends(tmp_path: Path) -> None:
    source = _source(tmp_path)
    root = tmp_path / "restore"
    entries = [e for e, _ in source]
    restored = [root / e.path.lstrip("/") for e in entries]
    with _checker(root, entries, remove=True) as checker:
        for path, (e, data) in zip(restored[:-1], source[:-1], strict=True):
            _preallocated(path, e.size)
            _write(path, data, 0, e.size)
        last, (last_entry, last_data) = restored[-1], source[-1]
        _preallocated(last, last_entry.size)
        _write(last, last_data, 0, last_entry.size // 2)    # restic is still writing this one
        wait_for(lambda: len(checker.proofs) == len(entries) - 1, what="the complete files to be proven")
        assert len(entries) - 1 not in checker.proofs
        _write(last, last_data, last_entry.size // 2, last_entry.size)
        (root / "extra.txt").write_text("not in the manifest")
        for path, e in zip(restored, entries, strict=True):
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns))        # restic restores mtimes last
        outcome = checker.finish(unlisted_from={e.path for e in entries})
    assert outcome.early_files == len(entries) - 1
    assert all(c.intact and c.parsed and not c.findings for c in outcome.checks)
    assert [f.subject for f in outcome.unlisted] == ["/extra.txt"]
    assert outcome.restored_files == len(entries) + 1           # counted before the checked files went
    assert not any(p.exists() for p in restored)                # deleted once checked


def test_an_early_match_undone_by_a_later_write_is_checked_again(tmp_path: Path) -> None:
    e, pixels_end_in_zeros = _source(tmp_path)[0]
    root = tmp_path / "restore"
    path = root / e.path.lstrip("/")
    # the manifest's version of the file ends with zeros; the version restic read, and restores, does not
    data = pixels_end_in_zeros[:-100] + b"\x01" * 100
    manifest_version = data[:-100] + bytes(100)
    entry = Entry(e.path, e.size, e.mtime_ns, e.ino, e.kind, hashlib.sha256(manifest_version).hexdigest(), e.dicom)
    with _checker(root, [entry]) as checker:
        _preallocated(path, e.size)
        _write(path, data, 0, e.size - 100)
        wait_for(lambda: checker.proofs, what="the file to match early")
        _write(path, data, e.size - 100, e.size)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns))
        outcome = checker.finish()
    assert outcome.early_files == 0
    assert [f.kind for f in outcome.checks[0].findings] == ["hash-mismatch"]


@pytest.mark.parametrize("remove", [False, True])
def test_missing_files_are_found_when_restic_ends(tmp_path: Path, remove: bool) -> None:
    source = _source(tmp_path)
    root = tmp_path / "restore"
    root.mkdir()
    with _checker(root, [e for e, _ in source], remove=remove) as checker:
        outcome = checker.finish()
    assert outcome.early_files == 0
    assert {f.kind for c in outcome.checks for f in c.findings} == {"missing"}
