"""The demo's `drill` step: a whole-snapshot drill from the immutable S3 copy (or, without one, from the
offline disk), then the signed HTML report and its PDF (when chromium is installed), each with a detached
signature and the public key beside them, checked back with the public key."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from backupctl.actions.drill import run_drill
from backupctl.config import load_config
from backupctl.drills.delivery import make_report
from backupctl.drills.publish import verify_file
from backupctl.verify.snapshot_manifest import signing_key

if TYPE_CHECKING:
    from backupctl.demo import DemoContext

DEMO_DRILL = "demo-drill"
DEMO_DRILL_TOML = """\
# written by `backupctl demo`: restore the newest snapshot from {copy}, check every file, time it
job = "{job}"
copy_from = "{copy}"
snapshot = "latest"
scope = "all"
depth = "dicom"
rto_minutes = 15
rpo_hours = 24
schedule = "30 4 * * 0"
decode_files = 4
"""


def demo_copy(ctx: DemoContext) -> str:
    """The copy that matters after ransomware: S3 Object Lock when the demo has one, else the offline disk."""
    assert ctx.config is not None
    s3 = sorted(name for name, t in ctx.config.settings.targets.items() if t.type == "s3")
    return s3[0] if s3 else "offline"


def step_drill(ctx: DemoContext) -> dict[str, Any]:
    assert ctx.config is not None
    copy = demo_copy(ctx)
    folder = ctx.config.resolve(ctx.config.settings.paths.drills)
    (folder / f"{DEMO_DRILL}.toml").write_text(DEMO_DRILL_TOML.format(job=ctx.job, copy=copy))
    ctx.config = config = load_config(ctx.config.path)
    result = run_drill(config, DEMO_DRILL, ctx.progress, seed=7)
    key = signing_key(config)
    made = make_report(config, period=False, output=config.state_dir / "reports" / "drills.html")
    published, content = made.published, made.published.report.read_bytes()
    checked = verify_file(published.report, key.verify_key)
    pdf_checked = verify_file(published.pdf, key.verify_key) if published.pdf else None
    return {
        "ok": result.passed and checked.detached and checked.embedded, "from": copy, "run_id": result.run_id,
        "snapshot": (result.snapshot_id or "")[:8], "files": result.files, "bytes": result.bytes,
        "phases": {p.name: round(p.seconds, 3) for p in result.phases if p.status != "skipped"},
        "seconds": round(result.recovery_seconds or 0.0, 3),
        "first_study_seconds": round(result.first_study_seconds or 0.0, 3),
        "rto_minutes": result.rto_seconds / 60, "rto_met": result.rto_met,
        "checks": {c.name: c.status for c in result.checks},
        "failures": result.first_failures(), "scratch_removed": result.scratch_removed,
        "report": str(published.report), "signature": str(published.signature),
        "pdf": str(published.pdf) if published.pdf else None,
        "pdf_signature": str(published.pdf_signature) if published.pdf_signature else None,
        "public_key": str(published.public_key), "key_fingerprint_sha256": published.fingerprint,
        "report_sha256": hashlib.sha256(content).hexdigest(), "report_signed_by": checked.key_id,
        "report_verified": checked.detached and checked.embedded, "verdict": made.data["verdict"],
        "pdf_verified": pdf_checked.detached if pdf_checked else None,
    }
