"""Scratch space for drills: a fresh private folder per drill, never inside live data, always removed.

Each drill restores into `<scratch root>/drill-<run id>-<pid>-<random>`, created empty with mode 0700, so
a drill never writes over anything. The folder is removed when the drill ends, however it ends (its files
several at a time); a drill killed outright (SIGKILL, power loss) leaves its folder behind, and the next
drill removes folders whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backupctl.config import Config, Drill, scratch_overlaps
from backupctl.errors import UsageError
from backupctl.process import pid_running

log = logging.getLogger("backupctl.drills")
_NAME = re.compile(r"^drill-(\d+)-(\d+)-")


def scratch_root(config: Config, drill: Drill) -> Path:
    """Where the drill may write; refused when it overlaps a job's source, the staging repository or a
    medium (checked again here because the default root under the state folder is not in the drill file)."""
    root = config.resolve(drill.scratch) if drill.scratch is not None else config.state_dir / "scratch"
    problems = scratch_overlaps(root, config.base, config.settings, config.jobs)
    if problems:
        raise UsageError(f"drill {drill.name}: scratch {problems[0]}",
                         hint="set `scratch` in the drill file to a folder of its own")
    return Path(os.path.abspath(root))


def make_scratch(root: Path, run_id: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"drill-{run_id}-{os.getpid()}-", dir=root))


UNLINK_THREADS = 8     # a file just restored often waits for its pages' writeback to be deleted: wait in parallel
UNLINK_CHUNK = 32      # files per task (one task per file costs more than the deleting, in the parent)


def remove_scratch(path: Path) -> bool:
    """Remove the folder and everything in it, also read-only files and folders restic restored with
    their original modes. True when it is gone.

    The files go first, several at a time: deleting a file restic has just written mostly waits for the disk
    (journal, writeback), so one at a time a 2 GB restore took seconds where 8 at a time take a fraction."""
    _unlink_files(path)

    def make_writable_and_retry(func, target, _exc) -> None:  # noqa: ANN001 - shutil's callback shape
        parent = os.path.dirname(target)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
        func(target)

    if path.exists():
        try:
            if sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=make_writable_and_retry)
            else:
                shutil.rmtree(path, onerror=make_writable_and_retry)
        except OSError as exc:
            log.warning("could not remove drill scratch %s: %s", path, exc)
    return not path.exists()


def _unlink_files(path: Path) -> None:
    """Delete the regular files and symlinks under `path` in parallel; what cannot be deleted this way
    (in a read-only folder, say) is left for rmtree, which makes folders writable first."""
    names = [os.path.join(folder, name) for folder, _, files in os.walk(path) for name in files]
    if len(names) < UNLINK_THREADS:
        return
    chunks = [names[i:i + UNLINK_CHUNK] for i in range(0, len(names), UNLINK_CHUNK)]
    with ThreadPoolExecutor(UNLINK_THREADS, thread_name_prefix="backupctl-scratch") as pool:
        for _ in pool.map(_unlink_quietly, chunks):
            pass


def _unlink_quietly(names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(name)


def remove_stale_scratch(root: Path) -> list[Path]:
    """Remove folders left by drills whose process is gone (killed before it could clean up)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        m = _NAME.match(child.name)
        if m and child.is_dir() and not pid_running(int(m[2])) and remove_scratch(child):
            removed.append(child)
    return removed


