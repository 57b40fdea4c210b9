"""Point-in-time recovery: rebuild a local restic repository from the object versions current at a time.

After an attacker overwrote objects (new versions) or deleted them (delete markers), the locked versions
are still in the bucket. `recover` picks, for every key, the version that was current at `as_of` (or the
version the catalog recorded), downloads it, and keeps it only if its SHA-256 matches its name; when it does
not, an older version from before `as_of` is tried. What could not be recovered is listed, never hidden.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl.errors import UsageError
from backupctl.fsutil import fsync_dir
from backupctl.progress import NullProgress, Progress
from backupctl.repofiles import HASH_CHUNK, kind_of
from backupctl.s3.client import Bucket
from backupctl.s3.listing import list_versions

if TYPE_CHECKING:
    from backupctl.targets.s3 import S3Target

TMP_SUFFIX = ".backupctl-partial"


@dataclass
class RecoverOutcome:
    to: Path
    source: str                                   # "catalog" or the as-of time
    files: int = 0
    bytes: int = 0
    older_versions_used: list[str] = field(default_factory=list)   # newest at as_of was damaged
    skipped: list[str] = field(default_factory=list)               # "key: reason"

    @property
    def ok(self) -> bool:
        return not self.skipped and self.files > 0

    def as_dict(self) -> dict:
        return {"ok": self.ok, "to": str(self.to), "source": self.source, "files": self.files,
                "bytes": self.bytes, "older_versions_used": self.older_versions_used, "skipped": self.skipped}


@dataclass(frozen=True)
class Wanted:
    rel: str
    candidates: list[str]            # version ids, best first
    sha256: str | None               # expected content hash (the name, or the recorded hash for `config`)


def _download(bucket: Bucket, rel: str, version_id: str, dest: Path) -> tuple[str, int]:
    """Stream one version to a temporary file beside `dest`; return its SHA-256 and size."""
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    h, size = hashlib.sha256(), 0
    with bucket.call(f"GetObject {rel}"):
        body = bucket.client.get_object(Bucket=bucket.name, Key=bucket.key(rel), VersionId=version_id)["Body"]
        with open(tmp, "wb") as out:
            for chunk in iter(lambda: body.read(HASH_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    return h.hexdigest(), size


def _fetch(bucket: Bucket, want: Wanted, root: Path) -> tuple[str, int, int]:
    """(outcome, bytes, index of the version used); outcome is 'ok' or why the key was skipped."""
    dest = root / want.rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    for i, version_id in enumerate(want.candidates):
        sha, size = _download(bucket, want.rel, version_id, dest)
        if want.sha256 is None or sha == want.sha256:
            os.replace(tmp, dest)
            return "ok", size, i
        tmp.unlink()
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tried = len(want.candidates)
    return f"no version matches its SHA-256 ({tried} tried)", 0, tried


def plan_recovery(target: S3Target, as_of: datetime | None) -> tuple[list[Wanted], list[str]]:
    listing = list_versions(target.bucket)
    recorded = target.recorded()
    wanted: list[Wanted] = []
    skipped: list[str] = []
    if as_of is None:
        for rel, rec in sorted(recorded.items()):
            kv = listing.get(rel)
            if kv is None or kv.get(rec.version_id) is None:
                skipped.append(f"{rel}: recorded version {rec.version_id} is gone")
                continue
            wanted.append(Wanted(rel, [rec.version_id], rec.sha256))
        return wanted, skipped
    for rel, kv in sorted(listing.items()):
        kind = kind_of(rel)
        if kind is None:
            continue                      # locks/, temp files, junk: never part of a repository copy
        then = kv.as_of(as_of)
        if not then or then[0].delete_marker:
            continue                      # the key did not exist (or was deleted) at as_of
        rec = recorded.get(rel)
        expected = rel.rsplit("/", 1)[-1] if kind != "config" else (rec.sha256 if rec else None)
        wanted.append(Wanted(rel, [v.version_id for v in then if not v.delete_marker], expected))
    return wanted, skipped


def recover(target: S3Target, dest: Path, as_of: datetime | None,
            progress: Progress | None = None) -> RecoverOutcome:
    """Rebuild the repository under `dest` (a new or empty folder)."""
    progress = progress or NullProgress()
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"{dest} is not empty", hint="recover into a new or empty folder")
    outcome = RecoverOutcome(dest, "catalog" if as_of is None else as_of.isoformat())
    wanted, outcome.skipped = plan_recovery(target, as_of)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "locks").mkdir(exist_ok=True)
    bucket = target.bucket
    with progress.task(f"recover {target.name}", total=len(wanted)) as task, \
            ThreadPoolExecutor(target.cfg.concurrency) as pool:
        for want, (result, size, used) in zip(wanted, pool.map(lambda w: _fetch(bucket, w, dest), wanted),
                                              strict=True):
            if result != "ok":
                outcome.skipped.append(f"{want.rel}: {result}")
            else:
                outcome.files += 1
                outcome.bytes += size
                if used:
                    outcome.older_versions_used.append(want.rel)
            task.advance()
    for folder in {dest, *(p for p in dest.rglob("*") if p.is_dir())}:
        fsync_dir(folder)
    return outcome
