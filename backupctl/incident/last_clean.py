"""`incident last-clean`: the newest snapshot before the first open suspect one that a restore-level
verification passed, with its evidence (when it was taken, what verified it, which copies hold it).

A candidate never verified at restore level is verified now (the whole snapshot, or the study asked for);
one that fails is passed over for the next older one, and the answer says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from backupctl.catalog import open_catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import NoCleanSnapshot, UsageError
from backupctl.incident.state import clean_snapshots, open_suspects
from backupctl.progress import NullProgress, Progress


@dataclass
class LastClean:
    job: str
    snapshot: str
    short_id: str
    time: str
    study: str | None
    verified_by: dict[str, Any]            # run_id, when, checked files, ok, ran_now
    copies: list[str]                      # staging and target:location names holding it
    first_suspect: dict[str, Any] | None   # the snapshot the search started before
    passed_over: list[dict[str, str]] = field(default_factory=list)   # newer candidates that failed

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, **asdict(self)}


def _job_name(config: Config, job: str | None) -> str:
    if job is not None:
        return config.job(job).name
    if len(config.jobs) == 1:
        return next(iter(config.jobs))
    raise UsageError("several jobs are configured: name one with --job")


def _passed(catalog: Any, snapshot_id: str) -> dict[str, Any] | None:
    for v in verify_rows.verifications_of(catalog, "restore", snapshot_id):
        if v["ok"]:
            summary = json.loads(v["summary"] or "{}")
            return {"run_id": v["run_id"], "when": v["finished"] or v["started"], "level": "restore",
                    "checked_files": v["checked"], "scope": summary.get("scope"),
                    "copy": summary.get("copy"), "ran_now": False}
    return None


def default_copy(config: Config, job: str) -> str:
    """Staging while it exists; else (a host rebuilt from the recovery kit) the job's first S3 target, else its
    first target."""
    if (config.staging_repository / "config").is_file():
        return "staging"
    targets = config.job(job).targets
    s3 = [t for t in targets if config.target(t).type == "s3"]
    if s3 or targets:
        return (s3 or targets)[0]
    return "staging"


def _verify_now(config: Config, job: str, snapshot_id: str, study: str | None, copy: str,
                progress: Progress) -> tuple[dict[str, Any] | None, str]:
    from backupctl.verify.run import VerifyOptions, run_verify

    report = run_verify(config, ["restore"], VerifyOptions(snapshot=snapshot_id, job=job, sample=0, copy=copy,
                                                          studies=[study] if study else None), progress)
    (result,) = report.results
    if not result.ok:
        return None, report.first_failures()
    return {"run_id": result.run_id, "when": None, "level": "restore", "checked_files": result.checked,
            "scope": result.figures.get("scope"), "copy": result.figures.get("copy"), "ran_now": True}, ""


def last_clean(config: Config, job: str | None = None, study: str | None = None,
               progress: Progress | None = None, copy: str | None = None) -> LastClean:
    """`copy`: where a verification that must run now reads the snapshot (default: see `default_copy`)."""
    progress = progress or NullProgress()
    name = _job_name(config, job)
    copy = copy or default_copy(config, name)
    with open_catalog(config.catalog_path) as catalog:
        candidates = clean_snapshots(catalog, name)
        suspects = open_suspects(catalog, name)
        if study is not None:
            holding = {r["id"] for r in verify_rows.snapshots_with_study(catalog, study)}
            candidates = [c for c in candidates if c["id"] in holding]
    first = min(suspects, key=lambda r: r["time"]) if suspects else None
    passed_over: list[dict[str, str]] = []
    for cand in reversed(candidates):
        with open_catalog(config.catalog_path) as catalog:
            evidence = _passed(catalog, cand["id"])
        if evidence is None:
            evidence, why = _verify_now(config, name, cand["id"], study, copy, progress)
            if evidence is None:
                passed_over.append({"snapshot": cand["id"], "why": why})
                continue
        with open_catalog(config.catalog_path) as catalog:
            copies = ["staging"] if config.staging_repository.joinpath("snapshots", cand["id"]).is_file() else []
            copies += [f"{r['target']}:{r['location']}" for r in snapshot_rows.replicas_of(catalog, cand["id"])]
        return LastClean(name, cand["id"], cand["short_id"], cand["time"], study, evidence, copies,
                         {"snapshot": first["id"], "time": first["time"]} if first else None, passed_over)
    what = f" holding study {study}" if study else ""
    raise NoCleanSnapshot(f"job {name}: no snapshot{what} before the first suspect one passes verification"
                          + (f" ({len(passed_over)} failed)" if passed_over else ""),
                          hint="look at older copies: offline media, `backupctl s3 recover --as-of`")
