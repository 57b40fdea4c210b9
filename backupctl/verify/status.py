"""`backupctl verify --status`: how long the least recently verified thing has gone unverified.

For every pack of the staging repository, every study of each job's newest snapshot and every replica
target, the age since it was last read back and found sound (or, never read, since it exists) is compared
with `[verify] max_unverified_days`. Coverage is a fact in the catalog, not a hope about random samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backupctl.catalog import Catalog
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.repofiles import list_repository

DAY = 86400.0


@dataclass
class Coverage:
    what: str                  # packs | studies | replicas
    total: int
    never: int                 # never read back
    failed: int                # last read back found a problem
    oldest_days: float | None  # the largest age since a sound read (or since creation, never read)
    oldest: str | None         # which item that is

    def within(self, bound_days: float) -> bool:
        return self.failed == 0 and (self.oldest_days is None or self.oldest_days <= bound_days)

    def as_dict(self, bound_days: float) -> dict[str, Any]:
        return {"what": self.what, "total": self.total, "never_verified": self.never, "last_failed": self.failed,
                "oldest_unverified_days": None if self.oldest_days is None else round(self.oldest_days, 2),
                "oldest": self.oldest, "bound_days": bound_days, "ok": self.within(bound_days)}


def _age_days(iso: str, now: float) -> float:
    return max(0.0, (now - datetime.fromisoformat(iso).timestamp()) / DAY)


def _oldest(ages: dict[str, float]) -> tuple[float | None, str | None]:
    if not ages:
        return None, None
    item = max(ages, key=lambda k: ages[k])
    return ages[item], item


def pack_coverage(config: Config, catalog: Catalog, now: float) -> Coverage:
    repo = config.staging_repository
    packs = [f for f in list_repository(repo) if f.kind == "data"] if repo.exists() else []
    reads = verify_rows.pack_reads(catalog, str(repo))
    ages: dict[str, float] = {}
    never = failed = 0
    for f in packs:
        if f.name in reads:
            when, ok = reads[f.name]
            failed += not ok
            ages[f.name] = _age_days(when, now)
        else:
            never += 1
            ages[f.name] = max(0.0, (now - os.stat(repo / f.rel).st_mtime) / DAY)
    return Coverage("packs", len(packs), never, failed, *_oldest(ages))


def study_coverage(catalog: Catalog, now: float) -> Coverage:
    current = verify_rows.latest_studies(catalog)
    reads = verify_rows.study_reads(catalog)
    first_seen = {r["study_uid"]: r["first"] for r in catalog.query(
        "SELECT st.study_uid, MIN(s.time) AS first FROM snapshot_studies st JOIN snapshots s ON s.id = st.snapshot_id "
        "GROUP BY st.study_uid")}
    ages: dict[str, float] = {}
    never = failed = 0
    for study in current:
        if study in reads:
            when, ok = reads[study]
            failed += not ok
            ages[study] = _age_days(when, now)
        else:
            never += 1
            ages[study] = _age_days(first_seen[study], now) if study in first_seen else 0.0
    return Coverage("studies", len(current), never, failed, *_oldest(ages))


def replica_coverage(config: Config, catalog: Catalog, now: float) -> Coverage:
    audits = verify_rows.replica_audits(catalog)
    by_target: dict[str, list[dict[str, Any]]] = {}
    for a in audits:
        by_target.setdefault(a["target"], []).append(a)
    ages: dict[str, float] = {}
    never = failed = 0
    for name in config.settings.targets:
        rows = by_target.get(name, [])
        if not rows:
            never += 1
            continue
        newest = max(rows, key=lambda r: r["last_audit"])
        failed += not newest["ok"]
        ages[name] = _age_days(newest["last_audit"], now)
    oldest_days, oldest = _oldest(ages)
    if never:
        oldest_days, oldest = float("inf"), next(n for n in config.settings.targets if n not in by_target)
    return Coverage("replicas", len(config.settings.targets), never, failed, oldest_days, oldest)


def coverage_status(config: Config, catalog: Catalog) -> dict[str, Any]:
    now = datetime.now(UTC).timestamp()
    bound = config.settings.verify.max_unverified_days
    parts = [pack_coverage(config, catalog, now), study_coverage(catalog, now),
             replica_coverage(config, catalog, now)]
    last = {level: verify_rows.last_verification(catalog, level) for level in ("repo", "replicas", "restore")}
    return {
        "ok": all(p.within(bound) for p in parts),
        "bound_days": bound,
        "coverage": [_finite(p.as_dict(bound)) for p in parts],
        "last": {k: ({"run_id": v["run_id"], "when": v["started"], "ok": bool(v["ok"]), "subject": v["subject"],
                      "failures": v["failures"]} if v else None) for k, v in last.items()},
    }


def study_coverage_now(config: Config, catalog: Catalog) -> dict[str, Any]:
    """The studies' coverage as `drill report`, `status` and the metrics show it: every study of each job's
    newest snapshot, the age of its last sound verification (a verify restore or a drill: hash and DICOM
    parse), the oldest of them, against `[verify] max_unverified_days`."""
    bound = config.settings.verify.max_unverified_days
    return study_coverage(catalog, datetime.now(UTC).timestamp()).as_dict(bound)


def coverage_text(coverage: dict[str, Any]) -> str:
    """The studies' coverage in one sentence."""
    bound = coverage["bound_days"]
    oldest = coverage.get("oldest_unverified_days")
    text = (f"{coverage['total']} studies in the newest snapshots; the least recently verified went "
            f"{oldest:.1f} days unverified (bound {bound:g} days)" if oldest is not None
            else f"{coverage['total']} studies in the newest snapshots")
    if coverage.get("never_verified"):
        text += f"; {coverage['never_verified']} never verified yet"
    if coverage.get("last_failed"):
        text += f"; {coverage['last_failed']} failed their last verification"
    return text


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    if d["oldest_unverified_days"] == float("inf"):
        d["oldest_unverified_days"] = None   # JSON has no infinity: 'never' is in never_verified
    return d
