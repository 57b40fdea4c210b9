"""`backup run JOB`: snapshot the job's sources into the staging repository, record it, replicate it."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupctl import audit
from backupctl.actions.replicate import ReplicationOutcome, replicate_to
from backupctl.catalog import Catalog, open_catalog
from backupctl.catalog import pacs as pacs_rows
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config, Job
from backupctl.errors import BackupctlError, Interrupted, PartialSnapshot, Terminated
from backupctl.hooks import JobHooks
from backupctl.incident.state import alert_suspect, save_report
from backupctl.incident.suspect import SUSPECT_TAG
from backupctl.locking import repository_lock
from backupctl.progress import NullProgress, Progress
from backupctl.repository import staging_restic
from backupctl.restic import BackupSummary, Restic, job_tag, partial_message, restic_time_ns
from backupctl.sources import check_sources, prepared_sources
from backupctl.status import Status
from backupctl.verify.snapshot_manifest import (
    PreparedManifest,
    changes_since_manifest,
    manifest_folder,
    prepare_manifest,
    record_snapshot_manifest,
    sources_only,
)

log = logging.getLogger("backupctl.backup")


@dataclass
class BackupOutcome:
    job: str
    run_id: int
    status: str                         # success | partial
    snapshot_id: str | None
    short_id: str | None
    files: int
    bytes: int
    bytes_added: int
    files_new: int
    files_changed: int
    seconds: float
    unreadable: list[str] = field(default_factory=list)
    replicas: list[ReplicationOutcome] = field(default_factory=list)
    data_blobs: int = 0
    hook_errors: list[str] = field(default_factory=list)     # failed `after` hooks (snapshot saved anyway)
    pacs: dict | None = None                                  # the Orthanc copy's figures (downtime, ...)
    manifest: dict[str, Any] | None = None   # the signed manifest stored in the snapshot (verify)
    safe_excludes: list[str] = field(default_factory=list)   # added by backupctl to a system-root source
    suspect: dict[str, Any] | None = None    # ransomware signals against the previous manifest (incident)

    @property
    def is_suspect(self) -> bool:
        return bool(self.suspect and self.suspect["suspect"])

    @property
    def replicated_ok(self) -> bool:
        return all(r.ok for r in self.replicas)


def run_backup(config: Config, job_name: str, progress: Progress | None = None,
               replicate: bool = True) -> BackupOutcome:
    """Back up one job. Everything is checked before anything is recorded; every run ends in the catalog
    as success, partial, failed or interrupted, and a snapshot is recorded only once restic saved it."""
    progress = progress or NullProgress()
    job = config.job(job_name)
    check_sources(config, job)
    restic = staging_restic(config)
    with open_catalog(config.catalog_path) as catalog:
        with repository_lock(config.state_dir, restic.repository, config.settings.staging.lock_wait_seconds):
            outcome = _snapshot_job(config, catalog, restic, job, progress)
        outcome.safe_excludes = list(config.safe_excludes.get(job.name, []))
        audit.note(snapshot=outcome.snapshot_id)
        if outcome.is_suspect:
            audit.note(suspect=outcome.suspect["summary"])   # type: ignore[index]
        if replicate:
            outcome.replicas = [replicate_to(config, catalog, t, progress, job=job.name) for t in job.targets]
    return outcome


def _snapshot_job(config: Config, catalog: Catalog, restic: Restic, job: Job, progress: Progress) -> BackupOutcome:
    run_id = run_rows.start_run(catalog, job.name)
    started = time.monotonic()
    status = Status.SUCCESS
    hooks = JobHooks(job.name, job.hooks, run_id=run_id, sources=[config.resolve(p) for p in job.sources],
                     cwd=config.base)
    try:
        hooks.before()
        with prepared_sources(config, job, catalog=catalog, run_id=run_id, progress=progress) as paths:
            # the signed manifest goes into the same snapshot: it is built while restic starts (key derivation,
            # lock), and restic waits for it before it reads anything (see restic.StartGate)
            folder = manifest_folder(config, job.name)
            folder.mkdir(parents=True, exist_ok=True)
            targets = [*paths, folder]
            built: list[PreparedManifest] = []
            try:
                summary = restic.backup(targets, excludes=job.excludes,
                                        tags=[job_tag(job.name), *job.tags], progress=progress,
                                        ignore_ctime=job.orthanc is not None,
                                        parent=_parent(catalog, restic, job, targets),
                                        not_before=_after_last_snapshot(catalog, job),
                                        before_reading=lambda: built.append(
                                            prepare_manifest(config, job, paths, progress)))
                prepared = built[0]
                summary = sources_only(summary, prepared)
                changed = _changes(restic, summary, prepared)   # while a prepared copy of the sources exists
                summary = _mark_suspect(config, restic, job, summary, prepared)
            except PartialSnapshot as partial:
                # saved, but some files were unreadable
                prepared = built[0]
                summary, status = sources_only(partial.summary, prepared), Status.PARTIAL
                partial.message, partial.hint = partial_message(summary)   # the sources' count, not the manifest's
                summary = _mark_suspect(config, restic, job, summary, prepared)
                if prepared.suspect is not None and prepared.suspect.suspect:
                    alert_suspect(config, job, summary.snapshot.short_id if summary.snapshot else None, run_id,
                                  prepared.suspect)
                _record(catalog, run_id, job, summary, status, time.monotonic() - started, partial.one_line())
                manifest = _record_manifest(catalog, restic, summary, prepared, progress,
                                            _changes(restic, summary, prepared))
                outcome = _outcome(job, run_id, summary, status, time.monotonic() - started)
                outcome.manifest = manifest
                partial.details = {**asdict(outcome), "causes": summary.causes}
                raise
    except PartialSnapshot as exc:
        hooks.on_error(exc.one_line())
        raise
    except (KeyboardInterrupt, Terminated, Interrupted):
        run_rows.finish_run(catalog, run_id, Status.INTERRUPTED, error="interrupted; restic stopped, no snapshot saved")
        raise Interrupted("backup interrupted; restic was stopped cleanly and no snapshot was saved") from None
    except BackupctlError as exc:
        run_rows.finish_run(catalog, run_id, Status.FAILED, error=exc.one_line())
        hooks.on_error(exc.one_line())
        raise
    except Exception as exc:
        run_rows.finish_run(catalog, run_id, Status.FAILED, error=f"internal error: {exc!r}")
        hooks.on_error(f"internal error: {exc!r}")
        raise
    # `after` hooks run once the snapshot is saved; a failing one makes the run partial, never loses it
    hook_errors = hooks.after(summary.snapshot.id if summary.snapshot else None, status)
    run_status = Status.PARTIAL if hook_errors else status
    _record(catalog, run_id, job, summary, status, time.monotonic() - started,
            "; ".join(hook_errors) or None, run_status=run_status)
    outcome = _outcome(job, run_id, summary, run_status, time.monotonic() - started)
    outcome.hook_errors = hook_errors
    outcome.manifest = _record_manifest(catalog, restic, summary, prepared, progress, changed)
    if outcome.manifest is not None:
        # the part of the manifest's build that restic's start-up did not hide
        outcome.manifest["restic_waited_seconds"] = round(summary.waited_seconds, 3)
    if job.orthanc is not None:
        outcome.pacs = pacs_rows.copy_for_run(catalog, run_id)
    if prepared.suspect is not None and prepared.suspect.compared:
        outcome.suspect = prepared.suspect.as_dict()
        if prepared.suspect.suspect:
            alert_suspect(config, job, outcome.short_id, run_id, prepared.suspect)
    return outcome


def _mark_suspect(config: Config, restic: Restic, job: Job, summary: BackupSummary,
                  prepared: PreparedManifest) -> BackupSummary:
    """A suspect snapshot is kept (it is evidence) and tagged `suspect` in the repository, so every copy of it
    says so; its signals are kept beside the catalog."""
    report = prepared.suspect
    if report is None or not report.suspect or summary.snapshot is None:
        return summary
    snap = summary.snapshot
    log.info("job %s: snapshot %s is suspect: %s", job.name, snap.short_id, report.summary())
    try:
        snap = restic.add_tag(snap, SUSPECT_TAG)
    except BackupctlError as exc:   # the catalog still says suspect (below); the repository tag is missing
        log.error("snapshot %s: could not tag it %r in the repository: %s", snap.short_id, SUSPECT_TAG,
                  exc.one_line())
        snap = dataclasses.replace(snap, tags=[*snap.tags, SUSPECT_TAG])
    save_report(config, snap.id, job.name, report)
    return dataclasses.replace(summary, snapshot=snap)


def _parent(catalog: Catalog, restic: Restic, job: Job, targets: list[Path]) -> str | None:
    """The job's previous snapshot of the same paths, when the repository still holds it: restic then compares
    with the snapshot the catalog knows (and the figures say which one), instead of searching for one."""
    found = snapshot_rows.latest_snapshot_id(catalog, job.name, [os.path.abspath(p) for p in targets])
    return found if found and restic.holds_snapshot(found) else None


def _changes(restic: Restic, summary: BackupSummary, prepared: PreparedManifest) -> list[tuple[str, str]] | None:
    if summary.snapshot is None:
        return None
    try:
        return changes_since_manifest(restic, summary, prepared)
    except BackupctlError as exc:   # the snapshot is saved; the record below tries once more, then warns
        log.warning("snapshot %s: files changed during the backup not found yet: %s", summary.snapshot.short_id,
                    exc.one_line())
        return None


def _after_last_snapshot(catalog: Catalog, job: Job) -> int | None:
    """One second after the job's newest snapshot: two quick runs never share a whole-second time."""
    times = [ns for t in snapshot_rows.snapshot_times(catalog, job.name) if (ns := restic_time_ns(t)) is not None]
    return max(times) // 1_000_000_000 + 1 if times else None


def _record_manifest(catalog: Catalog, restic: Restic, summary: BackupSummary, prepared: PreparedManifest,
                     progress: Progress, changed: list[tuple[str, str]] | None) -> dict[str, Any] | None:
    if summary.snapshot is None:
        return None
    try:
        return record_snapshot_manifest(catalog, restic, summary, prepared, progress, changed)
    except BackupctlError as exc:
        # the snapshot and its signed manifest are saved; only the cross-check and the index are missing,
        # and `catalog rebuild` or the next verify can redo them: never fail a saved backup for this
        log.warning("snapshot %s saved, but its manifest was not indexed: %s", summary.snapshot.short_id,
                    exc.one_line())
        return {"error": exc.one_line()}


def _record(catalog: Catalog, run_id: int, job: Job, summary: BackupSummary, status: str, seconds: float,
            error: str | None, run_status: str | None = None) -> None:
    snap = summary.snapshot
    if snap is not None:
        snapshot_rows.record_snapshot(
            catalog, snapshot_id=snap.id, short_id=snap.short_id, job=job.name, time=snap.time, run_id=run_id,
            size=summary.total_bytes, files=summary.total_files, tags=snap.tags, paths=snap.paths,
            status="complete" if status == "success" else "partial")
    run_rows.finish_run(catalog, run_id, run_status or status, run_rows.RunFigures(
        bytes=summary.total_bytes, bytes_added=summary.data_added, files=summary.total_files, seconds=seconds,
        snapshot_id=snap.id if snap else None), error=error)


def _outcome(job: Job, run_id: int, s: BackupSummary, status: str, seconds: float) -> BackupOutcome:
    return BackupOutcome(job.name, run_id, status, s.snapshot.id if s.snapshot else None,
                         s.snapshot.short_id if s.snapshot else None, s.total_files, s.total_bytes, s.data_added,
                         s.files_new, s.files_changed, seconds, s.unreadable, data_blobs=s.data_blobs)
