"""Checking a restored tree against its signed manifest: SHA-256 of every file, full DICOM parse.

Each file is read once: the bytes hashed are the bytes parsed (files above WHOLE_FILE_BYTES are streamed
and parsed from disk). The API restore drills build on:

* `check_restored_file(path, entry, decode)`: the findings for one restored file (`check_once` keeps the
  hash and DICOM findings apart);
* `verify_restored_tree(root, manifest, ...)`: every (or a chosen subset of) manifest entry under `root`,
  in a process pool, with per-study results for coverage;
* `prove_early` / `still_proven`: checking files while restic is still restoring (see below), which
  `verify.alongside` schedules.

A file restored with a different size or mtime than its manifest entry was modified between the manifest
pass and restic's read (restic restores the mtime it saw): it is reported as changed during backup, a
warning, never as corruption. A file equal in size and mtime but different in content is corruption.
A file that was already damaged or not DICOM at backup time (its hash equals the manifest's) is a warning
about the source, not a failure of the backup.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.manifest import (
    DICOM,
    MANIFEST_DIR_NAME,
    OTHER,
    READ_BYTES,
    SPECIAL,
    SYMLINK,
    UNPARSEABLE,
    UNREADABLE,
    Entry,
    Manifest,
)
from backupctl.process import worker_pool
from backupctl.progress import NullProgress, Progress, Task
from backupctl.verify.findings import ERROR, NOTE, WARNING, Finding

BATCH_FILES = 32
INPROCESS_BELOW = 32
WHOLE_FILE_BYTES = 64 << 20     # files up to this size are read into memory once, hashed and parsed from there


def restored_path(root: Path, entry_path: str) -> Path:
    """Where restic restores a snapshot path under `root` (it keeps the absolute path below the target)."""
    return root / entry_path.lstrip("/")


def _sha256_streamed(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(READ_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _read_and_hash(path: Path, size: int) -> tuple[str, bytes | None]:
    """SHA-256 of the file and, when it is small enough to hold, its bytes: the DICOM check parses those
    same bytes instead of reading the file a second time."""
    if size > WHOLE_FILE_BYTES:
        return _sha256_streamed(path), None
    with open(path, "rb", buffering=0) as fh:
        data = fh.read()
    return hashlib.sha256(data).hexdigest(), data


@dataclass(slots=True)
class FileCheck:
    """What checking one restored file found: its presence and SHA-256 ('hash'), then the DICOM parse."""

    hash: list[Finding] = field(default_factory=list)
    dicom: list[Finding] = field(default_factory=list)
    parsed: bool = False             # the DICOM check ran (an intact DICOM or .dcm file, or a damaged one)
    intact: bool | None = None       # None: no content check applies (missing, symlink, changed during backup...)
    decoded: str | None = None       # the transfer syntax (name) its pixel data was decoded in

    @property
    def findings(self) -> list[Finding]:
        return self.hash + self.dicom


def check_restored_file(path: Path, entry: Entry, decode: bool = False, known_changed: bool = False) -> list[Finding]:
    """Every finding for one restored file: presence, SHA-256, and for DICOM the full parse check.

    `known_changed`: the backup's own cross-check (catalog) saw this file change while it was backed up.
    """
    return check_once(path, entry, decode, known_changed).findings


def check_once(path: Path, entry: Entry, decode: bool = False, known_changed: bool = False, *,
               parse: bool = True, parse_damaged: bool = True) -> FileCheck:
    """`check_restored_file` with its findings kept apart, reading the file once: its bytes are hashed,
    then (`parse`) parsed as DICOM. `parse_damaged`: parse files whose hash differs too (their parse errors
    say how they are damaged); a restore drill parses only intact files."""
    result = FileCheck()
    result.hash, result.intact, data = _hash_findings(path, entry, known_changed)
    if result.intact is None or not parse or not (result.intact or parse_damaged):
        return result
    result.dicom, result.parsed, result.decoded = dicom_findings(path, data, entry, decode, result.intact)
    return result


def _hash_findings(path: Path, entry: Entry, known_changed: bool) -> tuple[list[Finding], bool | None, bytes | None]:
    """(findings, intact, the bytes read when held in memory). `intact` is None when no content check
    applies (missing, symlink, changed during backup, ...), else whether the bytes match."""
    subject = entry.path
    if entry.kind == SPECIAL:
        return [], None, None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return [Finding(ERROR, "missing", subject, "in the manifest but not restored")], None, None
    if entry.kind == SYMLINK:
        return ([] if path.is_symlink() else [Finding(ERROR, "altered", subject, "was a symlink")]), None, None
    if entry.kind == UNREADABLE:
        return [Finding(WARNING, "source-unreadable", subject,
                        entry.error or "could not be read at backup time")], None, None
    try:
        digest, data = _read_and_hash(path, st.st_size)
    except OSError as exc:
        return [Finding(ERROR, "unreadable", subject, f"cannot read the restored file: {exc.strerror}")], None, None
    intact = digest == entry.sha256
    # restic restores the mtime it read: another mtime means restic read another version than the
    # manifest pass did, and the manifest cannot vouch for it (the same mtime with other bytes is damage)
    if not intact and (known_changed or st.st_mtime_ns != entry.mtime_ns):
        return [Finding(WARNING, "changed-during-backup", subject,
                        "modified between the manifest pass and restic's read; the manifest cannot vouch for it")], \
            None, None
    if not intact:
        size = f"; {st.st_size} bytes, the manifest says {entry.size}" if st.st_size != entry.size else ""
        return [Finding(ERROR, "hash-mismatch", subject,
                        f"SHA-256 {digest[:12]}… differs from the manifest's {entry.sha256[:12]}…{size}")], \
            False, data
    return [], True, data


def dicom_findings(path: Path, data: bytes | None, entry: Entry, decode: bool,
                   intact: bool) -> tuple[list[Finding], bool, str | None]:
    """The DICOM half of a file's check, on its bytes when the hash pass kept them (else read from `path`):
    (findings, whether a parse ran, the transfer syntax its pixel data was decoded in).

    Findings name the file's class (dicom, dicom-no-meta), its modality and SOP instance, the cause, and
    whether the file was already so at backup time. A transfer syntax no installed decoder covers is a
    'not-decoded' note naming it: a gap the report shows, not a fault of the file."""
    from backupctl.dicom.parse import NO_META, check_bytes, check_file

    if not (entry.kind == DICOM or (entry.kind in (OTHER, UNPARSEABLE) and path.suffix.lower() == ".dcm")
            or not intact):
        return [], False, None

    def check(expected: dict[str, str | None] | None, decode: bool):  # noqa: ANN202 - a DicomCheck
        return check_bytes(data, expected, decode) if data is not None else check_file(path, expected, decode)

    if entry.kind != DICOM and intact:
        # the manifest already knew: the source itself holds a non-DICOM or broken .dcm file
        result = check(None, False)
        if entry.kind == OTHER and result.ok:
            # a dataset without file meta, which manifests before 'dicom-no-meta' recorded as not DICOM
            return [Finding(NOTE, "dicom-note", entry.path, f"{result.file_class}: parses completely; the "
                                                            "manifest recorded it as not DICOM")], True, None
        kind = "not-dicom" if entry.kind == OTHER else result.status if not result.ok else "unparseable"
        why = "named .dcm but not DICOM" if entry.kind == OTHER else "; ".join(result.problems) or entry.error
        return [Finding(WARNING, kind, entry.path, f"{why}; it was so at backup time (source problem)")], True, None
    if entry.kind != DICOM:
        return [], False, None
    result = check(entry.dicom, decode)
    facts = entry.dicom or {}
    about = _about("dicom-no-meta" if facts.get("format") == NO_META else result.file_class, facts)
    out = []
    if not result.ok:
        # intact bytes but failing parse: the file was damaged before it was backed up
        severity, origin = (WARNING, "; it was so at backup time (source problem)") if intact \
            else (ERROR, "; damaged since the backup")
        out += [Finding(severity, kind, entry.path, f"{about}: {words}{origin}")
                for kind, words in result.by_kind().items()]
    if result.no_decoder is not None:
        out.append(Finding(NOTE, "not-decoded", entry.path,
                           f"{about}: no decoder installed for transfer syntax {result.no_decoder}"))
    out += [Finding(NOTE, "dicom-note", entry.path, f"{about}: {n}") for n in result.notes]
    decoded = _syntax_name(result.facts.get("transfer_syntax")) if result.decoded else None
    return out, True, decoded


def _syntax_name(uid: str | None) -> str | None:
    from pydicom.uid import UID

    return UID(uid).name if uid else None


def _about(file_class: str, facts: dict[str, str | None]) -> str:
    """Which object a finding is about, in the words a PACS admin searches by (UIDs, never patient data)."""
    parts = [file_class]
    if facts.get("modality"):
        parts.append(str(facts["modality"]))
    if facts.get("sop_instance"):
        parts.append(f"instance {facts['sop_instance']}")
    if facts.get("series"):
        parts.append(f"series {facts['series']}")
    if facts.get("study"):
        parts.append(f"study {facts['study']}")
    return " ".join(parts)


# proving files while restic still restores --------------------------------------------------------------
#
# restic 0.14 writes a file's blobs in pack order, possibly in several pieces, into a file it first
# preallocates at its full size: neither the size nor the file being closed says a file is complete. Its
# bytes hashing to the manifest's SHA-256 does: a partly written file cannot have the complete file's hash.
# One case remains: while a blob is not written yet, its place reads as zeros, so if the manifest's version
# has zeros exactly there and restic's version (a file changed during the backup, same size and mtime) has
# something else, the file would match early and change later. So a file proven early also records where it
# is all zeros, and once restic has ended those regions are read again: still zeros, the proof stands.


def prove_early(path: Path, entry: Entry, decode: bool, parse: bool) -> EarlyProof | int:
    """While restic restores: the check of a file whose bytes already hash to the manifest's SHA-256, with
    its zero regions; otherwise the mtime it had when read (worth trying again only once it changes)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            mtime_ns = os.fstat(fh.fileno()).st_mtime_ns
            data = fh.read(entry.size + 1)
    except OSError:
        return 0
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        return mtime_ns
    check = FileCheck(intact=True)
    if parse:
        check.dicom, check.parsed, check.decoded = dicom_findings(path, data, entry, decode, True)
    return EarlyProof(check, zero_regions(data))


@dataclass(slots=True)
class EarlyProof:
    check: FileCheck
    zeros: list[tuple[int, int]]     # [start, end) of every region where a blob may still be unwritten


MIN_BLOB = 512 << 10     # restic's chunker cuts no blob smaller than this, except a file's last one
_PROBE = 4096


def zero_regions(data: bytes) -> list[tuple[int, int]]:
    """The all-zero regions of `data` that could be a blob restic has not written yet: the zeros the file
    ends with (its last blob, or the whole file when it is one blob), and any run of zeros at least
    MIN_BLOB long (every other blob is at least that long)."""
    size = len(data)
    found: list[tuple[int, int]] = []
    # a run of MIN_BLOB zeros covers a whole _PROBE block at some multiple of MIN_BLOB / 2
    for at in range(0, size - _PROBE + 1, MIN_BLOB // 2):
        if found and at < found[-1][1]:
            continue
        if data.startswith(_ZERO_BLOCKS[_PROBE], at):
            start, end = _zeros_before(data, at), _zeros_after(data, at)
            if end - start >= MIN_BLOB:
                found.append((start, end))
    tail = _zeros_before(data, size)
    if tail < size and not (found and found[-1][1] == size):
        found.append((tail, size))
    return found


# bytes.startswith/endswith compare in place (memcmp); a memoryview comparison goes byte by byte
_STEPS = (64 << 10, 4096)
_ZERO_BLOCKS = {step: bytes(step) for step in _STEPS}
_READ_BACK = _STEPS[0]


def _zeros_before(data: bytes, end: int) -> int:
    """Where the run of zero bytes that ends at `end` starts."""
    for step in _STEPS:
        while end >= step and data.endswith(_ZERO_BLOCKS[step], end - step, end):
            end -= step
    chunk = data[max(0, end - _STEPS[-1]):end]
    return end - (len(chunk) - len(chunk.rstrip(b"\0")))


def _zeros_after(data: bytes, start: int) -> int:
    """Where the run of zero bytes that starts at `start` ends."""
    for step in _STEPS:
        while data.startswith(_ZERO_BLOCKS[step], start):
            start += step
    chunk = data[start:start + _STEPS[-1]]
    return start + (len(chunk) - len(chunk.lstrip(b"\0")))


def still_proven(path: Path, entry: Entry, zeros: list[tuple[int, int]]) -> bool:
    """Once restic has ended: the file proven early still has the manifest's size, and its zero regions are
    still zeros (restic wrote nothing else there since)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            if os.fstat(fh.fileno()).st_size != entry.size:
                return False
            for start, end in zeros:
                fh.seek(start)
                for at in range(start, end, _READ_BACK):
                    chunk = fh.read(min(_READ_BACK, end - at))
                    if len(chunk) != min(_READ_BACK, end - at) or not _ZERO_BLOCKS[_READ_BACK].startswith(chunk):
                        return False
    except OSError:
        return False
    return True


# the whole tree --------------------------------------------------------------------------------------------


@dataclass
class TreeCheck:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    dicom: int = 0
    decoded: int = 0
    decoded_by_syntax: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    studies: dict[str, bool] = field(default_factory=dict)   # study uid -> every file of it held

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def add(self, e: Entry, found: list[Finding], decoded: str | None = None) -> None:
        """Count one checked entry and its findings (`decoded`: the syntax its pixel data was decoded in)."""
        self.findings += found
        if e.sha256 is not None:
            self.files += 1
            self.bytes += e.size
        if e.kind == DICOM:
            self.dicom += 1
            if decoded is not None:
                self.decoded += 1
                self.decoded_by_syntax[decoded] = self.decoded_by_syntax.get(decoded, 0) + 1
            if e.study:
                ok = not any(f.severity == ERROR for f in found)
                self.studies[e.study] = self.studies.get(e.study, True) and ok


def decode_set(entries: list[Entry], count: int, seed: int | None) -> set[str]:
    """The DICOM files whose pixel data is decoded: one of every transfer syntax the entries hold (a codec
    fault shows only in its own syntax), then more at random up to `count` files. None when `count` is 0."""
    dicom = sorted((e.path, (e.dicom or {}).get("transfer_syntax") or "") for e in entries if e.kind == DICOM)
    if count <= 0 or not dicom:
        return set()
    rng = random.Random(seed)
    by_syntax: dict[str, list[str]] = {}
    for path, syntax in dicom:
        by_syntax.setdefault(syntax, []).append(path)
    chosen = {rng.choice(paths) for _, paths in sorted(by_syntax.items())}
    rest = [path for path, _ in dicom if path not in chosen]
    chosen.update(rng.sample(rest, max(0, min(count - len(chosen), len(rest)))))
    return chosen


Work = tuple[Entry, bool, bool]   # entry, decode its pixels, known to have changed during backup


def _check_batch(root: str, batch: list[Work]) -> list[FileCheck]:
    base = Path(root)
    return [check_once(restored_path(base, e.path), e, decode, changed) for e, decode, changed in batch]


def _batches(items: list[Work]) -> Iterator[list[Work]]:
    for i in range(0, len(items), BATCH_FILES):
        yield items[i:i + BATCH_FILES]


def verify_restored_tree(root: Path, manifest: Manifest, *, entries: list[Entry] | None = None,
                         decode: int = 0, seed: int | None = None, workers: int | None = None,
                         progress: Progress | None = None, changed: set[str] | frozenset[str] = frozenset(),
                         unlisted: bool | None = None) -> TreeCheck:
    """Check the restored files under `root` against `manifest` (all entries, or `entries` only).

    Each file is read once: its bytes are hashed, then parsed when it is DICOM. `decode` DICOM files (chosen
    at random with `seed`) also get their pixel data decoded. When every entry is checked (or `unlisted` is
    true), files restored but absent from the manifest are reported too. `changed`: paths the backup's own
    cross-check saw change while it ran (from the catalog, when there is one).
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    whole = entries is None if unlisted is None else unlisted
    chosen = list(manifest.entries if entries is None else entries)
    to_decode = decode_set(chosen, decode, seed)
    work = [(e, e.path in to_decode, e.path in changed) for e in chosen]
    workers = workers or os.cpu_count() or 1
    result = TreeCheck()
    per_entry: list[tuple[Entry, FileCheck]] = []
    with progress.task("verify restored files", total=sum(e.size for e in chosen), unit="B") as task:
        if workers <= 1 or len(work) < INPROCESS_BELOW:
            for e, dec, chg in work:
                per_entry.append((e, check_once(restored_path(root, e.path), e, dec, chg)))
                task.advance(e.size)
        else:
            per_entry = _run_pool(root, work, workers, task)
    for e, found in per_entry:
        result.add(e, found.findings, found.decoded)
    if whole:
        result.findings += _unlisted(root, manifest)
    result.seconds = time.monotonic() - started
    return result


def _run_pool(root: Path, work: list[Work], workers: int, task: Task) -> list[tuple[Entry, FileCheck]]:
    out: list[tuple[Entry, FileCheck]] = []
    with worker_pool(workers) as pool:
        pending: dict[Future[list[FileCheck]], list[Work]] = {}

        def collect(fut: Future[list[FileCheck]]) -> None:
            batch = pending.pop(fut)
            for (e, _, _), found in zip(batch, fut.result(), strict=True):
                out.append((e, found))
                task.advance(e.size)

        for batch in _batches(work):
            pending[pool.submit(_check_batch, str(root), batch)] = batch
            if len(pending) >= workers * 3:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    collect(fut)
        for fut in list(pending):
            collect(fut)
    return out


def _unlisted(root: Path, manifest: Manifest) -> list[Finding]:
    """Files restored that the manifest does not list (created between the manifest pass and restic)."""
    known = {e.path for e in manifest.entries}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != MANIFEST_DIR_NAME]
        for name in filenames:
            snap_path = "/" + os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if snap_path not in known:
                found.append(Finding(WARNING, "unlisted", snap_path,
                                     "restored but not in the manifest (added during the backup?)"))
    return found
