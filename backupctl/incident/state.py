"""Where suspect snapshots are remembered, and who is told.

The mark itself is the `suspect` tag, in the repository (restic tag, so every copy says so) and in the
catalog's tags. The signals of each suspect snapshot are kept as JSON under `<state>/incident/` (0600: their
example paths may name patients where an archive's layout does). An admin who has looked at a suspect
snapshot and found it legitimate clears it with `incident clear`, which adds the `suspect-cleared` tag in the
catalog; the restic tag stays, as evidence that it was once called suspect.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from backupctl import audit
from backupctl.catalog import Catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog.db import utcnow
from backupctl.config import Config, Job
from backupctl.errors import BackupctlError, UsageError
from backupctl.fsutil import atomic_write_text
from backupctl.incident.suspect import SUSPECT_TAG, SuspectReport

log = logging.getLogger("backupctl.incident")
CLEARED_TAG = "suspect-cleared"


def incident_dir(config: Config) -> Path:
    return config.state_dir / "incident"


def report_path(config: Config, snapshot_id: str) -> Path:
    return incident_dir(config) / f"suspect-{snapshot_id}.json"


def save_report(config: Config, snapshot_id: str, job: str, report: SuspectReport) -> Path:
    path = report_path(config, snapshot_id)
    data = {"snapshot": snapshot_id, "job": job, "recorded": utcnow(), **report.as_dict()}
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)
    return path


def load_report(config: Config, snapshot_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(report_path(config, snapshot_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_open_suspect(tags: list[str]) -> bool:
    return SUSPECT_TAG in tags and CLEARED_TAG not in tags


def open_suspects(catalog: Catalog, job: str | None = None) -> list[dict[str, Any]]:
    """Snapshots called suspect and not cleared (forgotten ones included: the catalog keeps their record)."""
    return [r for r in snapshot_rows.list_snapshots(catalog, job, include_forgotten=True, replicas=False)
            if is_open_suspect(r["tags"])]


def clean_snapshots(catalog: Catalog, job: str) -> list[dict[str, Any]]:
    """The job's snapshots older than its first open suspect one, oldest first (all of them when none is)."""
    rows = snapshot_rows.list_snapshots(catalog, job, replicas=False)
    first = next((i for i, r in enumerate(rows) if is_open_suspect(r["tags"])), None)
    return rows if first is None else rows[:first]


def clear_suspect(catalog: Catalog, snapshot_prefix: str, reason: str) -> dict[str, Any]:
    if not reason.strip():
        raise UsageError("say why the snapshot is not suspect (--reason)")
    row = snapshot_rows.find_snapshot(catalog, snapshot_prefix)
    if row is None:
        raise UsageError(f"no single snapshot matches {snapshot_prefix!r}", hint="see `backupctl snapshots`")
    tags = json.loads(row["tags"])
    if not is_open_suspect(tags):
        raise UsageError(f"snapshot {row['short_id']} is not an open suspect snapshot")
    snapshot_rows.set_tags(catalog, row["id"], [*tags, CLEARED_TAG])
    audit.note(snapshot=row["id"], reason=reason)
    log.warning("snapshot %s of job %s cleared of suspicion: %s", row["short_id"], row["job"], reason)
    return {"snapshot": row["id"], "job": row["job"], "reason": reason, "cleared": utcnow()}


def alert_suspect(config: Config, job: Job, short_id: str | None, run_id: int, report: SuspectReport) -> None:
    """Tell people through the job's notification channels; a delivery problem is logged, never raised."""
    from backupctl.notify import Notice, Notifier

    now = utcnow()
    notice = Notice("failure", "backup", job.name, f"suspect-{short_id}", "suspect", now, now,
                    error=f"snapshot {short_id} is SUSPECT (ransomware-like changes): {report.summary()}; "
                          "see docs/incident.md",
                    run_ids=[run_id],
                    figures={"snapshot": short_id, "signals": {s.name: s.count for s in report.fired()}})
    try:
        Notifier(config, config.settings.notify.merged(job.notify)).send(notice)
    except BackupctlError as exc:
        log.error("job %s: the suspect-snapshot alert was not sent: %s", job.name, exc.one_line())


def incident_protected(catalog: Catalog, job: str, keep_clean: int) -> dict[str, str]:
    """id -> why, of the job's snapshots retention must keep while a suspect one is open: every open suspect
    snapshot (evidence) and the `keep_clean` newest before the first of them (the way back)."""
    rows = snapshot_rows.list_snapshots(catalog, job, replicas=False)
    suspects = [r for r in rows if is_open_suspect(r["tags"])]
    if not suspects:
        return {}
    protected = {r["id"]: "suspect snapshot (incident evidence)" for r in suspects}
    for r in clean_snapshots(catalog, job)[-keep_clean:]:
        protected[r["id"]] = "clean snapshot before a suspect one (incident)"
    return protected


def suspect_status(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """Open suspect snapshots with the one line of what fired (no paths: status output travels)."""
    rows = []
    for r in open_suspects(catalog):
        report = load_report(config, r["id"]) or {}
        rows.append({"job": r["job"], "snapshot": r["id"], "short_id": r["short_id"], "time": r["time"],
                     "summary": report.get("summary", "signals not recorded")})
    return rows
