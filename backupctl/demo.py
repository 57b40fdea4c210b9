"""The end-to-end demo and product smoke test: `backupctl demo [--json]`.

It builds a throw-away installation in a work folder (config, secrets, staging repository, a simulated
offline disk), synthesizes a small PACS archive and runs the product's capabilities on it, one step per
capability. Each step returns its measured figures and an `ok`; `demo --json` prints them under the step's
key with a top-level `ok` that holds only if every step held.
"""

from __future__ import annotations

import filecmp
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.backup import run_backup
from backupctl.actions.find_demo import step_dry_run, step_find
from backupctl.actions.init import initialize
from backupctl.actions.replicate import replicate_to
from backupctl.actions.restore import restore_snapshot
from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.config import Config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.drills.demo import step_drill
from backupctl.errors import BackupctlError
from backupctl.incident.demo import step_incident
from backupctl.pacs.demo import demo_pacs
from backupctl.progress import Progress
from backupctl.repofiles import list_repository, name_matches_content
from backupctl.s3.demo import step_s3
from backupctl.scheduler.demo import step_scheduler
from backupctl.targets.media import init_medium

DEMO_JOB = "pacs-demo"
DEMO_SPEC = ArchiveSpec(patients=4, studies_per_patient=2, series_per_study=2, instances_per_series=4,
                        rows=128, columns=128, seed=7)

DEMO_CONFIG = """\
# written by `backupctl demo`: a throw-away installation
[catalog]
path = "var/catalog.sqlite"

[staging]
repository = "var/staging-repo"
password_file = "secrets/restic-password"

[verify]
read_data_slices = 2            # a small repository: half of its packs are read back per `verify repo`

[targets.offline]
type = "media"
mount = "media-disk"            # a folder standing in for a mounted removable disk
labels = ["DEMO-A", "DEMO-B"]
rotation_days = 7
allow_unmounted = true          # the demo has no removable disk
{extra_targets}"""

DEMO_JOB_TOML = """\
name = "{job}"
sources = ["{archive}"]
targets = {targets}
schedule = "0 2 * * *"
tags = ["demo"]

[retention]
keep_daily = 7
keep_weekly = 4
"""


@dataclass
class DemoContext:
    workdir: Path
    progress: Progress
    config: Config | None = None
    archive: Path | None = None
    snapshot_id: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    extra_targets: dict[str, str] = field(default_factory=dict)   # name -> TOML table body, added by steps
    # services a step starts for the steps after it (the embedded S3 server): closed when the demo ends
    resources: ExitStack = field(default_factory=ExitStack)
    job: str = DEMO_JOB


def step_backup(ctx: DemoContext) -> dict[str, Any]:
    ctx.archive = ctx.workdir / "archive"
    started = time.monotonic()
    written = write_archive(ctx.archive, DEMO_SPEC)
    synth_seconds = time.monotonic() - started
    targets = ["offline", *ctx.extra_targets]
    extra = "".join(f"\n[targets.{name}]\n{body}\n" for name, body in ctx.extra_targets.items())
    ctx.config, _ = initialize(ctx.workdir, DEMO_CONFIG.format(extra_targets=extra))
    job_file = ctx.config.resolve(ctx.config.settings.paths.jobs) / f"{DEMO_JOB}.toml"
    job_file.write_text(DEMO_JOB_TOML.format(job=DEMO_JOB, archive=ctx.archive, targets=targets))
    ctx.config, _ = initialize(ctx.workdir)  # reload with the job
    first = run_backup(ctx.config, DEMO_JOB, ctx.progress, replicate=False)
    second = run_backup(ctx.config, DEMO_JOB, ctx.progress, replicate=False)
    ctx.snapshot_id = first.snapshot_id
    return {
        "ok": first.status == "success" and second.bytes_added < first.bytes_added / 10,
        "files": first.files, "bytes": first.bytes, "bytes_added": first.bytes_added,
        "seconds": round(first.seconds, 3), "snapshot": first.short_id,
        "synthesized": {"dicom_files": len(written), "seconds": round(synth_seconds, 3)},
        "second_run": {"snapshot": second.short_id, "bytes_added": second.bytes_added,
                       "files_new": second.files_new, "seconds": round(second.seconds, 3)},
    }


def step_media(ctx: DemoContext) -> dict[str, Any]:
    config = ctx.config
    assert config is not None
    cfg = config.target("offline")
    mount = config.resolve(cfg.mount)
    mount.mkdir(exist_ok=True)
    medium = init_medium(cfg.model_copy(update={"mount": mount}), "offline", "DEMO-A")
    with open_catalog(config.catalog_path) as catalog:
        media_rows.register_medium(catalog, "offline", medium.label, medium.media_id, medium.created)
        outcome = replicate_to(config, catalog, "offline", ctx.progress, job=DEMO_JOB)
        again = replicate_to(config, catalog, "offline", ctx.progress, job=DEMO_JOB)
    if not outcome.ok or outcome.report is None:
        return {"ok": False, "error": outcome.error}
    repo = mount / cfg.folder / "repository"
    copied = list_repository(repo)
    checked = sum(1 for f in copied if f.named_by_hash and name_matches_content(repo / f.rel, f.rel))
    hash_named = sum(1 for f in copied if f.named_by_hash)
    return {
        "ok": checked == hash_named and not (repo / "locks").exists() and again.report is not None
        and again.report.uploaded == 0,
        "label": medium.label, "files": outcome.report.uploaded, "bytes": outcome.report.uploaded_bytes,
        "seconds": round(outcome.report.seconds, 3), "checked_by_name": checked,
        "snapshots": len(outcome.snapshots), "second_sync_copied": again.report.uploaded if again.report else None,
    }


def step_restore(ctx: DemoContext) -> dict[str, Any]:
    config = ctx.config
    assert config is not None and ctx.snapshot_id and ctx.archive
    to = ctx.workdir / "restored"
    outcome = restore_snapshot(config, ctx.snapshot_id, to, copy="offline", progress=ctx.progress)
    restored_root = to / ctx.archive.relative_to("/")
    differing = _differences(ctx.archive, restored_root)
    return {"ok": not differing and outcome.files > 0, "from": "offline", "files": outcome.files,
            "bytes": outcome.bytes, "seconds": round(outcome.seconds, 3), "identical": not differing,
            "differences": differing[:5]}


def step_pacs(ctx: DemoContext) -> dict[str, Any]:
    assert ctx.config is not None and ctx.archive is not None
    return demo_pacs(ctx.config, ctx.workdir / "pacs", ctx.archive, ctx.progress)


def _differences(left: Path, right: Path) -> list[str]:
    """Paths whose bytes differ, or that exist on one side only."""
    out: list[str] = []
    for dirpath, _, names in os.walk(left):
        for name in names:
            a = Path(dirpath) / name
            b = right / a.relative_to(left)
            if not b.exists() or not filecmp.cmp(a, b, shallow=False):
                out.append(str(a.relative_to(left)))
    left_count = sum(len(n) for _, _, n in os.walk(left))
    right_count = sum(len(n) for _, _, n in os.walk(right)) if right.exists() else 0
    if right_count != left_count:
        out.append(f"{right_count} files restored, {left_count} in the archive")
    return out


def step_verify(ctx: DemoContext) -> dict[str, Any]:
    from backupctl.verify.demo import verify_step

    assert ctx.config is not None and ctx.snapshot_id
    return verify_step(ctx.config, ctx.workdir, ctx.progress, ctx.snapshot_id)


def step_audit(ctx: DemoContext) -> dict[str, Any]:
    from backupctl.audit.demo import step_audit as audit_step

    return audit_step(ctx)


# The capabilities, in order. Later steps rely on earlier ones (a snapshot, the media copy).
STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("backup", step_backup),
    ("media", step_media),
    ("restore", step_restore),
    ("verify", step_verify),
    ("s3", step_s3),
    ("drill", step_drill),
    ("find", step_find),            # after the drill: a dry run's expected time comes from its measures
    ("dry_run", step_dry_run),
    ("pacs", step_pacs),
    ("scheduler", step_scheduler),
    ("audit", step_audit),
    ("incident", step_incident),
]


def run_demo(workdir: Path, progress: Progress,
             on_step: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    ctx = DemoContext(workdir=workdir, progress=progress)
    with ctx.resources:
        return _run_steps(ctx, on_step)


def _run_steps(ctx: DemoContext, on_step: Callable[[str, dict[str, Any]], None] | None) -> dict[str, Any]:
    started = time.monotonic()
    failed = False
    for key, step in STEPS:
        if failed:
            ctx.results[key] = {"ok": False, "skipped": "an earlier step failed"}
            continue
        try:
            ctx.results[key] = step(ctx)
        except BackupctlError as exc:
            ctx.results[key] = {"ok": False, "error": exc.one_line()}
        failed = not ctx.results[key].get("ok", False)
        if on_step:
            on_step(key, ctx.results[key])
    return {"ok": all(r.get("ok") for r in ctx.results.values()), **ctx.results,
            "seconds": round(time.monotonic() - started, 3), "workdir": str(ctx.workdir)}
