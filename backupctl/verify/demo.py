"""The demo's `verify` step: verify what the demo backed up, and show that one flipped byte is caught."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from backupctl.catalog import open_catalog
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.manifest import DICOM
from backupctl.progress import Progress
from backupctl.repository import staging_restic
from backupctl.verify.restored import restored_path, verify_restored_tree
from backupctl.verify.run import LEVELS, run_verify
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key
from backupctl.verify.study import restore_studies


def _tamper_test(config: Config, snapshot_id: str, workdir: Path, progress: Progress) -> dict[str, Any]:
    """Restore one study, flip one pixel byte of one file (mtime kept) and check the damage is named."""
    restic = staging_restic(config)
    got = read_snapshot_manifest(restic, restic.snapshot(snapshot_id), trusted_key(config))
    study = sorted(got.manifest.studies())[0]
    to = workdir / "verify-tamper"
    with open_catalog(config.catalog_path) as catalog:
        restore_studies(config, catalog, [study], to, snapshot=snapshot_id, progress=progress)
    entries = got.manifest.study_entries(study)
    victim = next(e for e in entries if e.kind == DICOM)
    path = restored_path(to, victim.path)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01                       # inside the pixel data: the file still parses
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    tree = verify_restored_tree(to, got.manifest, entries=entries, workers=1)
    named = [f.kind for f in tree.findings if f.subject == victim.path and f.severity == "error"]
    shutil.rmtree(to, ignore_errors=True)
    return {"detected": named == ["hash-mismatch"], "findings": len(tree.findings), "flipped_bytes": 1}


def verify_step(config: Config, workdir: Path, progress: Progress, snapshot_id: str) -> dict[str, Any]:
    """Every verify level on the demo's copies, plus the tamper test; figures are measured."""
    started = time.monotonic()
    report = run_verify(config, list(LEVELS), progress=progress)
    levels = {r.level: r for r in report.results}
    restore = levels.get("restore")
    with open_catalog(config.catalog_path) as catalog:
        manifest = verify_rows.manifest_of(catalog, snapshot_id) or {}
    tamper = _tamper_test(config, snapshot_id, workdir, progress)
    failures = sum(len(r.errors) for r in report.results)
    hashed_seconds = manifest.get("seconds") or 0.0
    return {
        "ok": report.ok and tamper["detected"] and bool(restore and restore.checked),
        "files_hashed": manifest.get("hashed"),
        "manifest_seconds": round(hashed_seconds, 3),
        "manifest_mb_per_second": round(manifest.get("bytes", 0) / hashed_seconds / 1e6, 1) if hashed_seconds else None,
        "files_verified": restore.checked if restore else 0,
        "dicom_files_parsed": restore.figures.get("dicom_parsed") if restore else 0,
        "dicom_files_decoded": restore.figures.get("decoded") if restore else 0,
        "failures": failures,
        "warnings": sum(len(r.warnings) for r in report.results),
        "levels": {r.level: {"ok": r.ok, "checked": r.checked, "seconds": round(r.seconds, 3),
                             **({"skipped": r.skipped} if r.skipped else {})} for r in report.results},
        "tamper_test": tamper,
        "seconds": round(time.monotonic() - started, 3),
    }
