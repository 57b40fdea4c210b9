"""The signed manifest of a snapshot: every file's size, mtime, SHA-256 and DICOM header facts.

A manifest is gzip-compressed JSON lines: a header line, one line per file sorted by path, a trailer line
with the counts. It is signed with the Ed25519 key (a detached `.sig` JSON beside it) and written to a
folder named `.backupctl-manifest` that the backup adds to the restic snapshot, so every snapshot carries
the description of itself: a restore can be verified with the public key alone, without the catalog.

Building is incremental: a file whose (size, mtime_ns, inode) equal the previous manifest's entry keeps
that entry without being read. Files to read are hashed and parsed in a process pool using every core;
each file is read once (its first block feeds both the hash and the DICOM header parse). Patient IDs are
replaced by a keyed hash (HMAC-SHA256, key derived from the signing key) before anything leaves the worker.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from backupctl.errors import IntegrityError
from backupctl.fsutil import atomic_write_bytes
from backupctl.progress import NullProgress, Progress
from backupctl.signing import SigningKey, VerifyKey, patient_hash, signature_document, verify_document

FORMAT = "backupctl-manifest/1"
MANIFEST_DIR_NAME = ".backupctl-manifest"        # the folder the snapshot holds; found by this name
MANIFEST_NAME = "manifest.jsonl.gz"
SIGNATURE_NAME = MANIFEST_NAME + ".sig"

HEAD_BYTES = 64 * 1024          # first read of a file: holds a typical DICOM header whole
READ_BYTES = 1 << 20
BATCH_FILES = 64
BATCH_BYTES = 64 << 20
INPROCESS_BELOW = 48            # so few files to read that starting workers costs more than it saves
STABLE_RETRIES = 2              # re-read a file that changed while it was hashed, this many times

# kinds of entries
DICOM, OTHER, UNPARSEABLE, UNREADABLE, SYMLINK, SPECIAL = (
    "dicom", "other", "dicom-unparseable", "unreadable", "symlink", "special")


class ManifestError(IntegrityError):
    """A manifest is missing, malformed, or its signature does not verify."""


@dataclass(slots=True)
class Entry:
    """One file of a snapshot as the manifest records it."""

    path: str                      # absolute, as restic stores it
    size: int
    mtime_ns: int
    ino: int
    kind: str                      # dicom | other | dicom-unparseable | unreadable | symlink | special
    sha256: str | None = None
    dicom: dict[str, str | None] | None = None   # facts; 'patient' is the keyed hash
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "ino": self.ino,
                "kind": self.kind, "sha256": self.sha256}
        if self.dicom is not None:
            data["dicom"] = self.dicom
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(data["path"], int(data["size"]), int(data["mtime_ns"]), int(data.get("ino", 0)),
                   data["kind"], data.get("sha256"), data.get("dicom"), data.get("error"))

    @property
    def study(self) -> str | None:
        return self.dicom.get("study") if self.dicom else None


@dataclass
class Manifest:
    header: dict[str, Any]
    entries: list[Entry]

    @property
    def job(self) -> str:
        return str(self.header.get("job", ""))

    @property
    def key_id(self) -> str:
        return str(self.header.get("key_id", ""))

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def files(self) -> Iterator[Entry]:
        """Entries restic restores as regular files with content (what hash checks apply to)."""
        return (e for e in self.entries if e.sha256 is not None)

    def studies(self) -> dict[str, StudySummary]:
        found: dict[str, StudySummary] = {}
        for e in self.entries:
            if e.kind != DICOM or not e.study:
                continue
            s = found.setdefault(e.study, StudySummary(e.study))
            s.instances += 1
            s.bytes += e.size
            if e.dicom and e.dicom.get("series"):
                s.series.add(e.dicom["series"])
            if e.dicom and e.dicom.get("modality"):
                s.modalities.add(e.dicom["modality"])
        return found

    def study_entries(self, study_uid: str) -> list[Entry]:
        return [e for e in self.entries if e.study == study_uid]


@dataclass
class StudySummary:
    study: str
    instances: int = 0
    bytes: int = 0
    series: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)


@dataclass
class BuildStats:
    files: int = 0                 # entries in the manifest
    bytes: int = 0                 # bytes of all files
    hashed: int = 0                # files read this time
    hashed_bytes: int = 0
    reused: int = 0                # entries kept from the previous manifest
    dicom: int = 0                 # DICOM entries (parsed now or reused)
    dicom_parsed: int = 0          # DICOM headers parsed this time
    not_dicom: int = 0
    problems: int = 0              # unreadable or unparseable
    id_in_path: int = 0            # DICOM files whose path contains their own Patient ID
    seconds: float = 0.0
    workers: int = 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        secs = self.seconds or 1e-9
        data["files_per_second"] = round(self.hashed / secs, 1)
        data["mb_per_second"] = round(self.hashed_bytes / secs / 1e6, 1)
        return data


# walking the sources --------------------------------------------------------------------------------------


def _restic_pattern_match(pattern: str, path: str) -> bool:
    """restic's exclude semantics: '/'-separated glob parts, '**' any depth, relative patterns match anywhere."""
    pattern = pattern.rstrip("/")
    parts = [p for p in pattern.split("/") if p]
    if not pattern.startswith("/"):
        parts = ["**", *parts]
    names = [p for p in path.split("/") if p]
    return _match_parts(parts, names)


def _match_parts(parts: list[str], names: list[str]) -> bool:
    if not parts:
        return not names
    head = parts[0]
    if head == "**":
        return any(_match_parts(parts[1:], names[i:]) for i in range(len(names) + 1))
    return bool(names) and fnmatchcase(names[0], head) and _match_parts(parts[1:], names[1:])


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(_restic_pattern_match(p, path) for p in patterns)


def is_excluded(path: str, patterns: Iterable[str]) -> bool:
    """True when restic would skip `path`: it, or a folder above it, matches a pattern."""
    patterns = list(patterns)
    parts = path.rstrip("/").split("/")
    return any(_matches("/".join(parts[:i]) or "/", patterns) for i in range(2, len(parts) + 1))


@dataclass(slots=True)
class _Found:
    path: str
    st: os.stat_result


def walk_sources(sources: Iterable[Path], excludes: list[str] = ()) -> Iterator[_Found]:
    """Every non-directory under the sources (not following symlinks), skipping excluded paths as restic does."""
    stack = []
    for src in sources:
        path = os.path.abspath(os.fspath(src))
        if excludes and is_excluded(path, excludes):
            continue
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            stack.append(path)
        else:
            yield _Found(path, st)
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda d: d.name)
        except OSError:
            continue  # restic reports unreadable folders; nothing of it can be listed here either
        subdirs = []
        for child in children:
            if excludes and _matches(child.path, excludes):  # the folders above were checked already
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if child.name != MANIFEST_DIR_NAME:   # a manifest never describes manifests
                    subdirs.append(child.path)
            else:
                yield _Found(child.path, st)
        stack.extend(reversed(subdirs))


# reading one file (runs in the worker processes) ---------------------------------------------------------

_worker_key: bytes = b""


def _init_worker(patient_key: bytes) -> None:
    global _worker_key
    _worker_key = patient_key


def _hash_once(path: str, buf: bytearray) -> tuple[str, bytes, int, os.stat_result, os.stat_result]:
    view = memoryview(buf)
    h = hashlib.sha256()
    read = 0
    with open(path, "rb", buffering=0) as fh:
        before = os.fstat(fh.fileno())
        head = fh.read(HEAD_BYTES)
        h.update(head)
        read += len(head)
        n = fh.readinto(buf)
        while n:
            h.update(view[:n])
            read += n
            n = fh.readinto(buf)
        after = os.fstat(fh.fileno())
    return h.hexdigest(), head, read, before, after


def _same_version(a: os.stat_result, b: os.stat_result, read: int) -> bool:
    return a.st_size == b.st_size == read and a.st_mtime_ns == b.st_mtime_ns


def read_file_entry(path: str, patient_key: bytes, buf: bytearray | None = None) -> Entry:
    """Hash one file and, when it is DICOM, parse its header facts. Never raises for a bad file."""
    from backupctl.dicom.parse import NotDicom, header_facts  # pydicom only where files are parsed

    buf = buf if buf is not None else bytearray(READ_BYTES)
    try:
        for _ in range(STABLE_RETRIES + 1):
            digest, head, read, before, after = _hash_once(path, buf)
            if _same_version(before, after, read):
                break
        else:
            return Entry(path, after.st_size, after.st_mtime_ns, after.st_ino, UNREADABLE,
                         error="kept changing while it was read")
    except OSError as exc:
        return Entry(path, 0, 0, 0, UNREADABLE, error=f"cannot read: {exc.strerror}")
    entry = Entry(path, read, after.st_mtime_ns, after.st_ino, OTHER, digest)
    try:
        facts = header_facts(head, path, whole_file=read <= len(head))
    except NotDicom:
        return entry
    except ValueError as exc:
        entry.kind, entry.error = UNPARSEABLE, str(exc)
        return entry
    patient = facts.pop("patient_id", None)
    facts["patient"] = patient_hash(patient_key, patient) if patient else None
    if patient and patient in path:
        facts["id_in_path"] = "yes"   # the layout names folders by Patient ID: paths themselves identify
    entry.kind, entry.dicom = DICOM, facts
    return entry


def _read_batch(paths: list[str]) -> list[Entry]:
    buf = bytearray(READ_BYTES)
    return [read_file_entry(p, _worker_key, buf) for p in paths]


# building ------------------------------------------------------------------------------------------------


def _reusable(prev: Entry | None, st: os.stat_result) -> bool:
    return (prev is not None and prev.sha256 is not None and prev.kind != UNREADABLE
            and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns and prev.ino == st.st_ino)


def _batches(items: list[tuple[str, int]]) -> Iterator[tuple[list[str], int]]:
    batch: list[str] = []
    size = 0
    for path, nbytes in items:
        batch.append(path)
        size += nbytes
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch, size
            batch, size = [], 0
    if batch:
        yield batch, size


def _read_all(todo: list[tuple[str, int]], key: bytes, workers: int, progress: Progress) -> dict[str, Entry]:
    total = sum(n for _, n in todo)
    out: dict[str, Entry] = {}
    with progress.task("manifest: hash + parse", total=total, unit="B") as task:
        if workers <= 1 or len(todo) < INPROCESS_BELOW:
            buf = bytearray(READ_BYTES)
            for path, nbytes in todo:
                out[path] = read_file_entry(path, key, buf)
                task.advance(nbytes)
            return out
        # fork: workers inherit the imported modules, so the pool starts in milliseconds
        with ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_init_worker,
                                 initargs=(key,)) as pool:
            pending: dict[Future[list[Entry]], int] = {}
            batches = _batches(todo)
            # keep a few batches queued per worker, no more: memory stays flat for any archive size
            for batch, nbytes in batches:
                pending[pool.submit(_read_batch, batch)] = nbytes
                if len(pending) >= workers * 3:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        _collect(fut, out, task, pending.pop(fut))
            for fut in list(pending):
                _collect(fut, out, task, pending.pop(fut))
    return out


def _collect(fut: Future[list[Entry]], out: dict[str, Entry], task: Any, nbytes: int) -> None:
    for entry in fut.result():
        out[entry.path] = entry
    task.advance(nbytes)


def build_manifest(job: str, sources: list[Path], key: SigningKey, *, excludes: list[str] = (),
                   previous: Manifest | None = None, workers: int | None = None,
                   progress: Progress | None = None) -> tuple[Manifest, BuildStats]:
    """Walk the sources and describe every file, reusing `previous` entries of unchanged files."""
    progress = progress or NullProgress()
    started = time.monotonic()
    workers = workers or os.cpu_count() or 1
    patient_key = key.patient_hash_key()
    # entries of another key carry patient hashes of another key: never mix them
    prev = previous.by_path() if previous is not None and previous.key_id == key.key_id else {}
    stats = BuildStats(workers=workers)
    entries: dict[str, Entry] = {}
    todo: list[tuple[str, int]] = []
    with progress.task("manifest: scan sources", unit="files") as task:
        for found in walk_sources(sources, list(excludes)):
            st = found.st
            if stat.S_ISLNK(st.st_mode):
                entries[found.path] = Entry(found.path, st.st_size, st.st_mtime_ns, st.st_ino, SYMLINK)
            elif not stat.S_ISREG(st.st_mode):
                entries[found.path] = Entry(found.path, 0, st.st_mtime_ns, st.st_ino, SPECIAL)
            elif _reusable(old := prev.get(found.path), st):
                entries[found.path] = old
                stats.reused += 1
            else:
                todo.append((found.path, st.st_size))
            task.advance(1)
    fresh = _read_all(todo, patient_key, workers, progress)
    entries.update(fresh)
    stats.hashed = len(fresh)
    stats.hashed_bytes = sum(e.size for e in fresh.values())
    stats.dicom_parsed = sum(1 for e in fresh.values() if e.kind in (DICOM, UNPARSEABLE))
    ordered = [entries[p] for p in sorted(entries)]
    for e in ordered:
        stats.files += 1
        stats.bytes += e.size if e.sha256 else 0
        stats.dicom += e.kind == DICOM
        stats.not_dicom += e.kind == OTHER
        stats.problems += e.kind in (UNREADABLE, UNPARSEABLE)
        stats.id_in_path += bool(e.dicom and e.dicom.get("id_in_path"))
    stats.seconds = time.monotonic() - started
    # no timestamp: an unchanged archive gives a byte-identical manifest, which restic then skips
    header = {"type": "header", "format": FORMAT, "job": job, "host": os.uname().nodename,
              "sources": [os.path.abspath(os.fspath(s)) for s in sources], "key_id": key.key_id,
              "patient_id": "hmac-sha256"}
    return Manifest(header, ordered), stats


# storing ------------------------------------------------------------------------------------------------


def serialize(manifest: Manifest) -> bytes:
    """The manifest as gzip'd JSON lines; deterministic for equal content (no gzip timestamp)."""
    lines = [json.dumps(manifest.header, separators=(",", ":"), sort_keys=True)]
    dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
    lines.extend(dumps(e.to_json()) for e in manifest.entries)
    trailer = {"type": "end", "files": len(manifest.entries),
               "dicom": sum(1 for e in manifest.entries if e.kind == DICOM)}
    lines.append(json.dumps(trailer, separators=(",", ":"), sort_keys=True))
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=5, mtime=0)


def parse(data: bytes, what: str = "manifest") -> Manifest:
    """Parse serialized manifest bytes (after the signature was checked)."""
    try:
        text = gzip.decompress(data).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line]
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{what} is not a readable manifest ({type(exc).__name__})") from None
    if not rows or rows[0].get("type") != "header" or rows[0].get("format") != FORMAT:
        raise ManifestError(f"{what} has no {FORMAT} header")
    if rows[-1].get("type") != "end" or rows[-1].get("files") != len(rows) - 2:
        raise ManifestError(f"{what} is incomplete (its trailer is missing or counts differently)")
    try:
        entries = [Entry.from_json(r) for r in rows[1:-1]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{what} has a malformed entry ({exc})") from None
    return Manifest(rows[0], entries)


def write_manifest(manifest: Manifest, folder: Path, key: SigningKey) -> tuple[Path, str, bool]:
    """Write manifest + detached signature into `folder` (atomically).

    Returns (path, manifest sha256, rewritten). Identical content is not rewritten, so restic sees the
    files unmodified (Ed25519 signatures are deterministic: same bytes, same signature).
    """
    data = serialize(manifest)
    doc = signature_document(key, data)
    folder.mkdir(parents=True, exist_ok=True)
    if _holds(folder / MANIFEST_NAME, data) and _holds(folder / SIGNATURE_NAME, _sig_bytes(doc)):
        return folder / MANIFEST_NAME, doc["sha256"], False
    # the signature first: a crash between the two renames leaves a manifest that fails to verify, never
    # an unsigned one that looks complete
    atomic_write_bytes(folder / SIGNATURE_NAME, _sig_bytes(doc), mode=0o644)
    atomic_write_bytes(folder / MANIFEST_NAME, data, mode=0o644)
    return folder / MANIFEST_NAME, doc["sha256"], True


def _sig_bytes(doc: dict[str, str]) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def verify_bytes(data: bytes, signature: bytes, trusted: VerifyKey, what: str = "manifest") -> Manifest:
    """Check the signature of manifest bytes, then parse them. Raises ManifestError / SignatureInvalid."""
    try:
        doc = json.loads(signature)
    except ValueError:
        raise ManifestError(f"{what}: signature file is not JSON") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: signature file is malformed")
    verify_document(trusted, data, doc, what)
    return parse(data, what)


def load_manifest(folder: Path, trusted: VerifyKey) -> Manifest:
    """Read and verify the manifest stored in `folder` (a `.backupctl-manifest` folder)."""
    try:
        data = (folder / MANIFEST_NAME).read_bytes()
        sig = (folder / SIGNATURE_NAME).read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"no manifest in {folder} ({Path(exc.filename).name} missing)") from None
    return verify_bytes(data, sig, trusted, what=f"manifest {folder / MANIFEST_NAME}")


def find_manifest_dir(paths: Iterable[str]) -> str | None:
    """Among snapshot paths (or restored paths), the one that is the manifest folder."""
    for p in paths:
        if p.rstrip("/").rsplit("/", 1)[-1] == MANIFEST_DIR_NAME:
            return p.rstrip("/")
    return None
