"""`backupctl catalog rebuild --from COPY`: a catalog from a repository alone.

When the backup host and its catalog are lost, a copy of the repository (staging, an offline medium, the
S3 copy) still holds every snapshot and, inside each, its signed manifest. The rebuild lists the snapshots,
checks each manifest's signature with the trusted public key, and records snapshots, manifests and the
study index. It writes a new catalog file next to the target path and moves it into place only when
complete; an existing catalog is kept (renamed aside) and only replaced when asked.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.restore import restic_for_copy
from backupctl.catalog import Catalog, open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog.db import utcnow
from backupctl.config import Config
from backupctl.errors import IntegrityError, UsageError
from backupctl.manifest import ManifestIndex
from backupctl.progress import NullProgress, Progress
from backupctl.restic import Restic, Snapshot
from backupctl.signing import VerifyKey
from backupctl.targets import make_target
from backupctl.verify.restore import scratch_root
from backupctl.verify.snapshot_manifest import (
    changed_during_backup,
    read_snapshot_manifest,
    record_manifest,
    snapshot_files,
    trusted_key,
)


@dataclass
class RebuildReport:
    catalog: Path
    source: str
    snapshots: int = 0
    manifests: int = 0
    studies: int = 0
    seconds: float = 0.0
    kept_aside: Path | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.problems, "catalog": str(self.catalog), "from": self.source,
                "snapshots": self.snapshots, "manifests": self.manifests, "studies": self.studies,
                "seconds": round(self.seconds, 3), "kept_aside": str(self.kept_aside) if self.kept_aside else None,
                "problems": self.problems}


def _check_output(path: Path, replace: bool) -> None:
    if path.exists() and not replace:
        raise UsageError(f"catalog {path} exists", hint="pass --to NEW_PATH, or --replace to keep it aside and "
                                                       "put the rebuilt one in its place")


def rebuild_catalog(config: Config, source: str, *, to: Path | None = None, replace: bool = False,
                    public_key: Path | None = None, progress: Progress | None = None) -> RebuildReport:
    progress = progress or NullProgress()
    output = to or config.catalog_path
    _check_output(output, replace)
    trusted = trusted_key(config, public_key)
    started = time.monotonic()
    report = RebuildReport(output, source)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.rebuild-", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()   # SQLite creates it; an empty file would do too, but a clean start is clearer
    try:
        with tempfile.TemporaryDirectory(prefix="rebuild-", dir=scratch_root(config)) as scratch:
            restic = restic_for_copy(config, source, Path(scratch))
            location = make_target(config, source).prepare() if source != "staging" else None
            with open_catalog(tmp) as catalog:
                run_id = run_rows.start_run(catalog, "-", kind=f"catalog-rebuild:{source}")
                snaps = sorted(restic.snapshots(), key=lambda s: s.time)
                with progress.task("rebuild catalog", total=len(snaps), unit="snapshots") as task:
                    for snap in snaps:
                        _index_snapshot(catalog, restic, snap, trusted, report)
                        task.advance(1)
                if location is not None:
                    snapshot_rows.record_replicas(catalog, [s.id for s in snaps], source, location)
                report.snapshots = len(snaps)
                report.studies = catalog.query("SELECT COUNT(DISTINCT study_uid) FROM snapshot_studies")[0][0]
                run_rows.finish_run(catalog, run_id, "success" if not report.problems else "partial",
                                    run_rows.RunFigures(files=len(snaps), seconds=time.monotonic() - started),
                                    error="; ".join(report.problems[:3]) or None)
        if output.exists():
            report.kept_aside = output.with_name(f"{output.name}.before-rebuild-{utcnow()[:19].replace(':', '')}")
            _move_sqlite(output, report.kept_aside)
        os.replace(tmp, output)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    report.seconds = time.monotonic() - started
    return report


def _move_sqlite(src: Path, dest: Path) -> None:
    """Move a catalog aside with its WAL files, so nothing it held is lost."""
    os.replace(src, dest)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{src}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{dest}{suffix}"))


def _index_snapshot(catalog: Catalog, restic: Restic, snap: Snapshot, trusted: VerifyKey,
                    report: RebuildReport) -> None:
    try:
        got = read_snapshot_manifest(restic, snap, trusted)
    except IntegrityError as exc:
        snapshot_rows.record_snapshot(catalog, snapshot_id=snap.id, short_id=snap.short_id, job=snap.job or "-",
                                      time=snap.time, run_id=None, size=None, files=None, tags=snap.tags,
                                      paths=snap.paths)
        report.problems.append(f"snapshot {snap.short_id}: {exc.one_line()}")
        return
    files = [e for e in got.manifest.entries if e.sha256]
    snapshot_rows.record_snapshot(catalog, snapshot_id=snap.id, short_id=snap.short_id,
                                  job=snap.job or got.manifest.job, time=snap.time, run_id=None,
                                  size=sum(e.size for e in files), files=len(files), tags=snap.tags, paths=snap.paths)
    changed = changed_during_backup(got.manifest.entries, snapshot_files(restic, snap.id), got.folder)
    record_manifest(catalog, snap.id, got.folder, got.manifest.key_id, ManifestIndex.of(got.manifest.entries),
                    got.sha256, None, changed)
    report.manifests += 1
