"""Look inside snapshots without restoring them: their studies, their files, what changed between two.

Studies come from the catalog's index; files from `restic ls`; a diff from the two signed manifests (each
study's files with their SHA-256), so a study whose bytes changed under an unchanged name is named too.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.restore import restic_for_copy
from backupctl.config import Config
from backupctl.manifest import Manifest
from backupctl.verify.restore import scratch_root
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key


@dataclass
class FileRow:
    path: str
    type: str
    size: int
    mtime: str


def list_files(config: Config, snapshot_id: str, path: str | None = None, copy: str = "staging") -> list[FileRow]:
    """Every node of the snapshot under `path` (all of it without), as restic lists it."""
    prefix = path.rstrip("/") if path else None
    with tempfile.TemporaryDirectory(prefix="ls-", dir=scratch_root(config)) as scratch:
        _, nodes = restic_for_copy(config, copy, Path(scratch)).listing(snapshot_id)
    return [FileRow(n.path, n.type, n.size, n.mtime) for n in nodes
            if prefix is None or n.path == prefix or n.path.startswith(prefix + "/")]


@dataclass
class StudyChange:
    study_uid: str
    instances_before: int
    instances_after: int
    bytes_before: int
    bytes_after: int
    files_added: int = 0
    files_removed: int = 0
    files_altered: int = 0     # same path, other content


@dataclass
class SnapshotDiff:
    before: str
    after: str
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[StudyChange] = field(default_factory=list)
    unchanged: int = 0
    other_files_added: int = 0      # files outside any study (not DICOM, or unparseable)
    other_files_removed: int = 0
    other_files_altered: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = True
        return data


def _study_files(manifest: Manifest) -> tuple[dict[str, dict[str, str | None]], dict[str, str | None]]:
    """study -> {path: sha256}, and {path: sha256} of content files outside any study."""
    studies: dict[str, dict[str, str | None]] = {}
    other: dict[str, str | None] = {}
    for e in manifest.entries:
        if e.study:
            studies.setdefault(e.study, {})[e.path] = e.sha256
        elif e.sha256 is not None and "/.backupctl-manifest/" not in e.path:
            other[e.path] = e.sha256
    return studies, other


def _counts(before: dict[str, str | None], after: dict[str, str | None]) -> tuple[int, int, int]:
    added = sum(1 for p in after if p not in before)
    removed = sum(1 for p in before if p not in after)
    altered = sum(1 for p, h in after.items() if p in before and before[p] != h)
    return added, removed, altered


def diff_snapshots(config: Config, before_id: str, after_id: str, copy: str = "staging",
                   public_key: Path | None = None) -> SnapshotDiff:
    """Studies added, removed and changed from snapshot `before_id` to `after_id`, from their manifests."""
    trusted = trusted_key(config, public_key)
    with tempfile.TemporaryDirectory(prefix="diff-", dir=scratch_root(config)) as scratch:
        restic = restic_for_copy(config, copy, Path(scratch))
        before = read_snapshot_manifest(restic, restic.snapshot(before_id), trusted).manifest
        after = read_snapshot_manifest(restic, restic.snapshot(after_id), trusted).manifest
    b_studies, b_other = _study_files(before)
    a_studies, a_other = _study_files(after)
    b_index, a_index = before.studies(), after.studies()
    diff = SnapshotDiff(before_id, after_id)
    for uid in sorted(a_studies.keys() - b_studies.keys()):
        s = a_index[uid]
        diff.added.append({"study_uid": uid, "instances": s.instances, "bytes": s.bytes,
                           "modalities": ",".join(sorted(s.modalities)), "study_date": s.date})
    for uid in sorted(b_studies.keys() - a_studies.keys()):
        s = b_index[uid]
        diff.removed.append({"study_uid": uid, "instances": s.instances, "bytes": s.bytes,
                             "modalities": ",".join(sorted(s.modalities)), "study_date": s.date})
    for uid in sorted(a_studies.keys() & b_studies.keys()):
        if a_studies[uid] == b_studies[uid]:
            diff.unchanged += 1
            continue
        added, removed, altered = _counts(b_studies[uid], a_studies[uid])
        b, a = b_index.get(uid), a_index.get(uid)
        diff.changed.append(StudyChange(uid, b.instances if b else 0, a.instances if a else 0,
                                        b.bytes if b else 0, a.bytes if a else 0, added, removed, altered))
    diff.other_files_added, diff.other_files_removed, diff.other_files_altered = _counts(b_other, a_other)
    return diff
