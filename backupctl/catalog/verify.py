"""Manifests, the study index, verification results and coverage (migration 003_verify)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backupctl.catalog.db import Catalog, utcnow


@dataclass(frozen=True)
class ManifestRecord:
    snapshot_id: str
    sha256: str
    key_id: str
    path: str
    files: int
    bytes: int
    dicom: int
    not_dicom: int
    problems: int
    hashed: int | None = None
    reused: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    series: int
    instances: int
    bytes: int
    modalities: str
    study_date: str | None = None       # YYYYMMDD
    patient_digest: str | None = None   # keyed HMAC-SHA-256 of the Patient ID, never the ID
    accession_digest: str | None = None


@dataclass(frozen=True)
class FindingRow:
    severity: str
    kind: str
    subject: str
    detail: str = ""


# manifests and the study index ----------------------------------------------------------------------------


def record_manifest(catalog: Catalog, m: ManifestRecord, studies: Iterable[StudyRow],
                    series: Iterable[tuple[str, str, int]], changed: Sequence[tuple[str, str]] = ()) -> None:
    """Record a snapshot's manifest and index its studies and series, all in one transaction."""
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO manifests (snapshot_id, sha256, key_id, path, files, bytes, dicom, not_dicom, "
            "problems, hashed, reused, seconds, changed_during_backup, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.snapshot_id, m.sha256, m.key_id, m.path, m.files, m.bytes, m.dicom, m.not_dicom, m.problems,
             m.hashed, m.reused, m.seconds, len(changed), utcnow()))
        tx.execute("DELETE FROM snapshot_studies WHERE snapshot_id=?", (m.snapshot_id,))
        tx.executemany(
            "INSERT INTO snapshot_studies (snapshot_id, study_uid, series, instances, bytes, modalities, "
            "study_date, patient_digest, accession_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(m.snapshot_id, s.study_uid, s.series, s.instances, s.bytes, s.modalities, s.study_date,
              s.patient_digest, s.accession_digest) for s in studies])
        tx.execute("DELETE FROM snapshot_series WHERE snapshot_id=?", (m.snapshot_id,))
        tx.executemany(
            "INSERT INTO snapshot_series (snapshot_id, series_uid, study_uid, instances) VALUES (?, ?, ?, ?)",
            [(m.snapshot_id, se, st, n) for se, st, n in series])
        tx.execute("DELETE FROM manifest_changed WHERE snapshot_id=?", (m.snapshot_id,))
        tx.executemany("INSERT INTO manifest_changed (snapshot_id, path, detail) VALUES (?, ?, ?)",
                       [(m.snapshot_id, p, d) for p, d in changed])


def manifest_of(catalog: Catalog, snapshot_id: str) -> dict[str, Any] | None:
    rows = catalog.query("SELECT * FROM manifests WHERE snapshot_id=?", (snapshot_id,))
    return dict(rows[0]) if rows else None


def changed_during_backup(catalog: Catalog, snapshot_id: str) -> dict[str, str]:
    rows = catalog.query("SELECT path, detail FROM manifest_changed WHERE snapshot_id=?", (snapshot_id,))
    return {r["path"]: r["detail"] for r in rows}


def snapshots_with_study(catalog: Catalog, study_uid: str) -> list[dict[str, Any]]:
    """Every snapshot (newest first) holding the study, with the study's figures in it."""
    rows = catalog.query(
        "SELECT s.id, s.short_id, s.job, s.time, s.status, st.series, st.instances, st.bytes, st.modalities "
        "FROM snapshot_studies st JOIN snapshots s ON s.id = st.snapshot_id "
        "WHERE st.study_uid=? AND s.status != 'forgotten' ORDER BY s.time DESC", (study_uid,))
    return [dict(r) for r in rows]


def snapshots_with_series(catalog: Catalog, series_uid: str) -> list[dict[str, Any]]:
    rows = catalog.query(
        "SELECT s.id, s.short_id, s.job, s.time, s.status, se.study_uid, se.instances "
        "FROM snapshot_series se JOIN snapshots s ON s.id = se.snapshot_id "
        "WHERE se.series_uid=? AND s.status != 'forgotten' ORDER BY s.time DESC", (series_uid,))
    return [dict(r) for r in rows]


def studies_of(catalog: Catalog, snapshot_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in catalog.query(
        "SELECT study_uid, series, instances, bytes, modalities, study_date FROM snapshot_studies WHERE snapshot_id=? "
        "ORDER BY study_uid", (snapshot_id,))]


def study_index(catalog: Catalog) -> list[tuple[str, str, int, int]]:
    """(snapshot id, study uid, series, instances) for every indexed study: for comparing catalogs."""
    return [(r["snapshot_id"], r["study_uid"], r["series"], r["instances"]) for r in catalog.query(
        "SELECT snapshot_id, study_uid, series, instances FROM snapshot_studies ORDER BY snapshot_id, study_uid")]


# verification runs -------------------------------------------------------------------------------------------


def record_verification(catalog: Catalog, run_id: int, level: str, subject: str, *, ok: bool, checked: int,
                        bytes_read: int, seconds: float, summary: dict[str, Any],
                        findings: Sequence[FindingRow]) -> None:
    failures = sum(1 for f in findings if f.severity == "error")
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO verifications (run_id, level, subject, ok, checked, failures, bytes, seconds, "
            "summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, level, subject, int(ok), checked, failures, bytes_read, seconds,
             json.dumps(summary, default=str)))
        tx.executemany(
            "INSERT INTO verify_findings (run_id, level, severity, kind, subject, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [(run_id, level, f.severity, f.kind, f.subject, f.detail) for f in findings])


def last_verification(catalog: Catalog, level: str) -> dict[str, Any] | None:
    rows = catalog.query(
        "SELECT v.*, r.started, r.finished FROM verifications v JOIN runs r ON r.id = v.run_id "
        "WHERE v.level=? ORDER BY v.run_id DESC LIMIT 1", (level,))
    return dict(rows[0]) if rows else None


# coverage: packs and slices ----------------------------------------------------------------------------------


def next_slice(catalog: Catalog, repository: str, slices: int) -> int:
    """The slice (1..slices) read longest ago, never-read ones first (lowest number first)."""
    rows = catalog.query("SELECT slice, last_read FROM slice_reads WHERE repository=? AND slices=?",
                         (repository, slices))
    last = {r["slice"]: r["last_read"] for r in rows}
    return min(range(1, slices + 1), key=lambda s: (s in last, last.get(s, ""), s))


def record_slice_read(catalog: Catalog, repository: str, slices: int, slice_no: int, run_id: int, ok: bool,
                      packs: Iterable[str], bad_packs: Iterable[str]) -> None:
    now = utcnow()
    bad = set(bad_packs)
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO slice_reads (repository, slices, slice, last_read, run_id, ok) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(repository, slices, slice) DO UPDATE SET last_read=excluded.last_read, "
            "run_id=excluded.run_id, ok=excluded.ok",
            (repository, slices, slice_no, now, run_id, int(ok)))
        tx.executemany(
            "INSERT INTO pack_reads (repository, pack, last_read, ok) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(repository, pack) DO UPDATE SET last_read=excluded.last_read, ok=excluded.ok",
            [(repository, p, now, int(p not in bad)) for p in packs])


def pack_reads(catalog: Catalog, repository: str) -> dict[str, tuple[str, bool]]:
    rows = catalog.query("SELECT pack, last_read, ok FROM pack_reads WHERE repository=?", (repository,))
    return {r["pack"]: (r["last_read"], bool(r["ok"])) for r in rows}


# coverage: studies and replicas -------------------------------------------------------------------------------


def record_study_reads(catalog: Catalog, results: dict[str, bool], snapshot_id: str, run_id: int) -> None:
    now = utcnow()
    with catalog.transaction() as tx:
        tx.executemany(
            "INSERT INTO study_reads (study_uid, snapshot_id, last_read, ok, run_id) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(study_uid) DO UPDATE SET snapshot_id=excluded.snapshot_id, last_read=excluded.last_read, "
            "ok=excluded.ok, run_id=excluded.run_id",
            [(study, snapshot_id, now, int(ok), run_id) for study, ok in results.items()])


def study_reads(catalog: Catalog) -> dict[str, tuple[str, bool]]:
    return {r["study_uid"]: (r["last_read"], bool(r["ok"]))
            for r in catalog.query("SELECT study_uid, last_read, ok FROM study_reads")}


def latest_studies(catalog: Catalog) -> set[str]:
    """Studies held by the newest non-forgotten snapshot of each job: what a restore would need."""
    rows = catalog.query(
        "SELECT DISTINCT st.study_uid FROM snapshot_studies st JOIN snapshots s ON s.id = st.snapshot_id "
        "WHERE s.status != 'forgotten' AND s.time = (SELECT MAX(s2.time) FROM snapshots s2 "
        "JOIN manifests m2 ON m2.snapshot_id = s2.id WHERE s2.job = s.job AND s2.status != 'forgotten')")
    return {r["study_uid"] for r in rows}


def record_replica_audit(catalog: Catalog, target: str, location: str, ok: bool, objects: int,
                         run_id: int) -> None:
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO replica_audits (target, location, last_audit, ok, objects, run_id) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(target, location) DO UPDATE SET last_audit=excluded.last_audit, ok=excluded.ok, "
            "objects=excluded.objects, run_id=excluded.run_id",
            (target, location, utcnow(), int(ok), objects, run_id))


def replica_audits(catalog: Catalog) -> list[dict[str, Any]]:
    return [dict(r) for r in catalog.query("SELECT * FROM replica_audits ORDER BY target, location")]


def verifications_of(catalog: Catalog, level: str, subject: str) -> list[dict[str, Any]]:
    """Verification runs of one subject (a snapshot id for `restore`), newest first."""
    rows = catalog.query(
        "SELECT v.*, r.started, r.finished FROM verifications v JOIN runs r ON r.id = v.run_id "
        "WHERE v.level=? AND v.subject=? ORDER BY v.run_id DESC", (level, subject))
    return [dict(r) for r in rows]
