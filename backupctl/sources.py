"""What a job backs up: checks the sources before restic runs, and yields the paths to give restic.

restic only warns about a missing top-level path and exits 0, so missing or unreadable sources are caught
here, before anything is recorded. Source types with a consistent-snapshot step (a PACS that must be stopped
for a moment) plug in here, so the backup action stays the same for every kind of source.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupctl.catalog import Catalog
from backupctl.catalog import pacs as pacs_rows
from backupctl.config import Config, Job, guard_sources
from backupctl.errors import BackupctlError, SourceOverlap, SourceUnreadable
from backupctl.progress import Progress


def check_sources(config: Config, job: Job) -> list[Path]:
    """The job's plain source paths, checked; an `[orthanc]` source is checked too (its copy folder is
    added by `prepared_sources`)."""
    if job.orthanc is not None:
        from backupctl.pacs.source import resolve_orthanc  # http/ssl: only jobs with a PACS source load them

        resolve_orthanc(config, job)
    # checked again here although loading the config did: a long-running scheduler loaded it hours ago, and a
    # symlink or a mount may have moved since
    problems, _, _ = guard_sources(config.base, config.settings, config.jobs, job)
    if problems:
        raise SourceOverlap(f"job {job.name}: source {problems[0]}")
    paths = [config.resolve(p) for p in job.sources]
    for path in paths:
        if not path.exists():
            raise SourceUnreadable(f"job {job.name}: source {path} does not exist",
                                   hint="fix `sources` in the job file or mount the archive")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise SourceUnreadable(f"job {job.name}: source {path} is not readable by this user")
    return paths


@contextmanager
def prepared_sources(config: Config, job: Job, *, catalog: Catalog | None = None, run_id: int | None = None,
                     progress: Progress | None = None) -> Iterator[list[Path]]:
    """The paths restic should read for `job`, valid for the duration of the block.

    For an `[orthanc]` source this is where the PACS is stopped, copied and started again (see
    `backupctl.pacs.source`); the copy's downtime is recorded in the catalog, also when it failed."""
    paths = check_sources(config, job)
    if job.orthanc is None:
        yield paths
        return
    from backupctl.pacs.source import discard_snapshot_dir, resolve_orthanc, take_copy

    src = resolve_orthanc(config, job)
    try:
        copy = take_copy(src, progress)
    except BaseException as exc:
        figures = getattr(exc, "orthanc_copy", None)
        error = exc.one_line() if isinstance(exc, BackupctlError) else f"interrupted ({type(exc).__name__})"
        if catalog is not None:
            pacs_rows.record_copy(catalog, run_id=run_id, job=job.name, status="failed",
                                  figures=figures.figures() if figures else {}, error=error)
        raise
    if catalog is not None:
        pacs_rows.record_copy(catalog, run_id=run_id, job=job.name, status="ok", figures=copy.figures())
    try:
        yield [*paths, copy.root]
    finally:
        discard_snapshot_dir(copy.root)
