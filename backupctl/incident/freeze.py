"""`incident freeze|thaw`: containment. Legal holds on the S3 copy, pruning and expiry paused.

Freeze puts an S3 Object Lock **legal hold** on every object version the catalog records as live in each S3
target of the job(s): a superset of what the last clean snapshot needs (restic does not say cheaply which
packs one snapshot uses, and the suspect snapshots' objects are evidence too). A legal hold has no expiry:
the versions stay, whatever their retention date, until `thaw` lifts the hold. While frozen, `forget` and
`s3 expire` refuse to run. The state is `<state>/incident/frozen.json`; each freeze and thaw is a run in the
catalog (kind `incident:freeze` / `incident:thaw`) with its reason, and in the audit trail (the command's
record carries the reason and the number of holds).

Setting and lifting holds needs s3:PutObjectLegalHold: the target's `hold_credentials` when set, else its
writer credential. Give it to an identity the backup host's writer does not hold, and a compromised backup
host cannot lift a hold, provided the bucket policy denies the writer s3:PutObjectLegalHold explicitly: on
Ceph RGW the writer owns the objects it uploaded and may lift their holds without any grant (docs/incident.md;
the embedded moto server has no IAM, so there any key can lift it).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backupctl import audit
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import s3 as s3_rows
from backupctl.catalog.db import utcnow
from backupctl.config import Config
from backupctl.errors import BackupctlError, IncidentOpen, UsageError
from backupctl.fsutil import atomic_write_text
from backupctl.incident.state import clean_snapshots, incident_dir, open_suspects
from backupctl.s3.client import connect
from backupctl.targets import make_target

log = logging.getLogger("backupctl.incident")
FROZEN = "frozen.json"


def frozen_state(config: Config) -> dict[str, Any] | None:
    try:
        return json.loads((incident_dir(config) / FROZEN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def refuse_while_frozen(config: Config, what: str) -> None:
    state = frozen_state(config)
    if state is not None:
        raise IncidentOpen(f"{what} is paused: the incident is frozen since {state['since']} ({state['reason']})",
                           hint="`backupctl incident thaw --reason ...` once it is over")


def _s3_targets(config: Config, jobs: list[str]) -> list[str]:
    names = {t for j in jobs for t in config.job(j).targets}
    return sorted(n for n in names if config.target(n).type == "s3")


def _set_hold(bucket: Any, key: str, version_id: str, status: str) -> str | None:
    try:
        with bucket.call(f"PutObjectLegalHold {key}"):
            bucket.client.put_object_legal_hold(Bucket=bucket.name, Key=bucket.key(key), VersionId=version_id,
                                                LegalHold={"Status": status})
    except BackupctlError as exc:
        return f"{key}@{version_id}: {exc.one_line()}"
    return None


def _hold_bucket(config: Config, target_name: str) -> Any:
    """A client with the target's hold credential, else its writer credential (a missing one: SecretError)."""
    cfg = config.target(target_name)
    return connect(target_name, cfg, config.resolve, credentials=cfg.hold_credentials)  # type: ignore[union-attr,arg-type]


def _holds(config: Config, target_name: str, objects: list[tuple[str, str]], status: str) -> list[str]:
    """Set the hold `status` (ON/OFF) on (key, version) pairs; the failures, one line each."""
    bucket = _hold_bucket(config, target_name)
    workers = config.target(target_name).concurrency  # type: ignore[union-attr]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for r in pool.map(lambda kv: _set_hold(bucket, kv[0], kv[1], status), objects) if r]


def freeze(config: Config, reason: str, job: str | None = None) -> dict[str, Any]:
    if not reason.strip():
        raise UsageError("say why (--reason): the freeze is recorded with it")
    if (state := frozen_state(config)) is not None:
        raise UsageError(f"already frozen since {state['since']} ({state['reason']})")
    jobs = [config.job(job).name] if job else sorted(config.jobs)
    for name in _s3_targets(config, jobs):
        _hold_bucket(config, name)   # every credential readable before anything is recorded
    held: list[dict[str, str]] = []
    failures: list[str] = []
    with open_catalog(config.catalog_path) as catalog:
        run_id = run_rows.start_run(catalog, job or "-", kind="incident:freeze")
        last_clean = {j: (rows[-1]["id"] if (rows := clean_snapshots(catalog, j)) else None) for j in jobs}
        suspects = [r["id"] for j in jobs for r in open_suspects(catalog, j)]
        plan = {}
        for name in _s3_targets(config, jobs):
            location = make_target(config, name, catalog).location
            plan[name] = (location, sorted((k, o.version_id) for k, o in
                                           s3_rows.live_objects(catalog, name, location).items()))
    for name, (location, objects) in plan.items():
        failures += [f"{name}: {f}" for f in _holds(config, name, objects, "ON")]
        held += [{"target": name, "location": location, "key": k, "version_id": v} for k, v in objects]
    state = {"since": utcnow(), "reason": reason, "jobs": jobs, "last_clean": last_clean, "suspects": suspects,
             "run_id": run_id, "held": held, "failures": failures}
    # written even when some holds failed: pruning and expiry pause anyway, and thaw knows what to lift
    atomic_write_text(incident_dir(config) / FROZEN, json.dumps(state, indent=1) + "\n", mode=0o600)
    with open_catalog(config.catalog_path) as catalog:
        run_rows.finish_run(catalog, run_id, "partial" if failures else "success",
                            run_rows.RunFigures(files=len(held) - len(failures)),
                            error=(f"{len(failures)} holds not set: {failures[0]}" if failures else None)
                            or f"frozen: {reason}")
    log.info("incident frozen (%s): %d object versions on legal hold, pruning and expiry paused", reason,
                len(held) - len(failures))
    audit.note(reason=reason, held=len(held) - len(failures), targets=sorted(plan))
    return {"ok": not failures, "frozen": True, "since": state["since"], "reason": reason, "jobs": jobs,
            "last_clean": last_clean, "suspects": suspects, "held": len(held) - len(failures), "failures": failures,
            "targets": sorted(plan)}


def thaw(config: Config, reason: str) -> dict[str, Any]:
    if not reason.strip():
        raise UsageError("say why (--reason): the thaw is recorded with it")
    state = frozen_state(config)
    if state is None:
        raise UsageError("no incident is frozen")
    with open_catalog(config.catalog_path) as catalog:
        run_id = run_rows.start_run(catalog, "-", kind="incident:thaw")
    by_target: dict[str, list[tuple[str, str]]] = {}
    for h in state["held"]:
        by_target.setdefault(h["target"], []).append((h["key"], h["version_id"]))
    failures = [f"{name}: {f}" for name, objects in by_target.items() for f in _holds(config, name, objects, "OFF")]
    with open_catalog(config.catalog_path) as catalog:
        run_rows.finish_run(catalog, run_id, "partial" if failures else "success",
                            run_rows.RunFigures(files=len(state["held"]) - len(failures)),
                            error=(f"{len(failures)} holds not lifted: {failures[0]}" if failures else None)
                            or f"thawed: {reason}")
    if failures:
        raise IncidentOpen(f"{len(failures)} legal holds could not be lifted (first: {failures[0]}); "
                           "the incident stays frozen", hint="check the credential's s3:PutObjectLegalHold")
    done = incident_dir(config) / FROZEN
    kept = incident_dir(config) / f"thawed-{utcnow().replace(':', '')}.json"
    atomic_write_text(kept, json.dumps({**state, "thawed": utcnow(), "thaw_reason": reason}, indent=1) + "\n",
                      mode=0o600)
    done.unlink()
    log.info("incident thawed (%s): %d legal holds lifted", reason, len(state["held"]))
    audit.note(reason=reason, lifted=len(state["held"]), frozen_since=state["since"])
    return {"ok": True, "frozen": False, "reason": reason, "lifted": len(state["held"]), "since": state["since"]}
