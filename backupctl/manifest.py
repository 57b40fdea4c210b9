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
import io
import json
import os
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from backupctl.errors import ManifestError
from backupctl.fsutil import atomic_write_bytes, current_umask
from backupctl.identifiers import IdentifierKey
from backupctl.incident.entropy import byte_entropy, executable_preamble
from backupctl.process import signals_deferred, worker_pool
from backupctl.progress import NullProgress, Progress
from backupctl.repofiles import sha256_file
from backupctl.signing import (
    DIGEST_ALG,
    SigningKey,
    VerifyKey,
    digest_signature_document,
    patient_hash,
    verify_digest_document,
    verify_document,
)

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
    entropy: float | None = None   # bits per byte of a sample of the first block, against the file's own past
    # its serialized line, when read from a manifest to be written again unchanged (no re-encoding)
    line: bytes | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns, "ino": self.ino,
                "kind": self.kind, "sha256": self.sha256}
        if self.dicom is not None:
            data["dicom"] = self.dicom
        if self.error is not None:
            data["error"] = self.error
        if self.entropy is not None:
            data["entropy"] = self.entropy
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(data["path"], int(data["size"]), int(data["mtime_ns"]), int(data.get("ino", 0)),
                   data["kind"], data.get("sha256"), data.get("dicom"), data.get("error"), data.get("entropy"))

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
        return ManifestIndex.of(self.entries).studies

    def study_entries(self, study_uid: str) -> list[Entry]:
        return [e for e in self.entries if e.study == study_uid]


@dataclass
class StudySummary:
    study: str
    instances: int = 0
    bytes: int = 0
    series: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)
    date: str | None = None            # Study Date, YYYYMMDD
    pid: str | None = None             # keyed digest of the Patient ID (backupctl.identifiers)
    acc: str | None = None             # keyed digest of the Accession Number
    name: str | None = None            # the sealed Patient Name


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
    sources_fingerprint: str = ""  # of what the walk saw (see `sources_fingerprint`)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["sources_fingerprint"]
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
    head = parts[0].replace("[^", "[!")   # restic (Go) negates a class with ^, fnmatch with !
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


def order_key(path: str) -> list[str]:
    """Manifest order: depth first, names sorted within each folder (the order restic stores trees in).

    The walk yields files in this order, so a new manifest is written, and the previous one read, as streams:
    memory stays flat however many files the archive holds."""
    return path.split("/")


def walk_sources(sources: Iterable[Path], excludes: list[str] = ()) -> Iterator[_Found]:
    """Every non-directory under the sources (not following symlinks), in manifest order, skipping excluded
    paths as restic does."""
    roots: list[str] = []
    for path in sorted({os.path.abspath(os.fspath(s)) for s in sources}, key=order_key):
        if not any(path.startswith(r.rstrip("/") + "/") for r in roots):   # a source inside another: once
            roots.append(path)
    for path in roots:
        if excludes and is_excluded(path, excludes):
            continue
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_folder(path, excludes)
        else:
            yield _Found(path, st)


def _seen(found: _Found) -> bytes:
    st = found.st
    size = st.st_size if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else 0
    return b"%s\0%d\0%d\0%d\n" % (os.fsencode(found.path), size, st.st_mtime_ns, st.st_ino)


def sources_fingerprint(sources: Iterable[Path], excludes: list[str] = ()) -> str:
    """A digest of every path the walk finds with its size, mtime and inode: equal digests before and after
    restic mean the sources did not change in between (the test restic and the manifest use to skip files),
    proven without holding the file list in memory."""
    h = hashlib.blake2b(digest_size=32)
    for found in walk_sources(sources, excludes):
        h.update(_seen(found))
    return h.hexdigest()


def _walk_folder(root: str, excludes: list[str]) -> Iterator[_Found]:
    stack = [iter(_children(root, excludes))]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
        elif stat.S_ISDIR(found.st.st_mode):
            if not found.path.endswith("/" + MANIFEST_DIR_NAME):   # a manifest never describes manifests
                stack.append(iter(_children(found.path, excludes)))
        else:
            yield found


def _children(folder: str, excludes: list[str]) -> list[_Found]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda d: d.name)
    except OSError:
        return []  # restic reports unreadable folders; nothing of it can be listed here either
    children = []
    for child in entries:
        if excludes and _matches(child.path, excludes):  # the folders above were checked already
            continue
        try:
            children.append(_Found(child.path, child.stat(follow_symlinks=False)))
        except OSError:
            continue
    return children


# reading one file (runs in the worker processes) ---------------------------------------------------------

_worker_key: bytes = b""
_worker_ids: IdentifierKey | None = None


def _init_worker(patient_key: bytes, ids: IdentifierKey | None) -> None:
    global _worker_key, _worker_ids
    _worker_key, _worker_ids = patient_key, ids


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


def read_file_entry(path: str, patient_key: bytes, buf: bytearray | None = None,
                    ids: IdentifierKey | None = None) -> Entry:
    """Hash one file and, when it is DICOM, parse its header facts. Never raises for a bad file.
    With `ids`, the facts include the identifiers `find` looks up, keyed or sealed."""
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
    entry = Entry(path, read, after.st_mtime_ns, after.st_ino, OTHER, digest, entropy=byte_entropy(head))
    try:
        facts = header_facts(head, path, whole_file=read <= len(head))
    except NotDicom:
        return entry
    except ValueError as exc:
        entry.kind, entry.error = UNPARSEABLE, str(exc)
        return entry
    patient = facts.pop("patient_id", None)
    accession = facts.pop("accession", None)
    name = facts.pop("patient_name", None)
    facts["patient"] = patient_hash(patient_key, patient) if patient else None
    if ids is not None:   # what `find` looks up: keyed digests, the name sealed (see backupctl.identifiers)
        facts["pid"] = _keyed(ids, "pid", patient, ids.digest)
        facts["acc"] = _keyed(ids, "acc", accession, ids.digest)
        facts["name"] = _keyed(ids, "name", name, ids.seal)
    if patient and patient in path:
        facts["id_in_path"] = "yes"   # the layout names folders by Patient ID: paths themselves identify
    if (preamble := executable_preamble(head)) is not None:
        facts["preamble"] = preamble   # a DICOM/executable polyglot (CVE-2019-11687)
    entry.kind, entry.dicom = DICOM, facts
    return entry


def _keyed(ids: IdentifierKey, what: str, value: str | None, keyed: Callable[[str], str]) -> str | None:
    # a study's files share these values and come one after another: key each once per run of equal values
    if not value:
        return None
    last = _last_keyed.get(what)
    if last is None or last[0] != value or last[2] is not ids:
        last = _last_keyed[what] = (value, keyed(value), ids)
    return last[1]


_last_keyed: dict[str, tuple[str, str, IdentifierKey]] = {}


def _read_batch(paths: list[str]) -> list[Entry]:
    buf = bytearray(READ_BYTES)
    return [read_file_entry(p, _worker_key, buf, _worker_ids) for p in paths]


# building ------------------------------------------------------------------------------------------------


def _reusable(prev: Entry | None, st: os.stat_result) -> bool:
    return (prev is not None and prev.sha256 is not None and prev.kind != UNREADABLE
            and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns and prev.ino == st.st_ino)


class _Previous:
    """The previous manifest's entries, read alongside the walk (both in manifest order): a merge, not a map."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._entries = iter(entries)
        self._head: Entry | None = next(self._entries, None)

    def get(self, path: str) -> Entry | None:
        key = order_key(path)
        while self._head is not None and order_key(self._head.path) < key:
            self._head = next(self._entries, None)
        if self._head is not None and self._head.path == path:
            return self._head
        return None   # not there (or the previous manifest had another order): the file is read again


@dataclass
class _Batch:
    """Files handed to a worker together; their slots in the output wait for the batch's result."""

    paths: list[str] = field(default_factory=list)
    nbytes: int = 0
    future: Future[list[Entry]] | None = None
    result: list[Entry] | None = None


class _Reader:
    """Reads files in a process pool (started only once a batch fills) and gives entries back in walk order.

    The window of entries waiting for a slower batch ahead of them is bounded, as are the batches queued per
    worker: memory stays flat for any archive size."""

    MAX_WINDOW = 8 * BATCH_FILES

    def __init__(self, key: bytes, workers: int, task: Any, stats: BuildStats,
                 ids: IdentifierKey | None = None) -> None:
        self.key, self.workers, self.task, self.stats, self.ids = key, workers, task, stats, ids
        self.pool: Any = None   # a ProcessPoolExecutor once a batch fills
        self.window: deque[Entry | tuple[_Batch, int]] = deque()
        self.batch = _Batch()
        self.in_flight = 0
        self.buf = bytearray(READ_BYTES)

    def add_ready(self, entry: Entry) -> Iterator[Entry]:
        self.window.append(entry)
        return self._drain(block=len(self.window) > self.MAX_WINDOW)

    def add_to_read(self, path: str, nbytes: int) -> Iterator[Entry]:
        self.window.append((self.batch, len(self.batch.paths)))
        self.batch.paths.append(path)
        self.batch.nbytes += nbytes
        if len(self.batch.paths) >= BATCH_FILES or self.batch.nbytes >= BATCH_BYTES:
            self._submit()
        return self._drain(block=self.in_flight >= self.workers * 3 or len(self.window) > self.MAX_WINDOW)

    def finish(self) -> Iterator[Entry]:
        while self.window:
            yield from self._drain(block=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def _submit(self) -> None:
        batch, self.batch = self.batch, _Batch()
        if not batch.paths:
            return
        if self.pool is None and self.workers > 1 and len(batch.paths) >= BATCH_FILES // 2:
            # only runs that read many files need it; forked, they die with backupctl
            self.pool = worker_pool(self.workers, _init_worker, (self.key, self.ids))
        if self.pool is None:   # one core, or so few files that starting workers costs more than it saves
            self._done(batch, [read_file_entry(p, self.key, self.buf, self.ids) for p in batch.paths])
            return
        with signals_deferred():   # the first submit forks the workers
            batch.future = self.pool.submit(_read_batch, batch.paths)
        self.in_flight += 1

    def _done(self, batch: _Batch, entries: list[Entry]) -> None:
        batch.result = entries
        self.stats.hashed += len(entries)
        self.stats.hashed_bytes += sum(e.size for e in entries)
        self.stats.dicom_parsed += sum(1 for e in entries if e.kind in (DICOM, UNPARSEABLE))
        self.task.advance(batch.nbytes)

    def _drain(self, block: bool) -> Iterator[Entry]:
        """Emit the ready head of the window; with `block`, wait for at least the head."""
        while self.window:
            head = self.window[0]
            if isinstance(head, Entry):
                self.window.popleft()
                yield head
                continue
            batch, index = head
            if batch.result is None:
                if batch.future is None:
                    if not block:
                        return       # the batch being filled: it goes out once full
                    self._submit()   # the partial batch the head waits for
                if batch.result is None:
                    assert batch.future is not None
                    if not (block or batch.future.done()):
                        return
                    self.in_flight -= 1
                    self._done(batch, batch.future.result())
            self.window.popleft()
            yield batch.result[index]
            block = False   # waited once; go on only while entries are ready


def describe_sources(sources: list[Path], key: SigningKey, stats: BuildStats, *, excludes: list[str] = (),
                     previous: Iterable[Entry] = (), workers: int | None = None,
                     progress: Progress | None = None, ids: IdentifierKey | None = None) -> Iterator[Entry]:
    """Every file under the sources as a manifest entry, in manifest order, reusing `previous` entries (in
    manifest order too, of the same keys) of files whose size, mtime and inode are unchanged."""
    progress = progress or NullProgress()
    started = time.monotonic()
    stats.workers = workers = workers or os.cpu_count() or 1
    prev = _Previous(previous)
    seen = hashlib.blake2b(digest_size=32)
    with progress.task("manifest: hash + parse", total=None, unit="B") as task:
        reader = _Reader(key.patient_hash_key(), workers, task, stats, ids)
        try:
            for found in walk_sources(sources, list(excludes)):
                seen.update(_seen(found))
                st = found.st
                if stat.S_ISLNK(st.st_mode):
                    ready = reader.add_ready(Entry(found.path, st.st_size, st.st_mtime_ns, st.st_ino, SYMLINK))
                elif not stat.S_ISREG(st.st_mode):
                    ready = reader.add_ready(Entry(found.path, 0, st.st_mtime_ns, st.st_ino, SPECIAL))
                elif _reusable(old := prev.get(found.path), st):
                    stats.reused += 1
                    ready = reader.add_ready(old)
                else:
                    ready = reader.add_to_read(found.path, st.st_size)
                for entry in ready:
                    yield _counted(entry, stats)
            for entry in reader.finish():
                yield _counted(entry, stats)
            stats.sources_fingerprint = seen.hexdigest()
        finally:
            reader.close()
    stats.seconds = time.monotonic() - started


def _counted(e: Entry, stats: BuildStats) -> Entry:
    stats.files += 1
    stats.bytes += e.size if e.sha256 else 0
    stats.dicom += e.kind == DICOM
    stats.not_dicom += e.kind == OTHER
    stats.problems += e.kind in (UNREADABLE, UNPARSEABLE)
    stats.id_in_path += bool(e.dicom and e.dicom.get("id_in_path"))
    return e


def manifest_header(job: str, sources: list[Path], key: SigningKey,
                    ids: IdentifierKey | None = None) -> dict[str, Any]:
    # no timestamp: an unchanged archive gives a byte-identical manifest, which restic then skips
    header = {"type": "header", "format": FORMAT, "job": job, "host": os.uname().nodename,
              "sources": [os.path.abspath(os.fspath(s)) for s in sources], "key_id": key.key_id,
              "patient_id": "hmac-sha256"}
    if ids is not None:
        header["identifiers_key_id"] = ids.key_id
    return header


def same_keys(header: dict[str, Any], key: SigningKey, ids: IdentifierKey | None) -> bool:
    """True when entries under `header` were made with these keys: entries of other keys carry hashes of
    other keys (or lack the identifiers `find` needs), never to be mixed with new ones."""
    return header.get("key_id") == key.key_id and header.get("identifiers_key_id") == (ids.key_id if ids else None)


def build_manifest(job: str, sources: list[Path], key: SigningKey, *, excludes: list[str] = (),
                   previous: Manifest | None = None, workers: int | None = None,
                   progress: Progress | None = None, ids: IdentifierKey | None = None) -> tuple[Manifest, BuildStats]:
    """The whole manifest in memory (tests, benchmarks, small archives); backups stream it instead."""
    stats = BuildStats()
    prev = previous.entries if previous is not None and same_keys(previous.header, key, ids) else ()
    entries = list(describe_sources(sources, key, stats, excludes=excludes, previous=prev, workers=workers,
                                    progress=progress, ids=ids))
    return Manifest(manifest_header(job, sources, key, ids), entries), stats


# storing ------------------------------------------------------------------------------------------------


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")


@dataclass
class ManifestIndex:
    """What the catalog indexes of a manifest, gathered while it is written or read: counts, studies, series
    (grows with studies, as the catalog's study index does, never with files)."""

    files: int = 0
    content_files: int = 0          # entries with content (restic stores them as regular files)
    bytes: int = 0                  # bytes of those
    dicom: int = 0
    not_dicom: int = 0
    problems: int = 0
    studies: dict[str, StudySummary] = field(default_factory=dict)
    series: dict[str, tuple[str, int]] = field(default_factory=dict)    # series -> (study, instances)

    def add(self, e: Entry) -> None:
        self.files += 1
        if e.sha256 is not None:
            self.content_files += 1
            self.bytes += e.size
        self.dicom += e.kind == DICOM
        self.not_dicom += e.kind == OTHER
        self.problems += e.kind in (UNREADABLE, UNPARSEABLE)
        if e.kind != DICOM or not e.study or not e.dicom:
            return
        s = self.studies.setdefault(e.study, StudySummary(e.study))
        s.instances += 1
        s.bytes += e.size
        if series := e.dicom.get("series"):
            s.series.add(series)
            study, n = self.series.get(series, (e.study, 0))
            self.series[series] = (study, n + 1)
        if e.dicom.get("modality"):
            s.modalities.add(e.dicom["modality"])
        if s.instances == 1:   # a study's identifiers and date are its first instance's
            s.date, s.pid, s.acc, s.name = (e.dicom.get(k) for k in ("date", "pid", "acc", "name"))

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> ManifestIndex:
        index = cls()
        for e in entries:
            index.add(e)
        return index


class _HashingFile:
    """A binary file that also computes the SHA-256 of what is written to it."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


@dataclass
class WrittenManifest:
    path: Path
    sha256: str
    rewritten: bool                 # False: byte-identical to the manifest already there, left untouched
    index: ManifestIndex


def write_manifest_stream(header: dict[str, Any], entries: Iterable[Entry], folder: Path,
                          key: SigningKey) -> WrittenManifest:
    """Write gzip'd JSON lines + a detached signature into `folder` as the entries come (never all in memory).

    Deterministic for equal content (no gzip name or timestamp, Ed25519 signatures are deterministic), and
    identical content is not rewritten, so restic sees the files unmodified."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            out = _HashingFile(raw)
            index = _compress(out, header, entries)
            raw.flush()
            os.fsync(raw.fileno())
        sha = out.sha.hexdigest()
        path = folder / MANIFEST_NAME
        doc = digest_signature_document(key, sha)
        if _signed_as(folder / SIGNATURE_NAME, doc) and path.is_file() and sha256_file(path) == sha:
            tmp.unlink()
            return WrittenManifest(path, sha, False, index)
        # the signature first: a crash between the two renames leaves a manifest that fails to verify, never
        # an unsigned one that looks complete
        atomic_write_bytes(folder / SIGNATURE_NAME, _sig_bytes(doc))
        os.chmod(tmp, 0o666 & ~current_umask())   # study UIDs and paths: as private as the user's umask
        os.replace(tmp, path)
        return WrittenManifest(path, sha, True, index)
    finally:
        tmp.unlink(missing_ok=True)


def _compress(fileobj: Any, header: dict[str, Any], entries: Iterable[Entry]) -> ManifestIndex:
    """Header, entries and trailer as gzip'd JSON lines into `fileobj`; the index of what was written."""
    index = ManifestIndex()
    with gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=5, mtime=0) as gz:
        gz.write(_line(header))
        lines: list[bytes] = []
        for e in entries:
            index.add(e)
            lines.append(e.line or _line(e.to_json()))
            if len(lines) >= 512:   # one compressor call per block of lines, not per line
                gz.write(b"".join(lines))
                lines.clear()
        gz.write(b"".join(lines))
        gz.write(_line({"type": "end", "files": index.files, "dicom": index.dicom}))
    return index


def serialize(manifest: Manifest) -> bytes:
    """The manifest as gzip'd JSON lines, byte for byte as `write_manifest_stream` writes it."""
    buf = io.BytesIO()
    _compress(buf, manifest.header, manifest.entries)
    return buf.getvalue()


def parse(data: bytes, what: str = "manifest") -> Manifest:
    """Parse serialized manifest bytes (after the signature was checked)."""
    rows = iter_rows(io.BytesIO(data), what)
    header = next(rows)
    return Manifest(header, list(rows))


def iter_rows(fh: Any, what: str = "manifest", keep_lines: bool = False) -> Iterator[Any]:
    """The header dict, then every Entry, of a serialized manifest read as a stream; checks the trailer.
    `keep_lines`: each Entry keeps its serialized line, to be written again as it is."""
    try:
        with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            lines = (line for line in gz if line.strip())
            first = json.loads(next(lines, b"null"))
            if not isinstance(first, dict) or first.get("type") != "header" or first.get("format") != FORMAT:
                raise ManifestError(f"{what} has no {FORMAT} header")
            yield first
            for count, line in enumerate(lines):
                row = json.loads(line)
                if row.get("type") == "end":
                    if row.get("files") != count or next(lines, None) is not None:
                        raise ManifestError(f"{what} is incomplete (its trailer counts differently)")
                    return
                try:
                    entry = Entry.from_json(row)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ManifestError(f"{what} has a malformed entry ({exc})") from None
                if keep_lines and line.endswith(b"\n"):
                    entry.line = line
                yield entry
    except (OSError, EOFError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{what} is not a readable manifest ({type(exc).__name__})") from None
    raise ManifestError(f"{what} is incomplete (its trailer is missing)")


def _file_rows(path: Path, what: str, keep_lines: bool = False) -> Iterator[Any]:
    with open(path, "rb") as fh:
        yield from iter_rows(fh, what, keep_lines)


def iter_entries(path: Path, what: str = "manifest", keep_lines: bool = False) -> Iterator[Entry]:
    """Every entry of a manifest file, streamed (the caller verified its signature first)."""
    rows = _file_rows(path, what, keep_lines)
    next(rows)
    return rows


def write_manifest(manifest: Manifest, folder: Path, key: SigningKey) -> tuple[Path, str, bool]:
    """Write an in-memory manifest (see `write_manifest_stream`). Returns (path, sha256, rewritten)."""
    written = write_manifest_stream(manifest.header, manifest.entries, folder, key)
    return written.path, written.sha256, written.rewritten


def _sig_bytes(doc: dict[str, str]) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _signed_as(path: Path, doc: dict[str, str]) -> bool:
    try:
        return path.read_bytes() == _sig_bytes(doc)
    except FileNotFoundError:
        return False


def verify_file(path: Path, signature: Path, trusted: VerifyKey, what: str = "manifest") -> None:
    """Check a manifest file's detached signature in one streaming pass (no whole-file read for digest
    signatures)."""
    doc = _signature_doc(signature.read_bytes(), what)
    if doc.get("alg") == DIGEST_ALG:
        verify_digest_document(trusted, sha256_file(path), doc, what)
    else:
        verify_document(trusted, path.read_bytes(), doc, what)


def _signature_doc(signature: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(signature)
    except ValueError:
        raise ManifestError(f"{what}: signature file is not JSON") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: signature file is malformed")
    return doc


def verify_bytes(data: bytes, signature: bytes, trusted: VerifyKey, what: str = "manifest") -> Manifest:
    """Check the signature of manifest bytes, then parse them. Raises ManifestError / SignatureInvalid."""
    verify_document(trusted, data, _signature_doc(signature, what), what)
    return parse(data, what)


def load_manifest(folder: Path, trusted: VerifyKey) -> Manifest:
    """Read and verify the manifest stored in `folder` (a `.backupctl-manifest` folder)."""
    try:
        data = (folder / MANIFEST_NAME).read_bytes()
        sig = (folder / SIGNATURE_NAME).read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"no manifest in {folder} ({Path(exc.filename).name} missing)") from None
    return verify_bytes(data, sig, trusted, what=f"manifest {folder / MANIFEST_NAME}")


def verified_entries(folder: Path, trusted: VerifyKey) -> tuple[dict[str, Any], Iterator[Entry]]:
    """The header and a stream of the entries of the manifest in `folder`, its signature checked first."""
    path, what = folder / MANIFEST_NAME, f"manifest {folder / MANIFEST_NAME}"
    try:
        verify_file(path, folder / SIGNATURE_NAME, trusted, what)
    except FileNotFoundError as exc:
        raise ManifestError(f"no manifest in {folder} ({Path(exc.filename).name} missing)") from None
    rows = _file_rows(path, what, keep_lines=True)   # one read: the header, then the entries as they come
    return next(rows), rows


def find_manifest_dir(paths: Iterable[str]) -> str | None:
    """Among snapshot paths (or restored paths), the one that is the manifest folder."""
    for p in paths:
        if p.rstrip("/").rsplit("/", 1)[-1] == MANIFEST_DIR_NAME:
            return p.rstrip("/")
    return None
