"""The study index at work: which snapshots hold a study, and restoring just a study's files.

`restore --study` reads the file list from the snapshot's own signed manifest (not from the catalog, which
stores only the index), restores exactly those files, then checks each against the manifest, so what an
operator hands to the PACS has been verified on the way.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.restore import check_restore_target, restic_for_copy
from backupctl.catalog import Catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import UsageError
from backupctl.progress import NullProgress, Progress, watched
from backupctl.verify.findings import Finding
from backupctl.verify.restore import restore_entries, scratch_root
from backupctl.verify.restored import verify_restored_tree
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key


def find_study(catalog: Catalog, study_uid: str) -> list[dict[str, Any]]:
    """Snapshots holding the study (newest first), each with the replicas it lives on."""
    rows = verify_rows.snapshots_with_study(catalog, study_uid)
    for row in rows:
        row["replicas"] = snapshot_rows.replicas_of(catalog, row["id"])
    return rows


def find_series(catalog: Catalog, series_uid: str) -> list[dict[str, Any]]:
    rows = verify_rows.snapshots_with_series(catalog, series_uid)
    for row in rows:
        row["replicas"] = snapshot_rows.replicas_of(catalog, row["id"])
    return rows


def newest_snapshot_with(catalog: Catalog, studies: list[str]) -> str:
    """The newest snapshot holding every one of the studies."""
    holding = [{r["id"]: r["time"] for r in verify_rows.snapshots_with_study(catalog, s)} for s in studies]
    for study, found in zip(studies, holding, strict=True):
        if not found:
            raise UsageError(f"study {study} is in no snapshot the catalog knows",
                             hint="check the UID, or rebuild the index with `backupctl catalog rebuild`")
    common = set(holding[0]).intersection(*holding[1:])
    if not common:
        raise UsageError("no single snapshot holds all these studies", hint="restore them one at a time")
    return max(common, key=lambda sid: holding[0][sid])


@dataclass
class StudyRestore:
    snapshot_id: str
    source: str
    to: Path
    studies: list[str]
    files: int
    bytes: int
    seconds: float
    verified: bool
    findings: list[Finding] = field(default_factory=list)
    dicom_parsed: int = 0
    decoded: int = 0
    key_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "source": self.source, "to": str(self.to), "studies": self.studies,
                "files": self.files, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "verified": self.verified, "dicom_parsed": self.dicom_parsed, "decoded": self.decoded,
                "key_id": self.key_id, "checks": self.checks(), "findings": [f.as_dict() for f in self.findings]}

    def checks(self) -> dict[str, list[str]]:
        """What the restore verified, and what it did not (said, not implied)."""
        done = [f"SHA-256 of {self.files} files against the signed manifest (key {self.key_id})",
                f"full DICOM parse of {self.dicom_parsed} files (elements, pixel data length, UIDs)"]
        if self.decoded:
            done.append(f"pixel data decoded in {self.decoded} files")
        not_done = [f"pixel data of {self.dicom_parsed - self.decoded} files not decoded"] \
            if self.dicom_parsed > self.decoded else []
        not_done.append("not sent to or queried from a PACS")
        return {"verified": done, "not_verified": not_done}

    def closing_line(self) -> str:
        c = self.checks()
        head = "verified" if self.verified else "verification FAILED; checked"
        return f"{head}: {'; '.join(c['verified'])}. Not verified: {'; '.join(c['not_verified'])}."


def restore_studies(config: Config, catalog: Catalog, studies: list[str], to: Path, *, snapshot: str | None = None,
                    copy: str = "staging", force: bool = False, public_key: Path | None = None,
                    progress: Progress | None = None) -> StudyRestore:
    """Restore only the files of `studies` (from `snapshot`, else the newest holding them) and verify them."""
    progress = progress or NullProgress()
    check_restore_target(to, force)
    started = time.monotonic()
    snapshot = snapshot or newest_snapshot_with(catalog, studies)
    trusted = trusted_key(config, public_key)
    with tempfile.TemporaryDirectory(prefix="study-fetch-", dir=scratch_root(config)) as scratch:
        restic = restic_for_copy(config, copy, Path(scratch))
        snap = restic.snapshot(snapshot)
        manifest = read_snapshot_manifest(restic, snap, trusted).manifest
        wanted = set(studies)
        entries = [e for e in manifest.entries if e.study in wanted]
        absent = wanted - {e.study for e in entries}
        if absent:
            raise UsageError(f"study {sorted(absent)[0]} is not in snapshot {snap.short_id}",
                             hint="find which snapshots hold it with `backupctl find --study UID`")
        to.mkdir(parents=True, exist_ok=True)
        with watched(progress, f"restore {len(wanted)} study(ies) from {copy}", to, sum(e.size for e in entries)):
            restore_entries(restic, snap, manifest, entries, to, NullProgress())
    tree = verify_restored_tree(to, manifest, entries=entries, decode=config.settings.verify.decode_sample,
                                workers=config.settings.verify.workers, progress=progress)
    return StudyRestore(snap.id, copy, to, sorted(wanted), tree.files, tree.bytes, time.monotonic() - started,
                        tree.ok, tree.findings, tree.dicom, tree.decoded, trusted.key_id)
