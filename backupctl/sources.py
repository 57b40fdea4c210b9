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

from backupctl.config import Config, Job
from backupctl.errors import SourceUnreadable


def check_sources(config: Config, job: Job) -> list[Path]:
    paths = [config.resolve(p) for p in job.sources]
    for path in paths:
        if not path.exists():
            raise SourceUnreadable(f"job {job.name}: source {path} does not exist",
                                   hint="fix `sources` in the job file or mount the archive")
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise SourceUnreadable(f"job {job.name}: source {path} is not readable by this user")
    return paths


@contextmanager
def prepared_sources(config: Config, job: Job) -> Iterator[list[Path]]:
    """The paths restic should read for `job`, valid for the duration of the block."""
    yield check_sources(config, job)
