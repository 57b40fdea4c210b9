"""The incident part of `backupctl demo`: an attack on the demo archive flagged at backup time, the S3 copy
frozen, the last clean snapshot found, recovered from the immutable copy, its signed report verified."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from backupctl.actions.backup import run_backup
from backupctl.drills.report import verify_report
from backupctl.incident.freeze import freeze, thaw
from backupctl.incident.last_clean import last_clean
from backupctl.incident.recover import recover_incident
from backupctl.verify.snapshot_manifest import trusted_key


def step_incident(ctx: Any) -> dict[str, Any]:
    """A `backupctl.demo` step, after the S3 step (the `vault` target) and the backups."""
    from backupctl.demo import DEMO_JOB, _differences
    from backupctl.dev.ransomware import attack

    config, archive = ctx.config, ctx.archive
    assert config is not None and archive is not None
    started = time.monotonic()
    job_file = config.resolve(config.settings.paths.jobs) / f"{DEMO_JOB}.toml"
    text = job_file.read_text()
    if "vault" not in text:   # the S3 step added the target after the job was written
        job_file.write_text(re.sub(r"(?m)^targets = .*$", 'targets = ["offline", "vault"]', text))
        from backupctl.config import load_config

        ctx.config = config = load_config(config.path)
    before = run_backup(config, DEMO_JOB, ctx.progress)
    pristine = ctx.workdir / "incident-before-attack"
    shutil.copytree(archive, pristine)
    done = attack(archive)
    hit = run_backup(config, DEMO_JOB, ctx.progress)
    fired = {s["name"]: s["count"] for s in (hit.suspect or {}).get("signals", []) if s["fired"]}
    frozen = freeze(config, "demo: simulated ransomware", DEMO_JOB)
    found = last_clean(config, DEMO_JOB, progress=ctx.progress)
    to = ctx.workdir / "incident-recovered"
    rec = recover_incident(config, DEMO_JOB, to, rto_minutes=60, progress=ctx.progress)
    checked = verify_report(Path(rec.reports["json"]).read_bytes(), trusted_key(config))
    thawed = thaw(config, "demo: recovered")
    differing = _differences(pristine, to / archive.relative_to("/")) if rec.ok else ["not recovered"]
    shutil.rmtree(archive)
    shutil.copytree(pristine, archive)    # leave the demo archive as it was
    ok = (hit.is_suspect and before.replicated_ok and hit.replicated_ok and frozen["ok"] and frozen["held"] > 0
          and found.snapshot == before.snapshot_id and rec.ok and rec.snapshot == before.snapshot_id
          and not differing and thawed["lifted"] == frozen["held"])
    return {
        "ok": ok,
        "attack": {"encrypted": len(done.encrypted), "renamed": len(done.renamed), "note": done.note is not None},
        "flagged": hit.is_suspect, "suspect_snapshot": hit.short_id, "signals": fired,
        "freeze": {"held": frozen["held"], "targets": frozen["targets"]},
        "last_clean": {"snapshot": found.short_id, "verified_now": found.verified_by["ran_now"],
                       "copies": found.copies},
        "recovered": {"snapshot": (rec.snapshot or "")[:8], "files": rec.files, "identical": not differing,
                      "seconds": round(rec.seconds, 3), "within_rto": rec.as_dict()["within_rto"],
                      "phases": {p.name: p.seconds for p in rec.phases}},
        "report_verified": checked.sha256 is not None, "report": rec.reports.get("md"),
        "thawed": thawed["lifted"],
        "seconds": round(time.monotonic() - started, 3),
    }
