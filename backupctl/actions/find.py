"""Find (and restore) studies by what an admin is handed: a Patient ID, an accession number, a name, a date.

Exact identifiers are looked up in the catalog by their keyed digest (the query is hashed, never stored);
date and modality are plain columns; a name wildcard is matched in memory on the sealed names of the signed
manifests of the candidate snapshots only (the fewest manifests that cover the candidate studies, newest
first). No identifier is printed except the ones the query itself asked for.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from backupctl.actions.restore import restic_for_copy
from backupctl.catalog import Catalog
from backupctl.catalog import find as find_rows
from backupctl.config import Config
from backupctl.errors import UsageError
from backupctl.identifiers import IdentifierKey, identifier_key
from backupctl.verify.restore import scratch_root
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key

_DAY = r"(\d{4})-?(\d{2})-?(\d{2})"
_ONE_DAY = re.compile(_DAY)
_RANGE = re.compile(rf"(?:{_DAY})?(?:\.\.|-)(?:{_DAY})?")


def _day(y: str, m: str, d: str, text: str) -> str:
    try:
        return date(int(y), int(m), int(d)).strftime("%Y%m%d")
    except ValueError:
        raise UsageError(f"--study-date {text}: not a calendar date") from None


def parse_study_date(text: str) -> tuple[str | None, str | None]:
    """A day (YYYYMMDD or YYYY-MM-DD) or a range A-B / A..B (either end may be open), as inclusive
    YYYYMMDD bounds."""
    text = text.strip()
    if m := _ONE_DAY.fullmatch(text):
        day = _day(*m.groups(), text)
        return day, day
    m = _RANGE.fullmatch(text)
    if m is None or not any(m.groups()):
        raise UsageError(f"--study-date {text}: give a day (20240131 or 2024-01-31) or a range "
                         "(20240101-20240131, 2024-01-01..2024-01-31)")
    g = m.groups()
    low = _day(*g[:3], text) if g[0] else None
    high = _day(*g[3:], text) if g[3] else None
    if low and high and low > high:
        raise UsageError(f"--study-date {text}: the range ends before it starts")
    return low, high


def name_matcher(pattern: str) -> re.Pattern[str]:
    """DICOM wildcard matching of a Patient Name: '*' any run of characters, '?' one character; person
    names are compared without regard to case, as most PACS do."""
    if not pattern.strip():
        raise UsageError("--patient-name is empty")
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.strip())
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


@dataclass
class StudyQuery:
    patient_id: str | None = None
    accession: str | None = None
    study_date: str | None = None
    modality: str | None = None
    patient_name: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def asked(self) -> dict[str, str]:
        """The criteria as given: the only identifiers the answer may show."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class StudyMatch:
    study_uid: str
    study_date: str | None
    modalities: str
    series: int
    instances: int
    bytes: int
    snapshot_id: str
    short_id: str
    job: str
    snapshot_time: str
    snapshots: int = 1                 # how many snapshots (of the query's scope) hold the study
    patient_name: str | None = None    # only when the query asked by name

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.patient_name is None:
            del data["patient_name"]
        return data


@dataclass
class FindResult:
    query: StudyQuery
    matches: list[StudyMatch]
    rows: list[dict[str, Any]] = field(default_factory=list)   # every (snapshot, study) matched
    manifests_read: int = 0
    names_unreadable: int = 0          # sealed under another identifiers key
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query.asked(), "studies": [m.as_dict() for m in self.matches],
                "manifests_read": self.manifests_read, "names_unreadable": self.names_unreadable,
                "seconds": round(self.seconds, 3), "ok": bool(self.matches)}


# which job, which snapshot -----------------------------------------------------------------------------------


def pick_job(config: Config, job: str | None) -> str:
    """The job 'latest' refers to: --job, else the only job; several jobs and no --job is bad input."""
    if job is not None:
        return config.job(job).name
    names = sorted(config.jobs)
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError("'latest' needs a job, and none is defined", hint="add jobs/NAME.toml")
    raise UsageError(f"'latest' is ambiguous with {len(names)} jobs ({', '.join(names)}): give --job JOB")


def resolve_snapshot(config: Config, catalog: Catalog, ref: str, job: str | None = None) -> str:
    """A full snapshot id from 'latest' (of the job) or an id / unique prefix the catalog knows."""
    if ref == "latest":
        name = pick_job(config, job)
        row = find_rows.newest_snapshot_of(catalog, name)
        if row is None:
            raise UsageError(f"job {name} has no snapshot yet", hint=f"run `backupctl backup run {name}`")
        return str(row["id"])
    found = find_rows.snapshots_by_prefix(catalog, ref)
    if len(found) > 1:
        raise UsageError(f"snapshot {ref} is ambiguous: matches {', '.join(r['short_id'] for r in found[:5])}"
                         + (" ..." if len(found) > 5 else ""), hint="give more of the id")
    if not found:
        raise UsageError(f"no snapshot {ref} in the catalog",
                         hint="list them with `backupctl snapshots`; `backupctl catalog rebuild` re-reads a copy")
    if job is not None and found[0]["job"] != config.job(job).name:
        raise UsageError(f"snapshot {found[0]['short_id']} is of job {found[0]['job']}, not {job}")
    return str(found[0]["id"])


# finding -----------------------------------------------------------------------------------------------------


def find_studies(config: Config, catalog: Catalog, query: StudyQuery, *, job: str | None = None,
                 snapshot: str | None = None, every_snapshot: bool = False, copy: str = "staging",
                 public_key: Path | None = None) -> FindResult:
    """The studies matching every criterion of `query`: one row per study (its newest snapshot in scope),
    or one per (snapshot, study) with `every_snapshot`."""
    if not query.given():
        raise UsageError("give at least one of --patient-id, --accession, --study-date, --modality, "
                         "--patient-name (or --study UID)")
    started = time.monotonic()
    if job is not None:
        config.job(job)
    snapshot_id = resolve_snapshot(config, catalog, snapshot, job) if snapshot else None
    ids = identifier_key(config) if (query.patient_id or query.accession or query.patient_name) else None
    low, high = parse_study_date(query.study_date) if query.study_date else (None, None)
    for what, value in (("--patient-id", query.patient_id), ("--accession", query.accession),
                        ("--modality", query.modality)):
        if value is not None and not value.strip():
            raise UsageError(f"{what} is empty")
    rows = find_rows.matching_studies(catalog, find_rows.IndexQuery(
        job=job, snapshot_id=snapshot_id,
        patient_digest=ids.digest(query.patient_id) if ids and query.patient_id else None,
        accession_digest=ids.digest(query.accession) if ids and query.accession else None,
        date_from=low, date_to=high, modality=query.modality.strip().upper() if query.modality else None))
    result = FindResult(query, [], rows)
    names: dict[str, str] = {}
    if query.patient_name is not None and rows:
        assert ids is not None
        names = _names_matching(config, rows, name_matcher(query.patient_name), ids, copy, public_key, result)
        rows = result.rows = [r for r in rows if r["study_uid"] in names]
    result.matches = _matches(rows, every_snapshot, names)
    result.seconds = time.monotonic() - started
    return result


def _matches(rows: list[dict[str, Any]], every_snapshot: bool, names: dict[str, str]) -> list[StudyMatch]:
    held: dict[str, int] = {}
    for r in rows:
        held[r["study_uid"]] = held.get(r["study_uid"], 0) + 1
    out, seen = [], set()
    for r in rows:   # newest snapshot first
        if not every_snapshot and r["study_uid"] in seen:
            continue
        seen.add(r["study_uid"])
        out.append(StudyMatch(r["study_uid"], r["study_date"], r["modalities"], r["series"], r["instances"],
                              r["bytes"], r["snapshot_id"], r["short_id"], r["job"], r["time"],
                              held[r["study_uid"]], names.get(r["study_uid"])))
    return sorted(out, key=lambda m: (m.study_date or "", m.study_uid, m.snapshot_time), reverse=True)


def _names_matching(config: Config, rows: list[dict[str, Any]], matcher: re.Pattern[str], ids: IdentifierKey,
                    copy: str, public_key: Path | None, result: FindResult) -> dict[str, str]:
    """study uid -> patient name, for the candidate studies whose name matches. Reads the fewest signed
    manifests: newest snapshot first, each only while some candidate study is still unresolved."""
    trusted = trusted_key(config, public_key)
    pending = {r["study_uid"] for r in rows}
    by_snapshot: dict[str, set[str]] = {}
    for r in rows:
        by_snapshot.setdefault(r["snapshot_id"], set()).add(r["study_uid"])
    matched: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="find-", dir=scratch_root(config)) as scratch:
        restic = restic_for_copy(config, copy, Path(scratch))
        for snapshot_id in dict.fromkeys(r["snapshot_id"] for r in rows):
            wanted = by_snapshot[snapshot_id] & pending
            if not wanted:
                continue
            manifest = read_snapshot_manifest(restic, restic.snapshot(snapshot_id), trusted).manifest
            result.manifests_read += 1
            for e in manifest.entries:
                if e.study not in wanted or e.study not in pending or not e.dicom:
                    continue
                pending.discard(e.study)
                token = e.dicom.get("name")
                name = ids.open(token) if token else None
                if token and name is None:
                    result.names_unreadable += 1
                if name is not None and matcher.fullmatch(name):
                    matched[e.study] = name
            if not pending:
                break
    return matched


# restoring what was found -----------------------------------------------------------------------------------


def snapshot_holding_all(result: FindResult, on: set[str] | None = None, copy: str = "staging") -> str:
    """The newest snapshot (among those matched, and `on` the copy when given) that holds every found study."""
    studies = {m.study_uid for m in result.matches}
    holding: dict[str, set[str]] = {}
    times: dict[str, str] = {}
    for r in result.rows:
        if on is None or r["snapshot_id"] in on:
            holding.setdefault(r["snapshot_id"], set()).add(r["study_uid"])
            times[r["snapshot_id"]] = r["time"]
    full = [sid for sid, held in holding.items() if held >= studies]
    if not full:
        where = "" if on is None else f" on {copy}"
        raise UsageError(f"no single snapshot{where} holds all {len(studies)} studies found",
                         hint="narrow the query, name the snapshot, or replicate first" if on is not None
                         else "narrow the query, or name the snapshot of each with --snapshot")
    return max(full, key=lambda sid: times[sid])


@dataclass
class RestorePlan:
    """What `restore ... --dry-run` says: what, from where, how much, and how long the last drills suggest."""

    snapshot_id: str
    job: str
    copy: str
    studies: list[str]
    files: int | None
    bytes: int | None
    expected_seconds: float | None = None
    basis: str = ""        # how expected_seconds was measured, or why there is none

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expected_seconds"] = None if self.expected_seconds is None else round(self.expected_seconds, 1)
        return data


def plan_restore(catalog: Catalog, snapshot_id: str, copy: str, studies: list[str] | None = None,
                 includes: list[str] | None = None) -> RestorePlan:
    """The restore that would run, sized from the catalog, timed from the last drills of the same copy."""
    from backupctl.catalog import verify as verify_rows

    snap = find_rows.snapshots_by_prefix(catalog, snapshot_id)
    job = snap[0]["job"] if snap else "?"
    files: int | None
    size: int | None
    if studies:
        indexed = {r["study_uid"]: r for r in verify_rows.studies_of(catalog, snapshot_id)}
        absent = [s for s in studies if s not in indexed]
        if absent:
            raise UsageError(f"study {absent[0]} is not in snapshot {snapshot_id[:8]}",
                             hint="find which snapshots hold it with `backupctl find --study UID`")
        files = sum(indexed[s]["instances"] for s in studies)
        size = sum(indexed[s]["bytes"] for s in studies)
    else:
        manifest = verify_rows.manifest_of(catalog, snapshot_id)
        files = manifest["files"] if manifest else (snap[0]["files"] if snap else None)
        size = manifest["bytes"] if manifest else (snap[0]["size"] if snap else None)
    plan = RestorePlan(snapshot_id, job, copy, sorted(studies or []), files, size)
    if includes:
        plan.basis = "--include restores part of the snapshot: sizes are the whole snapshot's, an upper bound"
    history = find_rows.drill_restore_history(catalog, copy)
    if not history:
        plan.basis = (plan.basis + "; " if plan.basis else "") + f"no drill has restored from {copy} yet: no estimate"
        return plan
    # the drills' own figures: restore and verify scale with bytes; what even the smallest restore pays before
    # its first study is verified (fetch, select, restic's start) is paid once
    rate = sum(h["bytes"] for h in history) / sum(h["seconds"] for h in history)
    firsts = [h["first_study_seconds"] for h in history if h.get("first_study_seconds")]
    once = (sum(firsts) / len(firsts)) if firsts else sum(h["once_seconds"] for h in history) / len(history)
    if size is not None:
        plan.expected_seconds = once + size / rate
    basis = (f"{rate / 1e6:.1f} MB/s restored and verified by the last {len(history)} drill(s) from {copy}, "
             f"plus {once:.1f} s those drills took to verify their first study (fetch, select, restic's start)")
    plan.basis = (plan.basis + "; " if plan.basis else "") + basis
    return plan
