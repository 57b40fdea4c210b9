"""Level `replicas`: read back every object of every replica target (`Target.audit`).

Each target checks that what it holds exists and has the SHA-256 its name promises (and, on S3, the lock
mode and retain-until date). Here the findings are graded: a missing object is an error, unless it is a
staging file newer than the mounted medium's last sync (the rotation simply has not carried it yet); an
extra object is a warning (a WORM copy keeps what staging has since pruned). A medium that is not mounted
(rotated off-site) is skipped and said so, not failed.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from backupctl.catalog import Catalog
from backupctl.catalog import media as media_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import MediaNotMounted, TargetError
from backupctl.progress import Progress
from backupctl.repofiles import RepoFile, list_repository
from backupctl.targets import make_target
from backupctl.targets.base import Finding as TargetFinding
from backupctl.verify.findings import ERROR, NOTE, WARNING, Finding, LevelResult

SEVERITY = {"missing": ERROR, "altered": ERROR, "under-locked": ERROR, "extra": WARNING}


def _last_sync(catalog: Catalog, target: str, location: str) -> float | None:
    for row in media_rows.list_media(catalog, target):
        if row["label"] == location and row["last_sync"]:
            return datetime.fromisoformat(row["last_sync"]).timestamp()
    return None


def grade(found: TargetFinding, staging: Path, last_sync: float | None) -> Finding:
    """A target's raw finding as an error, warning or note."""
    if found.kind == "missing" and last_sync is not None:
        try:
            newer = (staging / found.key).stat().st_mtime > last_sync
        except FileNotFoundError:
            newer = False
        if newer:
            return Finding(NOTE, "pending", found.key, "newer than this medium's last sync: not copied yet")
    return Finding(SEVERITY.get(found.kind, ERROR), found.kind, found.key, found.detail)


def verify_target(config: Config, catalog: Catalog, run_id: int, name: str, expected: list[RepoFile],
                  progress: Progress) -> LevelResult:
    target = make_target(config, name)
    result = LevelResult("replicas", name)
    started = time.monotonic()
    try:
        location = target.prepare()
    except MediaNotMounted as exc:
        result.skipped = exc.one_line()
        return result
    except TargetError as exc:
        result.findings.append(Finding(ERROR, "unreachable", name, exc.one_line()))
        return result
    result.subject = f"{name}:{location}"
    raw = target.audit(expected, progress)
    last_sync = _last_sync(catalog, name, location) if target.kind == "media" else None
    result.findings = [grade(f, config.staging_repository, last_sync) for f in raw]
    result.seconds = time.monotonic() - started
    result.checked = len(expected)
    result.bytes = sum(f.size for f in expected)
    result.figures = {"target": name, "location": location, "kind": target.kind}
    verify_rows.record_replica_audit(catalog, name, location, result.ok, len(expected), run_id)
    return result


def verify_replicas(config: Config, catalog: Catalog, run_id: int, progress: Progress,
                    targets: list[str] | None = None) -> list[LevelResult]:
    """Audit each named target (default: every configured target) against the staging repository."""
    names = targets if targets else sorted(config.settings.targets)
    if not names:
        return [LevelResult("replicas", "-", skipped="no replica targets configured")]
    expected = list_repository(config.staging_repository)
    return [verify_target(config, catalog, run_id, n, expected, progress) for n in names]
