"""Scheduled executions of the daemon (migration 005_scheduler) and the read-only overview queries that
`status` and the metrics share."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from backupctl.catalog.db import Catalog, utcnow
from backupctl.process import pid_running

FINAL = ("success", "partial", "failed", "interrupted", "missed", "skipped")


def start_execution(catalog: Catalog, *, schedule_id: str, kind: str, name: str, execution: str,
                    scheduled_for: str | None = None) -> int:
    with catalog.transaction() as tx:
        cur = tx.execute(
            "INSERT INTO scheduler_runs (schedule_id, kind, name, execution, scheduled_for, started, status, "
            "daemon_pid, host) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            (schedule_id, kind, name, execution, scheduled_for, utcnow(), os.getpid(), socket.gethostname()))
        return int(cur.lastrowid)


def set_child(catalog: Catalog, row_id: int, child_pid: int) -> None:
    with catalog.transaction() as tx:
        tx.execute("UPDATE scheduler_runs SET child_pid=? WHERE id=?", (child_pid, row_id))


def finish_execution(catalog: Catalog, row_id: int, status: str, *, run_ids: list[int], steps: list[dict],
                     error: str | None, seconds: float) -> None:
    assert status in FINAL, status
    with catalog.transaction() as tx:
        tx.execute("UPDATE scheduler_runs SET finished=?, status=?, run_ids=?, steps=?, error=?, seconds=? "
                   "WHERE id=?", (utcnow(), status, json.dumps(run_ids), json.dumps(steps), error, seconds, row_id))


def record_not_run(catalog: Catalog, *, schedule_id: str, kind: str, name: str, execution: str, status: str,
                   scheduled_for: str | None, error: str) -> None:
    """A fire time that did not run: 'missed' (daemon down longer than the grace time) or 'skipped'."""
    now = utcnow()
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO scheduler_runs (schedule_id, kind, name, execution, scheduled_for, started, finished, "
            "status, error, daemon_pid, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (schedule_id, kind, name, execution, scheduled_for, now, now, status, error, os.getpid(),
             socket.gethostname()))


def mark_abandoned_executions(catalog: Catalog) -> list[dict]:
    """Executions left 'running' by a daemon that died (SIGKILL, power loss) become 'failed'; returns them
    (the next daemon alerts them: nobody else will)."""
    host = socket.gethostname()
    rows = catalog.query("SELECT * FROM scheduler_runs WHERE status='running' AND host=?", (host,))
    dead = [dict(r) for r in rows if not pid_running(r["daemon_pid"]) and not pid_running(r["child_pid"])]
    with catalog.transaction() as tx:
        for row in dead:
            row.update(status="failed", finished=utcnow(),
                       error="the scheduler ended before this execution finished (killed?)")
            tx.execute("UPDATE scheduler_runs SET status=?, finished=?, error=? WHERE id=?",
                       (row["status"], row["finished"], row["error"], row["id"]))
    return dead


def _decode(row: Any) -> dict:
    d = dict(row)
    d["run_ids"] = json.loads(d.get("run_ids") or "[]")
    d["steps"] = json.loads(d.get("steps") or "[]")
    return d


def list_executions(catalog: Catalog, schedule_id: str | None = None, limit: int = 50) -> list[dict]:
    sql, params = "SELECT * FROM scheduler_runs", []
    if schedule_id:
        sql += " WHERE schedule_id=?"
        params.append(schedule_id)
    rows = catalog.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [_decode(r) for r in rows]


def last_executions(catalog: Catalog) -> dict[str, dict]:
    """The latest execution of each schedule id (that ran or was due)."""
    rows = catalog.query("SELECT * FROM scheduler_runs WHERE id IN "
                         "(SELECT MAX(id) FROM scheduler_runs GROUP BY schedule_id)")
    return {r["schedule_id"]: _decode(r) for r in rows}


def runs_of_process(catalog: Catalog, pid: int, since: str) -> list[dict]:
    """Catalog runs a child process wrote (runs carry the pid and host of the process that did the work)."""
    rows = catalog.query("SELECT * FROM runs WHERE pid=? AND host=? AND started >= ? ORDER BY id",
                         (pid, socket.gethostname(), since))
    return [dict(r) for r in rows]


# overview queries shared by `status` and metrics ----------------------------------------------------------


def last_runs_by_kind(catalog: Catalog, like: str, status: str | None = None) -> dict[tuple[str, str], dict]:
    """The latest run per (kind, job) for kinds matching the LIKE pattern, optionally of one status."""
    sql = ("SELECT * FROM runs WHERE id IN (SELECT MAX(id) FROM runs WHERE kind LIKE ? AND status != 'running'"
           + (" AND status=?" if status else "") + " GROUP BY kind, job)")
    rows = catalog.query(sql, (like, status) if status else (like,))
    return {(r["kind"], r["job"]): dict(r) for r in rows}


def failure_counts(catalog: Catalog, like: str) -> dict[tuple[str, str], int]:
    rows = catalog.query("SELECT kind, job, COUNT(*) AS n FROM runs WHERE kind LIKE ? AND status='failed' "
                         "GROUP BY kind, job", (like,))
    return {(r["kind"], r["job"]): int(r["n"]) for r in rows}


def last_run_like(catalog: Catalog, job: str, like: str) -> dict | None:
    rows = catalog.query("SELECT * FROM runs WHERE job=? AND kind LIKE ? ORDER BY id DESC LIMIT 1", (job, like))
    return dict(rows[0]) if rows else None


def execution_failure_counts(catalog: Catalog) -> dict[str, int]:
    """Scheduled executions that did not succeed, per schedule (including failures before any run was
    recorded, such as a missing source, and runs missed while the daemon was down)."""
    rows = catalog.query("SELECT schedule_id, COUNT(*) AS n FROM scheduler_runs "
                         "WHERE status IN ('failed', 'partial', 'interrupted', 'missed') GROUP BY schedule_id")
    return {r["schedule_id"]: int(r["n"]) for r in rows}


def drill_outcomes(catalog: Catalog) -> tuple[dict[str, dict], dict[str, dict]] | None:
    """Per drill name: its latest finished drill and its latest passed one (runs joined with drill_runs), or
    None when the drills' tables are not in this catalog."""
    if not table_exists(catalog, "drill_runs"):
        return None
    select = ("SELECT r.*, d.name AS drill, d.passed, d.recovery_seconds, d.rto_seconds, d.rto_met "
              "FROM runs r JOIN drill_runs d ON d.run_id = r.id WHERE r.id IN "
              "(SELECT MAX(d2.run_id) FROM drill_runs d2 JOIN runs r2 ON r2.id = d2.run_id "
              "WHERE r2.status != 'running' {extra} GROUP BY d2.name)")
    last = {r["drill"]: dict(r) for r in catalog.query(select.format(extra=""))}
    passed = {r["drill"]: dict(r) for r in catalog.query(select.format(extra="AND d2.passed = 1"))}
    return last, passed


def table_exists(catalog: Catalog, name: str) -> bool:
    return bool(catalog.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)))
