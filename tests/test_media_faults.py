"""Offline media under faults: a disk too small, a disk that fills while copying, no disk mounted at all.

The full-disk tests mount a real small tmpfs at the target's mount (root only); they are skipped with the
reason when the kernel refuses the mount.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.config import Config
from backupctl.progress import Task
from backupctl.repofiles import RepoFile, list_repository, sha256_file
from backupctl.targets.media import LABEL_FILE, TMP_SUFFIX
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, make_installation

PAGE = 4096
MOUNTED_CONFIG = CONFIG_TEXT.replace("allow_unmounted = true\n", "")


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def mount() -> Iterator[Callable[..., None]]:
    """mount(*args) runs `mount args...`; every mount point it made is unmounted at the end."""
    made: list[str] = []

    def do(*args: str) -> None:
        _mount(*args)
        if not any(a.startswith("remount") for a in args):
            made.append(args[-1])

    yield do
    for point in reversed(made):
        subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def site(tmp_path: Path) -> Config:
    """An installation whose media target must be a real mount point (no allow_unmounted)."""
    return make_installation(tmp_path, config_text=MOUNTED_CONFIG)


def _needed(files: list[RepoFile]) -> int:
    return sum(-(-f.size // PAGE) * PAGE for f in files)


def _disk_files(disk: Path) -> dict[str, Path]:
    return {p.relative_to(disk).as_posix(): p for p in disk.rglob("*") if p.is_file()}


def _last_replicate_run(config: Config) -> dict:
    with open_catalog(config.catalog_path) as catalog:
        return run_rows.list_runs(catalog, kind="replicate:offline", limit=1)[0]


def test_a_plain_folder_is_not_a_disk(site: Config, tmp_path: Path) -> None:
    result = cli(site, "media", "init", "offline", "--label", "DISK-A")
    assert_one_line_error(result, 2, f"no disk mounted at {tmp_path / 'disk'}", "allow_unmounted = true")
    assert not (tmp_path / "disk" / LABEL_FILE).exists()
    (tmp_path / "disk").rmdir()
    result = cli(site, "media", "sync", "offline")
    assert_one_line_error(result, 2, f"no disk mounted at {tmp_path / 'disk'}")
    assert "media init" not in result.stderr      # never advice to label whatever is there


def test_a_bind_mount_of_the_root_filesystem_is_not_a_disk(site: Config, tmp_path: Path, mount) -> None:
    if os.stat(tmp_path).st_dev != os.stat("/").st_dev:
        pytest.skip("the test folder is not on the root filesystem")
    folder = tmp_path / "on-root"
    folder.mkdir()
    mount("--bind", str(folder), str(tmp_path / "disk"))
    result = cli(site, "media", "init", "offline", "--label", "DISK-A")
    assert_one_line_error(result, 2, "no disk mounted at", "root filesystem")
    assert not (folder / LABEL_FILE).exists()


def test_a_disk_too_small_is_refused_before_anything_is_written(site: Config, tmp_path: Path, mount) -> None:
    run_backup(site, "pacs", replicate=False)
    needed = _needed(list_repository(site.staging_repository))
    disk = tmp_path / "disk"
    # room for the label and half of the repository
    mount("-t", "tmpfs", "-o", f"size={PAGE + needed // 2 // PAGE * PAGE}", "tmpfs", str(disk))
    cli(site, "media", "init", "offline", "--label", "DISK-A", check=True)
    before = {rel: p.read_bytes() for rel, p in _disk_files(disk).items()}

    result = cli(site, "media", "sync", "offline", "--json")
    assert_one_line_error(result, 1, "disk 'DISK-A'", str(disk), "too small", "needs", "free")
    data = json.loads(result.stdout)
    assert data["ok"] is False and "too small" in data["error"]
    assert {rel: p.read_bytes() for rel, p in _disk_files(disk).items()} == before
    run = _last_replicate_run(site)
    assert run["status"] == "failed" and "too small" in run["error"]


class _FillTheDisk:
    """A progress display that fills the disk once the first file is copied: the disk fills mid-sync."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        self.filled = False

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
        yield self

    def advance(self, amount: float = 1) -> None:
        if not self.filled:
            self.filled = True
            with open(self.disk / "filler", "wb", buffering=0) as fh:
                try:
                    while fh.write(b"\0" * PAGE):
                        pass
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        pass


def test_a_disk_that_fills_while_copying_keeps_only_whole_named_files(site: Config, tmp_path: Path,
                                                                      mount) -> None:
    disk = tmp_path / "disk"
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))
    cli(site, "media", "init", "offline", "--label", "DISK-A", check=True)
    before = {rel: p.read_bytes() for rel, p in _disk_files(disk).items()}
    run_backup(site, "pacs", replicate=False)
    staging = {f.rel: f for f in list_repository(site.staging_repository)}
    assert len(staging) >= 4, "the test needs files left to copy once the disk is full"

    filling = _FillTheDisk(disk)
    with open_catalog(site.catalog_path) as catalog:
        outcome = replicate_to(site, catalog, "offline", filling)  # type: ignore[arg-type]
    assert filling.filled
    assert not outcome.ok and outcome.error is not None
    assert "disk 'DISK-A'" in outcome.error and "is full" in outcome.error and "\n" not in outcome.error
    run = _last_replicate_run(site)
    assert run["status"] == "failed" and "is full" in run["error"]

    (disk / "filler").unlink()
    after = _disk_files(disk)
    assert not [rel for rel in after if rel.endswith(TMP_SUFFIX)]
    repo = "backupctl/repository/"
    copied = {rel.removeprefix(repo): p for rel, p in after.items() if rel.startswith(repo)}
    assert {rel: p.read_bytes() for rel, p in after.items() if not rel.startswith(repo)} == before
    assert set(copied) < set(staging), "some files must have been refused by the full disk"
    for rel, path in copied.items():
        f = staging[rel]
        if f.named_by_hash:
            assert sha256_file(path) == f.name, rel
        else:
            assert path.read_bytes() == (site.staging_repository / rel).read_bytes(), rel

    # with room again, the next sync completes the copy
    done = json.loads(cli(site, "media", "sync", "offline", "--json", check=True).stdout)
    assert done["ok"] and done["report"]["skipped"] == len(copied)
    assert {f.rel for f in list_repository(disk / "backupctl" / "repository")} == set(staging)


def test_a_full_disk_through_the_cli_is_one_line_and_a_failed_run(site: Config, tmp_path: Path, mount) -> None:
    """Out of inodes: the free-space check passes, the first file created on the disk fails with ENOSPC."""
    disk = tmp_path / "disk"
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))
    cli(site, "media", "init", "offline", "--label", "DISK-A", check=True)
    run_backup(site, "pacs", replicate=False)
    used = os.statvfs(disk).f_files - os.statvfs(disk).f_ffree
    mount("-o", f"remount,nr_inodes={used}", "tmpfs", str(disk))
    result = cli(site, "media", "sync", "offline")
    assert_one_line_error(result, 1, "disk 'DISK-A'", "is full", "No space left on device")
    run = _last_replicate_run(site)
    assert run["status"] == "failed" and "is full" in run["error"]
    assert not [rel for rel in _disk_files(disk) if rel.endswith(TMP_SUFFIX)]


def test_partial_files_of_a_killed_sync_are_removed_by_the_next(installation: Config, tmp_path: Path) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    run_backup(installation, "pacs", replicate=False)
    leftover = tmp_path / "disk" / "backupctl" / "repository" / "data" / "ab" / ("ab" * 32 + TMP_SUFFIX)
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a pack")
    cli(installation, "media", "sync", "offline", check=True)
    assert not leftover.exists()


def test_a_failing_disk_is_named_with_the_file_and_not_called_full(installation: Config, tmp_path: Path) -> None:
    from backupctl.targets import make_target

    target = make_target(installation, "offline")
    pack = tmp_path / "disk" / "backupctl" / "repository" / "data" / "ab" / ("ab" * 32)
    failed = target._write_failed("DISK-A", OSError(errno.EIO, os.strerror(errno.EIO), str(pack) + TMP_SUFFIX))
    line = failed.one_line()
    assert "disk 'DISK-A'" in line and f"writing data/ab/{'ab' * 32}" in line and "Input/output error" in line
    assert "full" not in line and "dmesg" in line and failed.exit_code == 1
