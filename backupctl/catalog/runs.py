"""Job runs: started, finished, status, error, figures."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from backupctl.catalog.db import Catalog, utcnow
from backupctl.process import pid_running

FINAL_STATUSES = ("success", "partial", "failed", "interrupted")


@dataclass
class RunFigures:
    bytes: int | None = None
    bytes_added: int | None = None
    files: int | None = None
    seconds: float | None = None
    snapshot_id: str | None = None


def start_run(catalog: Catalog, job: str, kind: str = "backup") -> int:
    with catalog.transaction() as tx:
        cur = tx.execute(
            "INSERT INTO runs (kind, job, started, status, pid, host) VALUES (?, ?, ?, 'running', ?, ?)",
            (kind, job, utcnow(), os.getpid(), socket.gethostname()),
        )
        return int(cur.lastrowid)


def finish_run(catalog: Catalog, run_id: int, status: str, figures: RunFigures | None = None,
               error: str | None = None) -> None:
    assert status in FINAL_STATUSES, status
    f = figures or RunFigures()
    with catalog.transaction() as tx:
        tx.execute(
            "UPDATE runs SET finished=?, status=?, error=?, bytes=?, bytes_added=?, files=?, seconds=?, "
            "snapshot_id=? WHERE id=?",
            (utcnow(), status, error, f.bytes, f.bytes_added, f.files, f.seconds, f.snapshot_id, run_id),
        )


def mark_abandoned_runs(catalog: Catalog) -> int:
    """Runs still 'running' whose process is gone (killed, power loss) become 'failed', said so."""
    host = socket.gethostname()
    rows = catalog.query("SELECT id, pid FROM runs WHERE status='running' AND host=?", (host,))
    dead = [r["id"] for r in rows if not pid_running(r["pid"])]
    with catalog.transaction() as tx:
        for run_id in dead:
            tx.execute("UPDATE runs SET status='failed', finished=?, error=? WHERE id=?",
                       (utcnow(), "the backupctl process ended without finishing this run (killed?)", run_id))
    return len(dead)


def get_run(catalog: Catalog, run_id: int) -> dict:
    rows = catalog.query("SELECT * FROM runs WHERE id=?", (run_id,))
    return dict(rows[0]) if rows else {}


def list_runs(catalog: Catalog, job: str | None = None, kind: str | None = None, limit: int = 50) -> list[dict]:
    sql, params = "SELECT * FROM runs WHERE 1=1", []
    if job:
        sql += " AND job=?"
        params.append(job)
    if kind:
        sql += " AND kind=?"
        params.append(kind)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [dict(r) for r in catalog.query(sql, tuple(params))]


def last_run(catalog: Catalog, job: str, kind: str = "backup", status: str | None = None) -> dict | None:
    sql = "SELECT * FROM runs WHERE job=? AND kind=?"
    params: list = [job, kind]
    if status:
        sql += " AND status=?"
        params.append(status)
    rows = catalog.query(sql + " ORDER BY id DESC LIMIT 1", tuple(params))
    return dict(rows[0]) if rows else None
