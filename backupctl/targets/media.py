"""Offline media: a copy of the staging repository on a labelled removable disk.

Every rotating disk of a target mounts at the same place; each carries a label file written by
`backupctl media init`. Writing to a disk whose label is not one of the target's configured labels is
refused, so a stray USB disk (or the wrong rotation) is never written by mistake.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backupctl.catalog.db import utcnow
from backupctl.config import MediaTargetConfig
from backupctl.errors import (
    IntegrityError,
    MediaFull,
    MediaLabelMismatch,
    MediaNotMounted,
    MediaWriteFailed,
    TargetError,
    UsageError,
)
from backupctl.fsutil import atomic_write_text, fsync_dir, fsync_path
from backupctl.progress import Progress
from backupctl.repofiles import HASH_CHUNK, KIND_ORDER, RepoFile, kind_of, list_repository, sha256_file
from backupctl.targets.base import Finding, SyncReport, Target
from backupctl.units import human_bytes

log = logging.getLogger("backupctl.media")

LABEL_FILE = "BACKUPCTL-MEDIUM.json"
TMP_SUFFIX = ".backupctl-partial"


@dataclass(frozen=True)
class MediumLabel:
    label: str
    target: str
    media_id: str
    created: str


def read_label(mount: Path) -> MediumLabel | None:
    path = mount / LABEL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return MediumLabel(data["label"], data["target"], data["media_id"], data["created"])
    except (ValueError, KeyError) as exc:
        raise TargetError(f"label file {path} is damaged: {exc}",
                          hint="inspect the disk; re-label only a disk you mean to reuse") from None


def init_medium(cfg: MediaTargetConfig, target: str, label: str) -> MediumLabel:
    """Write the label file on the disk mounted at cfg.mount. Refuses a disk already labelled."""
    if label not in cfg.labels:
        raise UsageError(f"label '{label}' is not one of target {target}'s labels ({', '.join(cfg.labels)})",
                         hint=f"add it to [targets.{target}] labels first")
    require_disk(cfg.mount, cfg.allow_unmounted)
    existing = read_label(cfg.mount)
    if existing is not None:
        raise TargetError(f"the disk at {cfg.mount} is already labelled '{existing.label}' "
                          f"(target {existing.target})", hint="use a blank disk for a new label")
    medium = MediumLabel(label, target, str(uuid.uuid4()), utcnow())
    atomic_write_text(cfg.mount / LABEL_FILE, json.dumps(medium.__dict__, indent=2) + "\n")
    (cfg.mount / cfg.folder).mkdir(exist_ok=True)
    return medium


def require_disk(mount: Path, allow_unmounted: bool = False) -> None:
    """A disk is mounted at `mount`: a mount point of its own, not a folder (or bind mount) of the root
    filesystem, where an absent disk would let backups fill the system disk. `allow_unmounted` accepts a plain
    folder (a NAS share mounted higher up, a test)."""
    if not mount.is_dir():
        raise MediaNotMounted(f"no disk mounted at {mount}", hint="mount the backup disk there")
    if allow_unmounted:
        return
    device = _mount_device(mount)
    if device is None:
        raise MediaNotMounted(f"no disk mounted at {mount} (a plain folder, not a mount point)",
                              hint="mount the backup disk there, or set allow_unmounted = true for a NAS folder")
    if device == _mount_device(Path("/")):
        raise MediaNotMounted(f"no disk mounted at {mount} (a mount point of the root filesystem, not a disk)",
                              hint="mount the backup disk there, or set allow_unmounted = true for a NAS folder")


def disk_present(mount: Path, allow_unmounted: bool = False) -> bool:
    try:
        require_disk(mount, allow_unmounted)
    except MediaNotMounted:
        return False
    return True


def _mount_device(path: Path) -> str | None:
    """The device (major:minor) mounted exactly at `path`, from /proc/self/mountinfo (which, unlike
    os.path.ismount, sees bind mounts); None when nothing is mounted there. The last mount there wins."""
    target = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:  # no /proc: a mount point is at least a change of device
        return str(os.stat(target).st_dev) if os.path.ismount(target) else None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and _unescape(fields[4]) == target:
            found = fields[2]
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def copy_checked(src: Path, dest: Path, expected_sha256: str | None) -> Path:
    """Copy `src` to a temporary name next to `dest`, hashing as we go; returns the temporary file once its
    content matches its name (`settle` makes it durable and gives it its name)."""
    import hashlib

    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(src, "rb", buffering=0) as fin, open(tmp, "wb", buffering=0) as fout:
        while chunk := fin.read(HASH_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        # start writing it to the disk now (the kernel would wait up to 30 s): `settle` then finds it written
        os.posix_fadvise(fout.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if expected_sha256 is not None and h.hexdigest() != expected_sha256:
        tmp.unlink()
        raise IntegrityError(f"staging file {src} does not match its name (SHA-256 {h.hexdigest()[:12]}…)",
                             hint="the staging repository is damaged: run `backupctl verify --level repo`")
    return tmp


def settle(tmp: Path, dest: Path) -> None:
    """Make a copied file durable, then give it its real name: a name on the disk always means a whole file."""
    fsync_path(tmp)
    os.replace(tmp, dest)


class MediaTarget(Target):
    kind = "media"

    def __init__(self, name: str, cfg: MediaTargetConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.repo = cfg.mount / cfg.folder / "repository"

    def current_label(self) -> MediumLabel:
        require_disk(self.cfg.mount, self.cfg.allow_unmounted)
        medium = read_label(self.cfg.mount)
        if medium is None:
            raise MediaLabelMismatch(f"the disk at {self.cfg.mount} has no backupctl label",
                                     hint=f"run `backupctl media init {self.name} --label LABEL` on a blank disk")
        if medium.label not in self.cfg.labels or medium.target != self.name:
            raise MediaLabelMismatch(
                f"the disk at {self.cfg.mount} is labelled '{medium.label}' (target {medium.target}), "
                f"not one of target {self.name}'s labels ({', '.join(self.cfg.labels)})",
                hint="mount the right disk")
        return medium

    def prepare(self) -> str:
        return self.current_label().label

    def list_files(self) -> dict[str, int]:
        if not self.repo.is_dir():
            return {}
        return {f.rel: f.size for f in list_repository(self.repo)}

    def sync(self, staging: Path, files: list[RepoFile], progress: Progress) -> SyncReport:
        label = self.prepare()
        started = time.monotonic()
        self._check_same_repository(staging)
        if removed := self.remove_partials():
            log.warning("disk '%s': removed %d partial file(s) left by an interrupted sync", label, removed)
        present = self.list_files()
        todo = [f for f in files if present.get(f.rel) != f.size]
        self._check_room(label, todo)
        report = SyncReport(self.name, label, skipped=len(files) - len(todo))
        try:
            self._copy(staging, todo, report, label, progress)
        except BaseException as exc:
            # whatever stopped the copy, the disk keeps only whole, named files
            self.remove_partials()
            if isinstance(exc, OSError):
                raise self._write_failed(label, exc) from None
            raise
        report.seconds = time.monotonic() - started
        return report

    def _copy(self, staging: Path, todo: list[RepoFile], report: SyncReport, label: str, progress: Progress) -> None:
        def copy(f: RepoFile) -> Path:
            try:
                tmp = copy_checked(staging / f.rel, self.repo / f.rel, f.name if f.named_by_hash else None)
            except OSError as exc:  # a failed write() names no file: the message should
                raise OSError(exc.errno, exc.strerror, exc.filename or str(self.repo / f.rel)) from None
            task.advance(f.size)
            return tmp

        with progress.task(f"media {label}", total=sum(f.size for f in todo), unit="B") as task:
            # one kind at a time, each made durable before the next: a snapshot file never reaches the disk
            # before what it refers to. Within a kind, files are copied (and checked) side by side, then
            # flushed side by side: the disk gets one stream of writes, as with `cp -r` and one `sync`,
            # rather than a flush after every file.
            for kind in KIND_ORDER:
                batch = [f for f in todo if f.kind == kind]
                with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
                    started_copies = [(f, pool.submit(copy, f)) for f in batch]
                copied, failure = [], None
                for f, fut in started_copies:
                    try:
                        copied.append((f, fut.result()))
                    except Exception as exc:  # noqa: BLE001 - raised below, once the good copies are kept
                        failure = failure or exc
                with ThreadPoolExecutor(max_workers=max(4, self.cfg.concurrency)) as pool:
                    list(pool.map(lambda fc: settle(fc[1], self.repo / fc[0].rel), copied))
                report.uploaded += len(copied)
                report.uploaded_bytes += sum(f.size for f, _ in copied)
                for folder in {(self.repo / f.rel).parent for f, _ in copied}:
                    fsync_dir(folder)
                if failure is not None:
                    raise failure

    def remove_partials(self) -> int:
        """Remove the temporary files of copies that did not finish (this run's, or a killed run's)."""
        removed = 0
        for folder, _, names in os.walk(self.repo):
            for name in names:
                if name.endswith(TMP_SUFFIX):
                    try:
                        os.unlink(os.path.join(folder, name))
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def _check_room(self, label: str, todo: list[RepoFile]) -> None:
        """Refuse a sync the disk cannot hold, before writing anything: each file takes whole blocks."""
        st = os.statvfs(self.cfg.mount)
        block = st.f_frsize or 4096
        free = st.f_bavail * block
        needed = sum(-(-f.size // block) * block for f in todo)
        if needed > free:
            raise MediaFull(f"disk '{label}' at {self.cfg.mount} is too small for this sync: needs "
                            f"{human_bytes(needed)} for {len(todo)} files, {human_bytes(free)} free",
                            hint="use a larger disk of the rotation, or forget and prune old snapshots first")

    def _write_failed(self, label: str, exc: OSError) -> MediaWriteFailed:
        name = exc.filename if isinstance(exc.filename, str) else None
        where = ""
        if name:
            rel = os.path.relpath(name.removesuffix(TMP_SUFFIX), self.repo)
            where = f" writing {rel}" if not rel.startswith("..") else f" writing {name}"
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return MediaWriteFailed(f"disk '{label}' at {self.cfg.mount} is full ({reason}{where}); complete files "
                                    "were kept, partial ones removed",
                                    hint="free space or use a larger disk; the next sync copies what is missing")
        return MediaWriteFailed(f"disk '{label}' at {self.cfg.mount} failed a write ({reason}{where}); complete "
                                "files were kept, partial ones removed",
                                hint="check the disk (dmesg) or use another disk of the rotation")

    def _check_same_repository(self, staging: Path) -> None:
        mine = self.repo / "config"
        if mine.exists() and mine.read_bytes() != (staging / "config").read_bytes():
            raise TargetError(f"the disk '{self.current_label().label}' holds a different restic repository",
                              hint="use a disk initialised for this staging repository")

    def audit(self, expected: list[RepoFile], progress: Progress) -> list[Finding]:
        findings: list[Finding] = []
        with progress.task(f"audit {self.name}", total=sum(f.size for f in expected), unit="B") as task:
            for f in expected:
                path = self.repo / f.rel
                if not path.exists():
                    findings.append(Finding("missing", f.rel))
                elif f.rel == "config":
                    pass
                elif sha256_file(path) != f.name:
                    findings.append(Finding("altered", f.rel, "SHA-256 differs from its name"))
                task.advance(f.size)
        for path in self.repo.rglob("*") if self.repo.is_dir() else ():
            rel = path.relative_to(self.repo).as_posix()
            if path.is_file() and kind_of(rel) is None and not rel.startswith("locks/"):
                findings.append(Finding("extra", rel, "not a restic repository file"))
        return findings

    def local_repository(self, scratch: Path) -> Path:
        self.prepare()
        if not (self.repo / "config").exists():
            raise TargetError(f"the disk '{self.current_label().label}' holds no repository yet",
                              hint=f"run `backupctl media sync {self.name}` first")
        return self.repo
