"""The incident part of `backupctl demo`: an attack on the demo archive flagged at backup time, the S3 copy
frozen, the last clean snapshot found, recovered from the immutable copy, its signed report verified."""

from __future__ import annotations

import filecmp
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


def _differences(left: Path, right: Path) -> list[str]:
    """Files of `left` missing or different under `right`, and any extra file there."""
    out = [str(a.relative_to(left)) for a in left.rglob("*") if a.is_file()
           and not ((b := right / a.relative_to(left)).is_file() and filecmp.cmp(a, b, shallow=False))]
    extra = sum(1 for p in right.rglob("*") if p.is_file()) - sum(1 for p in left.rglob("*") if p.is_file())
    return out + ([f"{extra} files more than the archive"] if extra else [])


def step_incident(ctx: Any) -> dict[str, Any]:
    """A `backupctl.demo` step, after the S3 step (the `vault` target) and the backups."""
    from backupctl.dev.ransomware import attack

    config, archive, job = ctx.config, ctx.archive, ctx.job
    assert config is not None and archive is not None
    started = time.monotonic()
    job_file = config.resolve(config.settings.paths.jobs) / f"{job}.toml"
    text = job_file.read_text()
    if "vault" not in text:   # the S3 step added the target after the job was written
        job_file.write_text(re.sub(r"(?m)^targets = .*$", 'targets = ["offline", "vault"]', text))
        from backupctl.config import load_config

        ctx.config = config = load_config(config.path)
    before = run_backup(config, job, ctx.progress)
    pristine = ctx.workdir / "incident-before-attack"
    shutil.copytree(archive, pristine)
    done = attack(archive)
    hit = run_backup(config, job, ctx.progress)
    fired = {s["name"]: s["count"] for s in (hit.suspect or {}).get("signals", []) if s["fired"]}
    frozen = freeze(config, "demo: simulated ransomware", job)
    found = last_clean(config, job, progress=ctx.progress)
    to = ctx.workdir / "incident-recovered"
    rec = recover_incident(config, job, to, rto_minutes=60, progress=ctx.progress)
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
