"""`s3 expire`: delete object versions that no kept snapshot needs, and only once their lock has run out.

"Needed" is what the staging repository holds now: `restic forget --prune` there decides which snapshots are
kept, and a kept snapshot needs exactly the files of the repository. Lock extension (see the S3 target)
keeps every object locked at least as long as the newest snapshot that was replicated while it was needed,
so an object whose lock has expired is not needed by any snapshot object that is still locked.
Expiry refuses to run while the bucket lacks files of staging (replicate first), because right after a
prune the bucket's newest index may still refer to packs that staging has just repacked.

Expiry pauses while a suspect snapshot is open (see docs/incident.md): staging may be what the attacker
touched, and the bucket's versions are then the way back.

Deleting versions needs s3:DeleteObjectVersion, which the writer credential should not have: give the
target an `expire_credentials` that may delete but not write (see examples/iam-expire-policy.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions as bex

from backupctl.catalog import s3 as s3_rows
from backupctl.errors import IncidentOpen, S3AccessDenied, TargetError
from backupctl.incident.freeze import refuse_while_frozen
from backupctl.incident.state import open_suspects
from backupctl.progress import NullProgress, Progress
from backupctl.repofiles import list_repository
from backupctl.s3.client import connect, error_code
from backupctl.s3.listing import list_versions
from backupctl.s3.objects import read_lock

if TYPE_CHECKING:
    from backupctl.targets.s3 import S3Target


@dataclass
class ExpireOutcome:
    target: str
    dry_run: bool
    deleted: list[str] = field(default_factory=list)            # key@version
    kept_needed: int = 0                                         # still in staging: a kept snapshot needs it
    kept_locked: list[str] = field(default_factory=list)        # not needed, but locked until ...
    refused: list[str] = field(default_factory=list)            # the server said no
    unexpected_left: int = 0                                     # versions nobody recorded (see s3 audit)

    def as_dict(self) -> dict:
        return {"ok": not self.refused, "target": self.target, "dry_run": self.dry_run,
                "deleted": self.deleted, "kept_needed": self.kept_needed, "kept_locked": self.kept_locked,
                "refused": self.refused, "unexpected_left": self.unexpected_left}

    def text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{self.target}: {verb} {len(self.deleted)} object versions no kept snapshot needs; kept "
                 f"{self.kept_needed} needed by kept snapshots and {len(self.kept_locked)} still locked"]
        lines += [f"  {verb} {d}" for d in self.deleted]
        lines += [f"  kept {k}" for k in self.kept_locked]
        lines += [f"  refused {r}" for r in self.refused]
        if self.unexpected_left:
            lines.append(f"  left {self.unexpected_left} versions nobody recorded: see `backupctl s3 audit`")
        return "\n".join(lines)


def expire(target: S3Target, staging: Path, *, dry_run: bool = False,
           progress: Progress | None = None) -> ExpireOutcome:
    progress = progress or NullProgress()
    refuse_while_frozen(target.config, "expiry")
    if suspects := open_suspects(target.catalog):
        first = suspects[0]
        raise IncidentOpen(f"expiry is paused: snapshot {first['short_id']} of job {first['job']} is suspect "
                           f"({len(suspects)} open)",
                           hint="investigate (docs/incident.md), then `backupctl incident clear SNAPSHOT --reason ...`")
    needed = {f.rel for f in list_repository(staging)}
    recorded = target.recorded()
    behind = sorted(needed - set(recorded))
    if behind:
        raise TargetError(f"{target.location} lacks {len(behind)} files of staging (first: {behind[0]})",
                          hint=f"run `backupctl replicate --target {target.name}` before expiring")
    cfg = target.cfg
    deleter = connect(target.name, cfg, target.config.resolve, credentials=cfg.expire_credentials) \
        if cfg.expire_credentials else target.bucket
    listing = list_versions(target.bucket)
    ours = s3_rows.all_versions(target.catalog, target.name, target.location)
    outcome = ExpireOutcome(target.name, dry_run)
    known = {(o.key, o.version_id) for o in ours}
    outcome.unexpected_left = sum(1 for rel, kv in listing.items() for v in kv.versions
                                  if (rel, v.version_id) not in known)
    now = datetime.now(UTC)
    with progress.task(f"expire {target.name}", total=len(ours)) as task:
        for obj in ours:
            task.advance()
            if obj.state == "expired":
                continue
            if obj.key in needed and obj.state == "live":
                outcome.kept_needed += 1
                continue
            kv = listing.get(obj.key)
            if kv is None or kv.get(obj.version_id) is None:
                continue       # already gone; audit reports it if it was still needed
            lock, _ = read_lock(target.bucket, target.bucket.key(obj.key), obj.version_id)
            if lock.until is not None and lock.until > now:
                outcome.kept_locked.append(f"{obj.key}@{obj.version_id} (locked until {lock.until.isoformat()})")
                continue
            name = f"{obj.key}@{obj.version_id}"
            if dry_run:
                outcome.deleted.append(name)
                continue
            try:
                with deleter.call(f"DeleteObject {obj.key}"):
                    try:
                        deleter.client.delete_object(Bucket=cfg.bucket, Key=deleter.key(obj.key),
                                                     VersionId=obj.version_id)
                    except bex.ClientError as exc:
                        if error_code(exc) in ("AccessDenied", "ObjectLocked", "InvalidRequest"):
                            outcome.refused.append(f"{name} ({error_code(exc)})")
                            continue
                        raise
            except S3AccessDenied as exc:
                outcome.refused.append(f"{name} ({exc.message})")
                continue
            s3_rows.mark_expired(target.catalog, target.name, target.location, obj.key, obj.version_id)
            outcome.deleted.append(name)
    return outcome
