"""Snapshots of the staging repository and where their replicas live."""

from __future__ import annotations

import json
from collections.abc import Iterable

from backupctl.catalog.db import Catalog, utcnow


def record_snapshot(catalog: Catalog, *, snapshot_id: str, short_id: str, job: str, time: str,
                    run_id: int | None, size: int | None, files: int | None, tags: list[str],
                    paths: list[str], status: str = "complete") -> None:
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO snapshots (id, short_id, job, time, run_id, size, files, tags, paths, status, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET size=excluded.size, files=excluded.files, status=excluded.status",
            (snapshot_id, short_id, job, time, run_id, size, files, json.dumps(tags), json.dumps(paths),
             status, utcnow()),
        )


def list_snapshots(catalog: Catalog, job: str | None = None, include_forgotten: bool = False,
                   replicas: bool = True) -> list[dict]:
    """Snapshots, oldest first; `replicas`: with where each one's replicas live (one query per snapshot)."""
    sql, params = "SELECT * FROM snapshots WHERE 1=1", []
    if job:
        sql += " AND job=?"
        params.append(job)
    if not include_forgotten:
        sql += " AND status != 'forgotten'"
    rows = catalog.query(sql + " ORDER BY time", tuple(params))
    out = []
    for r in rows:
        d = dict(r)
        d["tags"], d["paths"] = json.loads(d["tags"]), json.loads(d["paths"])
        if replicas:
            d["replicas"] = replicas_of(catalog, d["id"])
        out.append(d)
    return out


def latest_snapshot_id(catalog: Catalog, job: str, paths: list[str]) -> str | None:
    """The newest snapshot of `job` taken of exactly these paths (what restic would take as parent)."""
    rows = catalog.query("SELECT id, paths FROM snapshots WHERE job=? AND status != 'forgotten' "
                         "ORDER BY time DESC, created DESC", (job,))
    wanted = sorted(paths)
    return next((r["id"] for r in rows if sorted(json.loads(r["paths"])) == wanted), None)


def snapshot_times(catalog: Catalog, job: str) -> list[str]:
    """The times (restic's text) of every snapshot the catalog knows of `job`, forgotten ones included."""
    return [r["time"] for r in catalog.query("SELECT time FROM snapshots WHERE job=?", (job,))]


def find_snapshot(catalog: Catalog, prefix: str) -> dict | None:
    rows = catalog.query("SELECT * FROM snapshots WHERE id LIKE ? ORDER BY time", (prefix + "%",))
    return dict(rows[0]) if len(rows) == 1 else None


def mark_forgotten(catalog: Catalog, snapshot_ids: Iterable[str]) -> None:
    with catalog.transaction() as tx:
        tx.executemany("UPDATE snapshots SET status='forgotten' WHERE id=?", [(i,) for i in snapshot_ids])


def record_replicas(catalog: Catalog, snapshot_ids: Iterable[str], target: str, location: str) -> None:
    now = utcnow()
    with catalog.transaction() as tx:
        tx.executemany(
            "INSERT INTO replicas (snapshot_id, target, location, since, last_seen) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(snapshot_id, target, location) DO UPDATE SET last_seen=excluded.last_seen",
            [(sid, target, location, now, now) for sid in snapshot_ids],
        )


def replicas_of(catalog: Catalog, snapshot_id: str) -> list[dict]:
    return [dict(r) for r in catalog.query(
        "SELECT target, location, since, last_seen FROM replicas WHERE snapshot_id=? ORDER BY target, location",
        (snapshot_id,))]


def known_snapshot_ids(catalog: Catalog) -> set[str]:
    return {r["id"] for r in catalog.query("SELECT id FROM snapshots")}


def newest_in_copies(catalog: Catalog, job: str) -> list[dict]:
    """Per target holding snapshots of `job` (not forgotten): each such snapshot's id, time and target, for the
    caller to find the newest per copy (restic's times carry their own offsets: compared as times, not text)."""
    return [dict(r) for r in catalog.query(
        "SELECT r.target, s.id, s.time FROM replicas r JOIN snapshots s ON s.id = r.snapshot_id "
        "WHERE s.job = ? AND s.status != 'forgotten'", (job,))]


def set_tags(catalog: Catalog, snapshot_id: str, tags: list[str]) -> None:
    with catalog.transaction() as tx:
        tx.execute("UPDATE snapshots SET tags=? WHERE id=?", (json.dumps(tags), snapshot_id))
