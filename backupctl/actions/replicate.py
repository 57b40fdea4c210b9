"""Replication: copy the staging repository's files to a job's targets, and record where snapshots live."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from backupctl.catalog import Catalog
from backupctl.catalog import media as media_rows
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.errors import BackupctlError, Interrupted, Terminated
from backupctl.progress import Progress
from backupctl.repofiles import iter_kind, list_repository
from backupctl.status import Status
from backupctl.targets import make_target
from backupctl.targets.base import SyncReport


@dataclass
class ReplicationOutcome:
    target: str
    ok: bool
    report: SyncReport | None = None
    error: str | None = None
    snapshots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def replicate_to(config: Config, catalog: Catalog, target_name: str, progress: Progress,
                 job: str = "-") -> ReplicationOutcome:
    """Sync one target; every outcome, good or bad, is a `replicate` run in the catalog."""
    run_id = run_rows.start_run(catalog, job, kind=f"replicate:{target_name}")
    started = time.monotonic()
    try:
        target = make_target(config, target_name, catalog)
        staging = config.staging_repository
        files = list_repository(staging)
        report = target.sync(staging, files, progress)
        snapshot_ids = [f.name for f in iter_kind(files, "snapshots")]
        known = snapshot_rows.known_snapshot_ids(catalog)
        snapshot_rows.record_replicas(catalog, [s for s in snapshot_ids if s in known], target_name,
                                      report.location)
        if target.kind == "media":
            media_rows.record_sync(catalog, target_name, report.location, len(files), sum(f.size for f in files))
    except (KeyboardInterrupt, Terminated):
        run_rows.finish_run(catalog, run_id, Status.INTERRUPTED, error="interrupted during replication")
        raise Interrupted(f"replication to {target_name} interrupted; the next run copies what is missing") \
            from None
    except BackupctlError as exc:
        run_rows.finish_run(catalog, run_id, Status.FAILED, error=exc.one_line())
        return ReplicationOutcome(target_name, False, error=exc.one_line())
    except Exception as exc:
        run_rows.finish_run(catalog, run_id, Status.FAILED, error=f"internal error: {exc!r}")
        raise
    run_rows.finish_run(catalog, run_id, Status.SUCCESS, run_rows.RunFigures(
        bytes=report.uploaded_bytes, files=report.uploaded, seconds=time.monotonic() - started))
    return ReplicationOutcome(target_name, True, report, snapshots=snapshot_ids)
