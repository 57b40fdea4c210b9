"""Level `restore`: restore a snapshot (or some of its studies) to scratch space and check it.

The manifest comes out of the snapshot itself and must carry a valid signature by the trusted key; every
restored file's SHA-256 is compared with it, every DICOM file is parsed fully (and a sample decoded), and
UIDs are compared with the manifest's. A sample picks the studies verified longest ago (never-verified
first), so repeated runs walk the whole archive; the catalog records when each study was last verified.
Scratch space is removed afterwards, also on failure or Ctrl-C.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backupctl.actions.restore import restic_for_copy
from backupctl.catalog import Catalog
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import (
    IntegrityError,
    RepositoryLocked,
    RepositoryNotFound,
    ResticError,
    SignatureInvalid,
    UsageError,
    WrongPassword,
)
from backupctl.manifest import Entry, Manifest
from backupctl.progress import Progress
from backupctl.restic import Restic, Snapshot, job_tag
from backupctl.verify.findings import ERROR, Finding, LevelResult
from backupctl.verify.restored import verify_restored_tree
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key

INCLUDES_PER_RUN = 500          # restic restore --include arguments per invocation (argv stays small)
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*?["})


def scratch_root(config: Config) -> Path:
    root = config.resolve(config.settings.verify.scratch) if config.settings.verify.scratch else \
        config.state_dir / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    return root


def pick_snapshot(restic: Restic, snapshot: str, job: str | None) -> Snapshot:
    """'latest' (of the job, when given) or an id / unique prefix."""
    if snapshot != "latest":
        return restic.snapshot(snapshot)
    found = restic.snapshots(tags=[job_tag(job)] if job else [])
    if not found:
        raise UsageError(f"no snapshot{' of job ' + job if job else ''} to verify",
                         hint="run `backupctl backup run JOB` first")
    return max(found, key=lambda s: s.time)


def choose_studies(manifest: Manifest, count: int, last_read: dict[str, tuple[str, bool]],
                   seed: int | None = None) -> list[str]:
    """`count` studies of the manifest, those verified longest ago first (never-verified before all)."""
    studies = sorted(manifest.studies())
    rng = random.Random(seed)
    rng.shuffle(studies)  # ties (e.g. all never verified) are broken at random, not by UID order
    studies.sort(key=lambda s: (s in last_read, last_read.get(s, ("", True))[0]))
    return studies[:count]


def include_patterns(manifest: Manifest, selected: list[Entry]) -> list[str]:
    """restic --include patterns restoring exactly the selected entries: a whole folder when every entry
    under it is selected, else the file (as few patterns as possible; glob characters escaped)."""
    wanted = {e.path for e in selected}
    total: dict[str, int] = {}
    chosen: dict[str, int] = {}
    for e in manifest.entries:
        for parent in _parents(e.path):
            total[parent] = total.get(parent, 0) + 1
            if e.path in wanted:
                chosen[parent] = chosen.get(parent, 0) + 1
    patterns: set[str] = set()
    for path in wanted:
        best = path
        for parent in _parents(path):  # nearest first; keep climbing while the folder is wholly wanted
            if chosen.get(parent) != total.get(parent):
                break
            best = parent
        patterns.add(best)
    # a folder pattern makes any pattern beneath it redundant
    ordered = sorted(patterns)
    kept = [p for p in ordered if not any(p.startswith(q + "/") for q in ordered if q != p)]
    return [p.translate(_GLOB_SPECIAL) for p in kept]


def _parents(path: str) -> Iterable[str]:
    parts = path.rstrip("/").split("/")
    for i in range(len(parts) - 1, 1, -1):   # never "/" itself
        yield "/".join(parts[:i])


@dataclass
class RestoreScope:
    entries: list[Entry] | None          # None: the whole snapshot
    studies: list[str]


def scope_of(manifest: Manifest, catalog: Catalog | None, sample: int, studies: list[str] | None,
             seed: int | None) -> RestoreScope:
    if studies:
        known = manifest.studies()
        missing = [s for s in studies if s not in known]
        if missing:
            raise UsageError(f"study {missing[0]} is not in this snapshot",
                             hint="find which snapshots hold it with `backupctl find --study UID`")
        return RestoreScope([e for e in manifest.entries if e.study in set(studies)], list(studies))
    if sample > 0:
        reads = verify_rows.study_reads(catalog) if catalog is not None else {}
        picked = choose_studies(manifest, sample, reads, seed)
        return RestoreScope([e for e in manifest.entries if e.study in set(picked)], picked)
    return RestoreScope(None, sorted(manifest.studies()))


def restore_entries(restic: Restic, snapshot: Snapshot, manifest: Manifest, entries: list[Entry] | None,
                    target: Path, progress: Progress) -> None:
    if entries is None:
        restic.restore(snapshot.id, target, progress=progress)
        return
    patterns = include_patterns(manifest, entries)
    for i in range(0, len(patterns), INCLUDES_PER_RUN):
        restic.restore(snapshot.id, target, includes=patterns[i:i + INCLUDES_PER_RUN], progress=progress)


def verify_restore(config: Config, catalog: Catalog | None, run_id: int | None, progress: Progress, *,
                   snapshot: str = "latest", job: str | None = None, copy: str = "staging",
                   sample: int | None = None, studies: list[str] | None = None,
                   public_key: Path | None = None, seed: int | None = None) -> LevelResult:
    """Restore and check; with `catalog`, record which studies were verified."""
    settings = config.settings.verify
    sample = settings.sample_studies if sample is None else sample
    trusted = trusted_key(config, public_key)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="verify-", dir=scratch_root(config)))
    try:
        restic = restic_for_copy(config, copy, scratch / "fetch")
        snap = pick_snapshot(restic, snapshot, job)
        result = LevelResult("restore", snap.id)
        try:
            got = read_snapshot_manifest(restic, snap, trusted)
        except IntegrityError as exc:
            kind = "signature" if isinstance(exc, SignatureInvalid) else "manifest"
            result.findings.append(Finding(ERROR, kind, f"snapshot {snap.short_id}", exc.one_line()))
            result.seconds = time.monotonic() - started
            return result
        scope = scope_of(got.manifest, catalog, sample, studies, seed)
        target = scratch / "restored"
        target.mkdir()
        restore_started = time.monotonic()
        restore_error = None
        try:
            restore_entries(restic, snap, got.manifest, scope.entries, target, progress)
        except (RepositoryLocked, RepositoryNotFound, WrongPassword):
            raise
        except ResticError as exc:
            # restic restores what it can and names damaged blobs; the file checks below name the files
            restore_error = Finding(ERROR, "restore-failed", f"snapshot {snap.short_id}", exc.one_line())
        restore_seconds = time.monotonic() - restore_started
        changed = set(verify_rows.changed_during_backup(catalog, snap.id)) if catalog is not None else set()
        tree = verify_restored_tree(target, got.manifest, entries=scope.entries, decode=settings.decode_sample,
                                    seed=seed if seed is not None else run_id, workers=settings.workers,
                                    progress=progress, changed=changed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.findings = ([restore_error] if restore_error else []) + tree.findings
    result.checked, result.bytes = tree.files, tree.bytes
    result.seconds = time.monotonic() - started
    result.figures = {
        "snapshot": snap.short_id, "job": snap.job, "copy": copy, "manifest_sha256": got.sha256,
        "key_id": got.manifest.key_id, "scope": "all" if scope.entries is None else f"{len(scope.studies)} studies",
        "studies": len(tree.studies), "dicom_parsed": tree.dicom, "decoded": tree.decoded,
        "decoded_by_syntax": tree.decoded_by_syntax,
        "no_decoder": sorted({f.detail.rsplit("transfer syntax ", 1)[-1] for f in tree.findings
                              if f.kind == "not-decoded"}),
        "restore_seconds": round(restore_seconds, 3), "check_seconds": round(tree.seconds, 3),
    }
    if catalog is not None and run_id is not None:
        verify_rows.record_study_reads(catalog, tree.studies, snap.id, run_id)
    return result
