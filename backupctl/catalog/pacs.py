"""PACS copies: the downtime and figures of each consistent Orthanc copy (`pacs.source`)."""

from __future__ import annotations

from typing import Any

from backupctl.catalog.db import Catalog, utcnow

_FIGURES = ("was_running", "stopped_at", "restarted_at", "downtime_seconds", "stop_seconds", "copy_seconds",
            "start_seconds", "prelink_seconds", "storage_files", "storage_bytes", "linked_while_stopped",
            "index_bytes", "instances_before")


def record_copy(catalog: Catalog, *, run_id: int | None, job: str, status: str, figures: dict[str, Any],
                error: str | None = None) -> int:
    """Record one copy; `figures` is `OrthancCopy.figures()` (missing keys are stored as NULL)."""
    assert status in ("ok", "failed"), status
    values = [int(bool(figures.get("was_running", True))) if k == "was_running" else figures.get(k)
              for k in _FIGURES]
    cols = ", ".join(_FIGURES)
    marks = ", ".join("?" for _ in _FIGURES)
    with catalog.transaction() as tx:
        cur = tx.execute(
            f"INSERT INTO pacs_copies (run_id, job, recorded, status, error, {cols}) "
            f"VALUES (?, ?, ?, ?, ?, {marks})",
            (run_id, job, utcnow(), status, error, *values))
        return int(cur.lastrowid)


def list_copies(catalog: Catalog, job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    sql = "SELECT * FROM pacs_copies"
    params: tuple[Any, ...] = ()
    if job is not None:
        sql += " WHERE job = ?"
        params = (job,)
    sql += " ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in catalog.query(sql, (*params, limit))]


def copy_for_run(catalog: Catalog, run_id: int) -> dict[str, Any] | None:
    rows = catalog.query("SELECT * FROM pacs_copies WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,))
    return dict(rows[0]) if rows else None
