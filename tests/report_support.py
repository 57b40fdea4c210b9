"""Drills recorded straight into a catalog, as the drill action records them, for the report tests."""

from __future__ import annotations

from backupctl.catalog import drills as drill_rows
from backupctl.catalog import runs as run_rows
from backupctl.catalog.db import Catalog
from backupctl.drills.model import ERROR, Check, DrillResult, Phase, Problem, StudyResult


def record_drill(catalog: Catalog, name: str, *, passed: bool, seconds: float, rto: float = 600.0,
                 sampled: bool = False, legacy: bool = False, started: str | None = None,
                 snapshot_time: str | None = None, rpo: float | None = None, job_newest_time: str | None = None,
                 copy_newest_time: str | None = None, copy: str = "offline", rule: str = "latest") -> int:
    """A finished drill in the catalog (`legacy`: as drills were recorded before the checks ran alongside the
    restore, with a 'hash' and a 'dicom' phase instead of 'verify'; `started`: the run's start, else now)."""
    run_id = run_rows.start_run(catalog, "pacs", kind="drill")
    r = DrillResult(run_id=run_id, name=name, job="pacs", copy=copy, snapshot_rule=rule,
                    scope="sample:2" if sampled else "all", depth="dicom", seed=run_id, rto_seconds=rto,
                    rpo_seconds=rpo)
    drill_rows.start_drill(catalog, r)
    r.snapshot_id = "ab" * 32
    r.snapshot_time = snapshot_time
    r.job_newest_snapshot_id = "cd" * 32 if job_newest_time else None
    r.job_newest_snapshot_time, r.copy_newest_snapshot_time = job_newest_time, copy_newest_time
    checks = [Phase("hash", "ok", seconds * 0.2, bytes=50_000_000, files=40),
              Phase("dicom", "ok", seconds * 0.2 - 0.4, bytes=50_000_000, files=40)] if legacy else \
        [Phase("verify", "ok", seconds * 0.4 - 0.4, bytes=10_000_000, files=8)]
    r.phases = [Phase("fetch", "skipped"), Phase("select", "ok", 0.4, files=1),
                Phase("restore", "ok", seconds * 0.6, bytes=50_000_000, files=40), *checks,
                Phase("cleanup", "ok", 0.05)]
    r.checks = [Check("hash", "pass" if passed else "fail", 40, 0 if passed else 1,
                      "all 40 file(s) match" if passed else "1 of 40 file(s) failed: hash-mismatch")]
    if not passed:
        r.problems = [Problem("hash", ERROR, "hash-mismatch", "/archive/P1/S1/img<1>.dcm", "SHA-256 differs")]
    r.studies = [StudyResult("1.2.3.4", 40, 50_000_000, passed, 1.5)]
    r.recovery_seconds = seconds
    r.rto_basis = "estimate" if sampled else "measured"
    r.estimated_full_seconds = seconds * 10 if sampled else None
    r.rto_met = (seconds * 10 if sampled else seconds) <= rto
    r.checks.append(Check("rto", "pass" if r.rto_met else "fail", 1, int(not r.rto_met), "recovery vs target"))
    r.first_study_seconds, r.files, r.bytes, r.scratch_removed = 1.5, 40, 50_000_000, True
    r.status = "success" if r.passed else "failed"
    drill_rows.save_drill(catalog, r)
    run_rows.finish_run(catalog, run_id, r.status, error=None if r.passed else "hash: failed")
    if started is not None:
        with catalog.transaction() as tx:
            tx.execute("UPDATE runs SET started=? WHERE id=?", (started, run_id))
    return run_id
