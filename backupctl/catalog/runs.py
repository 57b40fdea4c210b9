"""Job runs: started, finished, status, error, figures."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from backupctl.catalog.db import Catalog, utcnow
from backupctl.process import same_process_running, start_ticks
from backupctl.status import Status

FINAL_STATUSES = tuple(s for s in Status if s.final)


@dataclass
class RunFigures:
    bytes: int | None = None
    bytes_added: int | None = None
    files: int | None = None
    seconds: float | None = None
    snapshot_id: str | None = None


def start_run(catalog: Catalog, job: str, kind: str = "backup") -> int:
    pid = os.getpid()
    with catalog.transaction() as tx:
        cur = tx.execute(
            "INSERT INTO runs (kind, job, started, status, pid, pid_start, host) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, job, utcnow(), Status.RUNNING, pid, (start_ticks(pid) if pid else None), socket.gethostname()),
        )
        return int(cur.lastrowid)


def finish_run(catalog: Catalog, run_id: int, status: Status | str, figures: RunFigures | None = None,
               error: str | None = None) -> None:
    status = Status(status)
    assert status.final, status
    f = figures or RunFigures()
    with catalog.transaction() as tx:
        tx.execute(
            "UPDATE runs SET finished=?, status=?, error=?, bytes=?, bytes_added=?, files=?, seconds=?, "
            "snapshot_id=? WHERE id=?",
            (utcnow(), status, error, f.bytes, f.bytes_added, f.files, f.seconds, f.snapshot_id, run_id),
        )


def mark_abandoned_runs(catalog: Catalog) -> list[dict]:
    """Runs still 'running' whose process is gone (killed, power loss) become 'interrupted', said so; returns
    them. A process is its pid and its start time: a pid since reused by another process does not count."""
    host = socket.gethostname()
    rows = catalog.query("SELECT * FROM runs WHERE status=? AND host=?", (Status.RUNNING, host))
    dead = [dict(r) for r in rows if not (r["pid"] and same_process_running(r["pid"], r["pid_start"]))]
    if not dead:
        return []
    with catalog.transaction() as tx:
        for run in dead:
            run["status"], run["finished"] = Status.INTERRUPTED, utcnow()
            run["error"] = f"the backupctl process (pid {run['pid']}) ended without finishing this run (killed?)"
            # still 'running' in the same transaction: another process may have marked it meanwhile
            tx.execute("UPDATE runs SET status=?, finished=?, error=? WHERE id=? AND status=?",
                       (run["status"], run["finished"], run["error"], run["id"], Status.RUNNING))
    return dead


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
