"""Queries of the study index by what an admin is given (migration 007_find_identifiers).

Patient ID and accession number arrive here already as keyed digests (backupctl.identifiers): the catalog
never sees them in clear, and no query here returns one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backupctl.catalog.db import Catalog


@dataclass(frozen=True)
class IndexQuery:
    job: str | None = None
    snapshot_id: str | None = None
    patient_digest: str | None = None
    accession_digest: str | None = None
    date_from: str | None = None      # YYYYMMDD, inclusive
    date_to: str | None = None
    modality: str | None = None


def matching_studies(catalog: Catalog, q: IndexQuery) -> list[dict[str, Any]]:
    """(snapshot, study) rows matching every given criterion, newest snapshot first."""
    sql = ("SELECT s.id AS snapshot_id, s.short_id, s.job, s.time, st.study_uid, st.series, st.instances, "
           "st.bytes, st.modalities, st.study_date FROM snapshot_studies st JOIN snapshots s ON s.id = st.snapshot_id "
           "WHERE s.status != 'forgotten'")
    params: list[Any] = []
    for column, value in (("s.job", q.job), ("s.id", q.snapshot_id), ("st.patient_digest", q.patient_digest),
                          ("st.accession_digest", q.accession_digest)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    if q.date_from is not None:
        sql += " AND st.study_date >= ?"
        params.append(q.date_from)
    if q.date_to is not None:
        sql += " AND st.study_date <= ?"
        params.append(q.date_to)
    if q.modality is not None:
        sql += " AND (',' || st.modalities || ',') LIKE ?"
        params.append(f"%,{q.modality},%")
    return [dict(r) for r in catalog.query(sql + " ORDER BY s.time DESC, s.created DESC, st.study_uid",
                                           tuple(params))]


def newest_snapshot_of(catalog: Catalog, job: str) -> dict[str, Any] | None:
    rows = catalog.query("SELECT * FROM snapshots WHERE job=? AND status != 'forgotten' "
                         "ORDER BY time DESC, created DESC LIMIT 1", (job,))
    return dict(rows[0]) if rows else None


def snapshots_by_prefix(catalog: Catalog, prefix: str) -> list[dict[str, Any]]:
    # substr, not LIKE: '%' or '_' typed in a prefix match nothing rather than anything
    return [dict(r) for r in catalog.query("SELECT * FROM snapshots WHERE substr(id, 1, ?) = ? ORDER BY time",
                                           (len(prefix), prefix.lower()))]


def snapshots_on(catalog: Catalog, target: str) -> set[str]:
    """Ids of the snapshots recorded as replicated to `target`."""
    return {r["snapshot_id"] for r in catalog.query("SELECT DISTINCT snapshot_id FROM replicas WHERE target=?",
                                                    (target,))}


def drill_restore_history(catalog: Catalog, copy: str, limit: int = 5) -> list[dict[str, Any]]:
    """Per drill of the last `limit` that read `copy` and restored something: the bytes restored, the
    seconds of restore + verify (which scale with bytes), of fetch + select (which happen once) and until the
    first study was verified (what even the smallest restore pays: restic's start included). What a
    restore from that copy is expected to take is measured there, not assumed."""
    rows = catalog.query(
        "SELECT d.run_id, r.bytes, d.first_study_seconds, "
        "SUM(CASE WHEN p.phase IN ('restore', 'verify') THEN p.seconds ELSE 0 END) AS seconds, "
        "SUM(CASE WHEN p.phase IN ('fetch', 'select') THEN p.seconds ELSE 0 END) AS once_seconds "
        "FROM drill_runs d JOIN drill_phases r ON r.run_id = d.run_id AND r.phase = 'restore' "
        "JOIN drill_phases p ON p.run_id = d.run_id AND p.status = 'ok' "
        "WHERE d.copy = ? AND r.status = 'ok' AND r.bytes > 0 AND r.seconds > 0 "
        "GROUP BY d.run_id ORDER BY d.run_id DESC LIMIT ?", (copy, limit))
    return [dict(r) for r in rows]
