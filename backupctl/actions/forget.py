"""`forget JOB`: the job's retention policy applied to the staging repository (restic forget --prune).

While a suspect snapshot of the job is open (see docs/incident.md), the suspect snapshots (evidence) and the
`[suspect] keep_clean` newest snapshots before the first of them are kept whatever the policy says: restic's
plan is computed, those are taken out of it, and exactly the rest is forgotten. While an incident is frozen
(`incident freeze`), nothing is forgotten at all.

Only the staging repository is pruned. Offline media keep every snapshot they received, and S3 objects are
removed only by `s3 expire` once their Object Lock has expired: a retention run never reaches a replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backupctl.catalog import open_catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.errors import UsageError
from backupctl.incident.freeze import refuse_while_frozen
from backupctl.incident.state import incident_protected
from backupctl.locking import repository_lock
from backupctl.repository import staging_restic
from backupctl.restic import job_tag


@dataclass
class ForgetOutcome:
    job: str
    dry_run: bool
    kept: list[dict] = field(default_factory=list)      # {"id", "time", "reasons": [...]}
    removed: list[dict] = field(default_factory=list)   # {"id", "time"}
    protected: list[str] = field(default_factory=list)  # ids the policy would remove, kept for an incident


def apply_retention(config: Config, job_name: str, dry_run: bool = False) -> ForgetOutcome:
    job = config.job(job_name)
    keep = {k: v for k, v in job.retention.model_dump().items() if v is not None}
    if not keep:
        raise UsageError(f"job {job.name} has no [retention] policy, so nothing is forgotten",
                         hint="add keep_daily/keep_weekly/... to its job file")
    refuse_while_frozen(config, "pruning")
    restic = staging_restic(config)
    with open_catalog(config.catalog_path) as catalog:
        protect = incident_protected(catalog, job.name, config.settings.suspect.keep_clean)
    outcome = ForgetOutcome(job.name, dry_run)
    with repository_lock(config.state_dir, restic.repository, config.settings.staging.lock_wait_seconds):
        groups = restic.forget(tags=[job_tag(job.name)], keep=keep, dry_run=dry_run or bool(protect))
        for group in groups:
            reasons = {r["snapshot"]["time"]: r.get("matches", []) for r in group.get("reasons") or []}
            outcome.kept += [{"id": s["id"], "time": s["time"], "reasons": reasons.get(s["time"], [])}
                             for s in group.get("keep") or []]
            for s in group.get("remove") or []:
                if s["id"] in protect:
                    outcome.protected.append(s["id"])
                    outcome.kept.append({"id": s["id"], "time": s["time"], "reasons": [protect[s["id"]]]})
                else:
                    outcome.removed.append({"id": s["id"], "time": s["time"]})
        if protect and not dry_run:
            restic.forget_snapshots([s["id"] for s in outcome.removed])
    if not dry_run and outcome.removed:
        with open_catalog(config.catalog_path) as catalog:
            snapshot_rows.mark_forgotten(catalog, [s["id"] for s in outcome.removed])
    return outcome
