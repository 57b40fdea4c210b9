"""`restore SNAPSHOT --to DIR`: from staging or from a replica target, into an empty folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backupctl import audit
from backupctl.config import Config
from backupctl.errors import UsageError
from backupctl.progress import NullProgress, Progress, watched
from backupctl.repository import replica_restic, staging_restic
from backupctl.restic import Restic, Snapshot, job_tag
from backupctl.targets import make_target


@dataclass
class RestoreOutcome:
    snapshot_id: str
    source: str
    to: Path
    files: int
    bytes: int
    seconds: float


def restic_for_copy(config: Config, copy: str, scratch: Path) -> Restic:
    """restic bound to the copy to read: 'staging' or a target name."""
    if copy == "staging":
        return staging_restic(config)
    return replica_restic(config, make_target(config, copy).local_repository(scratch))


def check_restore_target(to: Path, force: bool) -> None:
    if to.exists() and not to.is_dir():
        raise UsageError(f"restore target {to} exists and is not a folder")
    if to.is_dir() and any(to.iterdir()) and not force:
        raise UsageError(f"restore target {to} is not empty", hint="choose an empty folder or pass --force")


def restore_snapshot(config: Config, snapshot: str, to: Path, *, includes: list[str] | None = None,
                     copy: str = "staging", force: bool = False, progress: Progress | None = None,
                     job: str | None = None, size_of: Callable[[str], int | None] | None = None) -> RestoreOutcome:
    """'latest' is `job`'s newest snapshot on the copy read (the catalog may be lost, or know a newer one not
    replicated there yet). `size_of(snapshot id)` (the catalog's size): a byte bar with percent and ETA."""
    check_restore_target(to, force)
    progress = progress or NullProgress()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backupctl-fetch-", dir=_scratch_root(config)) as scratch:
        restic = restic_for_copy(config, copy, Path(scratch))
        snap = _newest(restic, job, copy) if snapshot == "latest" and job else restic.snapshot(snapshot)
        audit.note(snapshot=snap.id)
        to.mkdir(parents=True, exist_ok=True)
        expected_bytes = size_of(snap.id) if size_of else None
        if expected_bytes and not includes:
            with watched(progress, f"restore {snap.short_id} from {copy}", to, expected_bytes):
                restic.restore(snap.id, to, progress=NullProgress())
        else:
            restic.restore(snap.id, to, includes=includes or [], progress=progress)
    files, size = tree_size(to)
    return RestoreOutcome(snap.id, copy, to, files, size, time.monotonic() - started)


def _newest(restic: Restic, job: str, copy: str) -> Snapshot:
    found = restic.snapshots(tags=[job_tag(job)])
    if not found:
        raise UsageError(f"{copy} holds no snapshot of job {job}", hint="list them with `backupctl snapshots`")
    return max(found, key=lambda s: s.time)


def _scratch_root(config: Config) -> Path:
    root = config.state_dir / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    return root


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
