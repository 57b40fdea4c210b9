"""The manifest's life around a backup, and reading it back out of a snapshot.

Before restic runs, `prepare_manifest` describes the job's sources (incrementally against the previous
manifest of the job), signs the result and writes it to `<state>/manifests/<job>/.backupctl-manifest/`;
the backup adds that folder to the restic snapshot. After the snapshot, `record_snapshot_manifest` lists
the snapshot (`restic ls --json`), marks files whose size or mtime restic saw differently as changed during
backup, and records the manifest, the study index and those changes in the catalog.

`read_snapshot_manifest` gets the manifest out of any snapshot with `restic dump` and checks its
signature: all a restore needs to be verified when the backup host and its catalog are gone.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backupctl.catalog import Catalog
from backupctl.catalog import verify as verify_rows
from backupctl.config import MANIFESTS_FOLDER, Config, Job
from backupctl.errors import IntegrityError
from backupctl.identifiers import IdentifierKey, identifier_key
from backupctl.incident.suspect import Detector, SuspectReport
from backupctl.manifest import (
    MANIFEST_DIR_NAME,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BuildStats,
    Entry,
    Manifest,
    ManifestError,
    ManifestIndex,
    describe_sources,
    find_manifest_dir,
    iter_entries,
    manifest_header,
    same_keys,
    sources_fingerprint,
    verified_entries,
    verify_bytes,
    write_manifest_stream,
)
from backupctl.progress import NullProgress, Progress
from backupctl.restic import BackupSummary, Restic, Snapshot, restic_time_ns
from backupctl.signing import SigningKey, VerifyKey, ensure_key, load_verify_key

log = logging.getLogger("backupctl.verify")


def manifest_folder(config: Config, job: str) -> Path:
    return config.state_dir / MANIFESTS_FOLDER / job / MANIFEST_DIR_NAME


def signing_key(config: Config) -> SigningKey:
    """The configured signing key; created on first use if neither half exists yet (init also creates it)."""
    key, created = ensure_key(config.signing_key)
    if created:
        log.warning("created signing key %s: back it up, and keep its .pub wherever restores are verified",
                    config.signing_key)
    return key


def trusted_key(config: Config, public_key: Path | None = None) -> VerifyKey:
    """The public key manifests must verify against: --public-key, else the .pub beside the signing key."""
    return load_verify_key(public_key or config.signing_key)


@dataclass
class PreparedManifest:
    folder: Path
    index: ManifestIndex            # counts, studies and series of the manifest (not its entries)
    sha256: str
    stats: BuildStats
    key_id: str
    rewritten: bool = True          # False: byte-identical to the previous manifest, left untouched
    sources: list[Path] = field(default_factory=list)    # what was described, to look again after restic
    excludes: list[str] = field(default_factory=list)
    suspect: SuspectReport | None = None   # the comparison with the previous manifest (ransomware signals)

    def entries(self) -> Iterator[Entry]:
        """The manifest's entries, streamed back from the file just written and signed."""
        return iter_entries(self.folder / MANIFEST_NAME)


def prepare_manifest(config: Config, job: Job, sources: list[Path], progress: Progress | None = None,
                     workers: int | None = None) -> PreparedManifest:
    """Build, sign and write the job's manifest for the snapshot about to be taken, as a stream: the walk,
    the previous manifest and the new one advance together, so memory does not grow with the archive."""
    key = signing_key(config)
    ids = identifier_key(config)
    folder = manifest_folder(config, job.name)
    stats = BuildStats()
    # one read of the previous manifest feeds both the reuse of unchanged entries and the suspect comparison
    for_reuse, for_compare = itertools.tee(_previous_entries(folder, key, ids, job.name))
    entries = describe_sources(sources, key, stats, excludes=list(job.excludes), previous=for_reuse,
                               workers=workers or config.settings.verify.workers, progress=progress, ids=ids)
    detector = Detector(config.settings.suspect, for_compare)
    written = write_manifest_stream(manifest_header(job.name, sources, key, ids), detector.watch(entries), folder,
                                    key)
    suspect = detector.finish()
    if stats.id_in_path:
        log.warning("job %s: %d DICOM files carry their Patient ID in their path; manifests, snapshots and "
                    "findings show paths as they are (the ID itself is never logged)", job.name, stats.id_in_path)
    return PreparedManifest(folder, written.index, written.sha256, stats, key.key_id, written.rewritten,
                            list(sources), list(job.excludes), suspect)


def _previous_entries(folder: Path, key: SigningKey, ids: IdentifierKey, job: str) -> Iterator[Entry]:
    """The entries of the job's previous manifest, if it verifies with this key; else none (all read again)."""
    if not (folder / MANIFEST_NAME).exists():
        return
    try:
        header, entries = verified_entries(folder, key.verify_key)
        if not same_keys(header, key, ids):   # hashes of other keys, or no identifiers: never mix them
            return
        yield from entries
    except IntegrityError as exc:  # altered, or another key: read everything again, never trust it
        log.warning("previous manifest of job %s not (fully) reused: %s", job, exc.one_line())


def sources_only(summary: BackupSummary, prepared: PreparedManifest) -> BackupSummary:
    """restic's figures without the manifest folder, so they describe the job's sources.

    restic compares with the parent snapshot (same paths, so it holds the manifest folder too): without a
    parent both manifest files are new; a rewritten manifest counts as changed; else unmodified.
    """
    files = sum(1 for p in prepared.folder.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in prepared.folder.iterdir() if p.is_file())
    snap = summary.snapshot
    adjusted = replace(summary, total_files=max(0, summary.total_files - files),
                       total_bytes=max(0, summary.total_bytes - size))
    if snap is not None and snap.parent is None:
        adjusted.files_new = max(0, summary.files_new - files)
    elif prepared.rewritten:
        adjusted.files_changed = max(0, summary.files_changed - files)
    else:
        adjusted.files_unmodified = max(0, summary.files_unmodified - files)
    return adjusted


# after the snapshot -----------------------------------------------------------------------------------------

def changed_during_backup(entries: Iterable[Entry], nodes: dict[str, tuple[int, int | None]],
                          manifest_dir: str) -> list[tuple[str, str]]:
    """(path, what differs) for files restic saw differently from the manifest pass."""
    changed = []
    listed = set()
    for e in entries:
        listed.add(e.path)
        if e.sha256 is None:
            continue
        node = nodes.get(e.path)
        if node is None:
            changed.append((e.path, "in the manifest, not in the snapshot (deleted during the backup?)"))
        elif node[0] != e.size or (node[1] is not None and node[1] != e.mtime_ns):
            changed.append((e.path, f"restic read {node[0]} bytes, the manifest {e.size}; "
                                    "modified between the manifest pass and restic's read"))
    prefix = manifest_dir.rstrip("/") + "/"
    for path in nodes:
        if path not in listed and not path.startswith(prefix):
            changed.append((path, "in the snapshot, not in the manifest (created during the backup?)"))
    return changed


def snapshot_files(restic: Restic, snapshot_id: str) -> dict[str, tuple[int, int | None]]:
    """path -> (size, mtime ns) of every regular file of a snapshot."""
    return {n.path: (n.size, restic_time_ns(n.mtime)) for n in restic.ls(snapshot_id) if n.type == "file"}


def sources_as_described(prepared: PreparedManifest) -> bool:
    """True when the sources, walked again now, hold exactly the paths the manifest pass saw, each with the
    same size, mtime and inode: then nothing changed between the manifest pass and restic's read either
    (the same test restic and the manifest use to skip unchanged files)."""
    try:
        now = sources_fingerprint(prepared.sources, prepared.excludes)
    except OSError:   # a source is gone (a prepared copy removed): no proof here, the listing decides
        return False
    return bool(prepared.stats.sources_fingerprint) and now == prepared.stats.sources_fingerprint


def _counts_agree(summary: BackupSummary, index: ManifestIndex) -> bool:
    """restic read as many regular files and bytes as the manifest hashed (its figures without the manifest)."""
    return summary.total_files == index.content_files and summary.total_bytes == index.bytes


def changes_since_manifest(restic: Restic, summary: BackupSummary,
                           prepared: PreparedManifest) -> list[tuple[str, str]]:
    """(path, what differs) for files restic may have read differently from the manifest pass.

    The cheap proof first: restic's counts agree with the manifest and the sources still look as described.
    Only when that fails is the snapshot listed (`restic ls`, another repository open) and compared file by
    file, so a quiet archive costs one walk, and a busy one gets the exact answer."""
    if not summary.unreadable and _counts_agree(summary, prepared.index) and sources_as_described(prepared):
        return []
    assert summary.snapshot is not None
    files = snapshot_files(restic, summary.snapshot.id)
    return changed_during_backup(prepared.entries(), files, str(prepared.folder))


def record_snapshot_manifest(catalog: Catalog, restic: Restic, summary: BackupSummary, prepared: PreparedManifest,
                             progress: Progress | None = None,
                             changed: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Record the manifest of a new snapshot with the files that changed during the backup (`changed`, found
    by `changes_since_manifest` while the sources were still there; found now when not given)."""
    progress = progress or NullProgress()
    snapshot = summary.snapshot
    assert snapshot is not None
    if changed is None:
        with progress.task("manifest: compare with snapshot", total=None, unit="files"):
            changed = changes_since_manifest(restic, summary, prepared)
    record_manifest(catalog, snapshot.id, str(prepared.folder), prepared.key_id, prepared.index, prepared.sha256,
                    prepared.stats, changed)
    figures = prepared.stats.as_dict()
    figures.update(manifest_sha256=prepared.sha256, key_id=prepared.key_id, changed_during_backup=len(changed),
                   studies=len(prepared.index.studies))
    return figures


def record_manifest(catalog: Catalog, snapshot_id: str, folder: str, key_id: str, index: ManifestIndex,
                    sha256: str, stats: BuildStats | None, changed: list[tuple[str, str]]) -> None:
    rec = verify_rows.ManifestRecord(
        snapshot_id=snapshot_id, sha256=sha256, key_id=key_id, path=folder, files=index.files, bytes=index.bytes,
        dicom=index.dicom, not_dicom=index.not_dicom, problems=index.problems,
        hashed=stats.hashed if stats else None, reused=stats.reused if stats else None,
        seconds=stats.seconds if stats else None)
    verify_rows.record_manifest(
        catalog, rec,
        [verify_rows.StudyRow(s.study, len(s.series), s.instances, s.bytes, ",".join(sorted(s.modalities)),
                              s.date, s.pid, s.acc) for s in index.studies.values()],
        [(se, st, n) for se, (st, n) in index.series.items()], changed)


# reading a manifest back out of a snapshot ---------------------------------------------------------------


@dataclass
class SnapshotManifest:
    manifest: Manifest
    folder: str          # path of the manifest folder inside the snapshot
    sha256: str


def read_snapshot_manifest(restic: Restic, snapshot: Snapshot, trusted: VerifyKey) -> SnapshotManifest:
    """Dump the manifest and its signature from a snapshot; verify the signature; parse."""
    folder = find_manifest_dir(snapshot.paths)
    if folder is None:
        raise ManifestError(f"snapshot {snapshot.short_id} holds no manifest (taken without verification?)",
                            hint="take a new backup; older snapshots can be checked with `restic check` only")
    data, signature = _dump_manifest_folder(restic, snapshot, folder)
    manifest = verify_bytes(data, signature, trusted, what=f"manifest of snapshot {snapshot.short_id}")
    return SnapshotManifest(manifest, folder, hashlib.sha256(data).hexdigest())


def _dump_manifest_folder(restic: Restic, snapshot: Snapshot, folder: str) -> tuple[bytes, bytes]:
    """Both manifest files with one restic run: `restic dump` of a folder is a tar stream."""
    raw = restic.dump(snapshot.id, folder)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in (MANIFEST_NAME, SIGNATURE_NAME):
                    fh = tar.extractfile(member)
                    found[name] = fh.read() if fh is not None else b""
    except tarfile.TarError as exc:
        raise ManifestError(f"snapshot {snapshot.short_id}: manifest folder unreadable ({exc})") from None
    if MANIFEST_NAME not in found or SIGNATURE_NAME not in found:
        missing = MANIFEST_NAME if MANIFEST_NAME not in found else SIGNATURE_NAME
        raise ManifestError(f"snapshot {snapshot.short_id}: {missing} is missing from {folder}",
                            hint="an unsigned or incomplete manifest cannot vouch for the snapshot")
    return found[MANIFEST_NAME], found[SIGNATURE_NAME]
