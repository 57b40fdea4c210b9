"""Checking a restored tree against its signed manifest: SHA-256 of every file, full DICOM parse.

The API restore drills build on:

* `check_restored_file(path, entry, decode)`: the findings for one restored file;
* `verify_restored_tree(root, manifest, ...)`: every (or a chosen subset of) manifest entry under `root`,
  in a process pool, with per-study results for coverage.

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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
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
from backupctl.progress import NullProgress, Progress, Task
from backupctl.verify.findings import ERROR, NOTE, WARNING, Finding

BATCH_FILES = 32
INPROCESS_BELOW = 32


def restored_path(root: Path, entry_path: str) -> Path:
    """Where restic restores a snapshot path under `root` (it keeps the absolute path below the target)."""
    return root / entry_path.lstrip("/")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(READ_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def check_restored_file(path: Path, entry: Entry, decode: bool = False, known_changed: bool = False) -> list[Finding]:
    """Every finding for one restored file: presence, SHA-256, and for DICOM the full parse check.

    `known_changed`: the backup's own cross-check (catalog) saw this file change while it was backed up.
    """
    findings, intact = hash_restored_file(path, entry, known_changed)
    if intact is None:
        return findings
    return findings + dicom_restored_file(path, entry, decode, intact)


def hash_restored_file(path: Path, entry: Entry, known_changed: bool = False) -> tuple[list[Finding], bool | None]:
    """The presence and SHA-256 half of `check_restored_file`: (findings, intact). `intact` is None when no
    content check applies (missing, symlink, changed during backup, ...), else whether the bytes match."""
    subject = entry.path
    if entry.kind == SPECIAL:
        return [], None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return [Finding(ERROR, "missing", subject, "in the manifest but not restored")], None
    if entry.kind == SYMLINK:
        return ([] if path.is_symlink() else [Finding(ERROR, "altered", subject, "was a symlink")]), None
    if entry.kind == UNREADABLE:
        return [Finding(WARNING, "source-unreadable", subject, entry.error or "could not be read at backup time")], None
    try:
        digest = _sha256(path)
    except OSError as exc:
        return [Finding(ERROR, "unreadable", subject, f"cannot read the restored file: {exc.strerror}")], None
    intact = digest == entry.sha256
    # restic restores the mtime it read: another mtime means restic read another version than the
    # manifest pass did, and the manifest cannot vouch for it (the same mtime with other bytes is damage)
    if not intact and (known_changed or st.st_mtime_ns != entry.mtime_ns):
        return [Finding(WARNING, "changed-during-backup", subject,
                        "modified between the manifest pass and restic's read; the manifest cannot vouch for it")], None
    if not intact:
        size = f"; {st.st_size} bytes, the manifest says {entry.size}" if st.st_size != entry.size else ""
        return [Finding(ERROR, "hash-mismatch", subject,
                        f"SHA-256 {digest[:12]}… differs from the manifest's {entry.sha256[:12]}…{size}")], False
    return [], True


def dicom_restored_file(path: Path, entry: Entry, decode: bool, intact: bool) -> list[Finding]:
    """The DICOM half of `check_restored_file`, for a file whose hash check said `intact`."""
    from backupctl.dicom.parse import check_file

    if entry.kind == DICOM or (entry.kind in (OTHER, UNPARSEABLE) and path.suffix.lower() == ".dcm") or not intact:
        return _dicom_findings(path, entry, decode, intact, check_file)
    return []


def _dicom_findings(path: Path, entry: Entry, decode: bool, intact: bool, check_file) -> list[Finding]:  # noqa: ANN001
    if entry.kind != DICOM and intact:
        # the manifest already knew: the source itself holds a non-DICOM or broken .dcm file
        result = check_file(path, None, decode=False)
        kind = "not-dicom" if entry.kind == OTHER else result.status if not result.ok else "unparseable"
        why = "named .dcm but not DICOM" if entry.kind == OTHER else "; ".join(result.problems) or entry.error
        return [Finding(WARNING, kind, entry.path, f"{why}; it was so at backup time (source problem)")]
    if entry.kind != DICOM:
        return []
    result = check_file(path, entry.dicom, decode=decode)
    out = []
    if not result.ok:
        # intact bytes but failing parse: the file was damaged before it was backed up
        severity, origin = (WARNING, "; it was so at backup time (source problem)") if intact else (ERROR, "")
        out += [Finding(severity, kind, entry.path, words + origin) for kind, words in result.by_kind().items()]
    out += [Finding(NOTE, "not-decoded", entry.path, n) for n in result.notes]
    return out


# the whole tree --------------------------------------------------------------------------------------------


@dataclass
class TreeCheck:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    dicom: int = 0
    decoded: int = 0
    seconds: float = 0.0
    studies: dict[str, bool] = field(default_factory=dict)   # study uid -> every file of it held

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)


def _decode_set(entries: list[Entry], count: int, seed: int | None) -> set[str]:
    dicom = sorted(e.path for e in entries if e.kind == DICOM)
    if count <= 0 or not dicom:
        return set()
    return set(random.Random(seed).sample(dicom, min(count, len(dicom))))


Work = tuple[Entry, bool, bool]   # entry, decode its pixels, known to have changed during backup


def _check_one(path: Path, entry: Entry, decode: bool, changed: bool, only: str | None) -> list[Finding]:
    if only == "hash":
        return hash_restored_file(path, entry, changed)[0]
    if only == "dicom":  # the caller passes only entries whose hash check held
        return dicom_restored_file(path, entry, decode, True)
    return check_restored_file(path, entry, decode, changed)


def _check_batch(root: str, batch: list[Work], only: str | None = None) -> list[list[Finding]]:
    base = Path(root)
    return [_check_one(restored_path(base, e.path), e, decode, changed, only) for e, decode, changed in batch]


def _batches(items: list[Work]) -> Iterator[list[Work]]:
    for i in range(0, len(items), BATCH_FILES):
        yield items[i:i + BATCH_FILES]


def verify_restored_tree(root: Path, manifest: Manifest, *, entries: list[Entry] | None = None,
                         decode: int = 0, seed: int | None = None, workers: int | None = None,
                         progress: Progress | None = None, changed: set[str] | frozenset[str] = frozenset(),
                         only: str | None = None, unlisted: bool | None = None) -> TreeCheck:
    """Check the restored files under `root` against `manifest` (all entries, or `entries` only).

    `decode` DICOM files (chosen at random with `seed`) also get their pixel data decoded. When every
    entry is checked (or `unlisted` is true), files restored but absent from the manifest are reported too.
    `changed`: paths the backup's own cross-check saw change while it ran (from the catalog, when there is
    one). `only` runs one half of the check: "hash" (presence and SHA-256) or "dicom" (the parse check, for
    entries whose hash check already held), so restore drills can time the two apart.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    whole = entries is None if unlisted is None else unlisted
    chosen = list(manifest.entries if entries is None else entries)
    to_decode = _decode_set(chosen, decode, seed)
    work = [(e, e.path in to_decode, e.path in changed) for e in chosen]
    workers = workers or os.cpu_count() or 1
    result = TreeCheck()
    per_entry: list[tuple[Entry, list[Finding]]] = []
    with progress.task("verify restored files", total=sum(e.size for e in chosen), unit="B") as task:
        if workers <= 1 or len(work) < INPROCESS_BELOW:
            for e, dec, chg in work:
                per_entry.append((e, _check_one(restored_path(root, e.path), e, dec, chg, only)))
                task.advance(e.size)
        else:
            per_entry = _run_pool(root, work, workers, task, only)
    for e, found in per_entry:
        result.findings += found
        if e.sha256 is not None:
            result.files += 1
            result.bytes += e.size
        if e.kind == DICOM:
            result.dicom += 1
            result.decoded += e.path in to_decode and not any(f.kind == "not-decoded" for f in found)
            study = e.study
            if study:
                ok = not any(f.severity == ERROR for f in found)
                result.studies[study] = result.studies.get(study, True) and ok
    if whole:
        result.findings += _unlisted(root, manifest)
    result.seconds = time.monotonic() - started
    return result


def _run_pool(root: Path, work: list[Work], workers: int, task: Task,
              only: str | None = None) -> list[tuple[Entry, list[Finding]]]:
    out: list[tuple[Entry, list[Finding]]] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        pending: dict[Future[list[list[Finding]]], list[Work]] = {}

        def collect(fut: Future[list[list[Finding]]]) -> None:
            batch = pending.pop(fut)
            for (e, _, _), found in zip(batch, fut.result(), strict=True):
                out.append((e, found))
                task.advance(e.size)

        for batch in _batches(work):
            pending[pool.submit(_check_batch, str(root), batch, only)] = batch
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
