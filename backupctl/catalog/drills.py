"""Restore drills: one `drill_runs` row per drill (keyed by its run id) with its phases, checks, problems and
studies. The run's status, start, end and error stay in `runs`."""

from __future__ import annotations

from typing import Any

from backupctl.catalog.db import Catalog
from backupctl.drills.model import ERROR, MAX_PROBLEMS_RECORDED, DrillResult

_DRILL_COLUMNS = (
    "name", "job", "copy", "snapshot_rule", "snapshot_id", "snapshot_time", "scope", "depth", "seed",
    "rto_seconds", "recovery_seconds", "rto_basis", "rto_met", "first_study_seconds", "first_study_uid", "files",
    "bytes", "archive_files", "archive_bytes", "estimated_full_seconds", "passed", "scratch", "scratch_removed",
    "manifest_sha256", "key_id", "rpo_seconds", "job_newest_snapshot_id", "job_newest_snapshot_time",
    "copy_newest_snapshot_time",
)


def start_drill(catalog: Catalog, result: DrillResult) -> None:
    """The drill's row as soon as its run exists, so even a killed drill leaves a trace of what it was."""
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO drill_runs (run_id, name, job, copy, snapshot_rule, scope, depth, seed, rto_seconds, "
            "rpo_seconds, scratch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (result.run_id, result.name, result.job, result.copy, result.snapshot_rule, result.scope,
             result.depth, result.seed, result.rto_seconds, result.rpo_seconds, result.scratch),
        )


def save_drill(catalog: Catalog, result: DrillResult) -> None:
    """Everything the drill found, in one transaction (its details replace any earlier save)."""
    values = result.as_dict()
    values["passed"] = result.passed
    row = [_sql_value(values[c]) for c in _DRILL_COLUMNS]
    with catalog.transaction() as tx:
        tx.execute(f"UPDATE drill_runs SET {', '.join(f'{c}=?' for c in _DRILL_COLUMNS)} WHERE run_id=?",
                   (*row, result.run_id))
        for table in ("drill_phases", "drill_checks", "drill_problems", "drill_studies"):
            tx.execute(f"DELETE FROM {table} WHERE run_id=?", (result.run_id,))
        tx.executemany(
            "INSERT INTO drill_phases (run_id, seq, phase, status, seconds, bytes, files, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(result.run_id, i, p.name, p.status, p.seconds, p.bytes, p.files, p.detail)
             for i, p in enumerate(result.phases)])
        tx.executemany(
            "INSERT INTO drill_checks (run_id, seq, name, status, checked, failed, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(result.run_id, i, c.name, c.status, c.checked, c.failed, c.detail) for i, c in enumerate(result.checks)])
        # errors first, so the cap never hides an error behind warnings
        kept = sorted(result.problems, key=lambda p: p.severity != ERROR)[:MAX_PROBLEMS_RECORDED]
        tx.executemany(
            "INSERT INTO drill_problems (run_id, seq, check_name, severity, kind, path, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(result.run_id, i, p.check, p.severity, p.kind, p.path, p.detail) for i, p in enumerate(kept)])
        tx.executemany(
            "INSERT INTO drill_studies (run_id, study_uid, files, bytes, ok, verified_seconds) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(result.run_id, s.study_uid, s.files, s.bytes, int(s.ok), s.verified_seconds) for s in result.studies])


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


_SELECT = (
    "SELECT d.*, r.status, r.started, r.finished, r.error, r.host FROM drill_runs d JOIN runs r ON r.id = d.run_id"
)


def list_drills(catalog: Catalog, *, since: str | None = None, name: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Drills, newest first. `since` is an ISO date or time (UTC) compared with the start."""
    sql, params = _SELECT + " WHERE 1=1", []
    if since:
        sql += " AND r.started >= ?"
        params.append(since)
    if name:
        sql += " AND d.name = ?"
        params.append(name)
    sql += " ORDER BY d.run_id DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    return [_row(r) for r in catalog.query(sql, tuple(params))]


def get_drill(catalog: Catalog, run_id: int) -> dict[str, Any] | None:
    """One drill with its phases, checks, failures and studies."""
    rows = catalog.query(_SELECT + " WHERE d.run_id = ?", (run_id,))
    if not rows:
        return None
    return with_details(catalog, _row(rows[0]))


def with_details(catalog: Catalog, drill: dict[str, Any]) -> dict[str, Any]:
    run_id = drill["run_id"]
    drill["phases"] = [dict(r) for r in catalog.query(
        "SELECT phase AS name, status, seconds, bytes, files, detail FROM drill_phases WHERE run_id=? ORDER BY seq",
        (run_id,))]
    for p in drill["phases"]:
        p["mb_per_second"] = round(p["bytes"] / p["seconds"] / 1e6, 3) if p["bytes"] and p["seconds"] > 0 else None
        p["files_per_second"] = round(p["files"] / p["seconds"], 2) if p["files"] and p["seconds"] > 0 else None
    drill["checks"] = [dict(r) for r in catalog.query(
        "SELECT name, status, checked, failed, detail FROM drill_checks WHERE run_id=? ORDER BY seq", (run_id,))]
    drill["problems"] = [dict(r) for r in catalog.query(
        "SELECT check_name AS 'check', severity, kind, path, detail FROM drill_problems WHERE run_id=? ORDER BY seq",
        (run_id,))]
    drill["studies"] = [dict(r) | {"ok": bool(r["ok"])} for r in catalog.query(
        "SELECT study_uid, files, bytes, ok, verified_seconds FROM drill_studies WHERE run_id=? ORDER BY study_uid",
        (run_id,))]
    return drill


def _row(r: Any) -> dict[str, Any]:
    d = dict(r)
    d["id"] = d["run_id"]
    for key in ("rto_met", "passed", "scratch_removed"):
        if d.get(key) is not None:
            d[key] = bool(d[key])
    return d


def last_drill(catalog: Catalog, name: str) -> dict[str, Any] | None:
    found = list_drills(catalog, name=name, limit=1)
    return found[0] if found else None
