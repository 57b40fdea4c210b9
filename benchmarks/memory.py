"""Peak memory (RSS) of backupctl on many small files, at two archive sizes, to show it does not grow.

The backupctl CLI runs inside a small probe that reports its own peak RSS (RUSAGE_SELF) apart from its
children's (RUSAGE_CHILDREN: restic), so restic's memory is never counted as backupctl's.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.dicom.synth import ArchiveSpec
from backupctl.targets.media import init_medium
from benchmarks.context import Context
from benchmarks.harness import Result, Skip, measurement, remove_tree, run_command
from benchmarks.workload import (
    JOB,
    MEDIA_LABEL,
    MEDIA_TARGET,
    Installation,
    RawRepo,
    cached_archive,
    fresh_installation,
    fresh_raw_repo,
)

SMALL_ROWS = 16                    # 16 x 16 pixels: ~1.5 KB DICOM files (key images, SR, reports)
INSTANCES_PER_SERIES = 250
PROBE = """\
import json, sys
from backupctl.cli import run
rc = run(sys.argv[2:])
# VmHWM: the peak RSS of this process image alone. getrusage's ru_maxrss is no good here: it starts from
# the RSS of the (much larger) benchmark runner this process was spawned from.
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": rc, "peak_kib": int(status["VmHWM"].split()[0])}, fh)
sys.exit(rc)
"""
TIME = "/usr/bin/time"                # GNU time: a small parent, so the child's ru_maxrss is its own


def small_spec(files: int) -> ArchiveSpec:
    series = math.ceil(files / INSTANCES_PER_SERIES)
    per_study = min(series, 4)
    return ArchiveSpec(patients=math.ceil(series / per_study), studies_per_patient=1, series_per_study=per_study,
                       instances_per_series=min(files, INSTANCES_PER_SERIES), rows=SMALL_ROWS, columns=SMALL_ROWS,
                       seed=2)


def probed(inst: Installation, probe_out: Path, *args: str) -> dict[str, Any]:
    """Run one backupctl command in the probe: its wall time and backupctl's own peak RSS."""
    done = run_command([sys.executable, "-c", PROBE, str(probe_out), "--config", str(inst.config_path), "--quiet",
                        *args], env=inst.env())
    usage = json.loads(probe_out.read_text())
    return {"seconds": round(done.run.seconds, 2), "backupctl_rss_mib": round(usage["peak_kib"] / 1024, 1)}


def restic_peak_rss(repo: RawRepo, *args: str) -> float:
    """Peak RSS (MiB) of raw restic doing the same work, measured by GNU time."""
    if not os.access(TIME, os.X_OK):
        raise Skip(f"{TIME} is not installed (Debian package 'time'; scripts/install-system-deps.sh)")
    marker = "BENCH-MAXRSS-KIB="
    done = run_command([TIME, "-f", marker + "%M", *repo.argv(*args)], env=repo.env(), capture_stderr=True)
    kib = [line for line in done.stderr.splitlines() if line.startswith(marker)][-1].removeprefix(marker)
    return round(int(kib) / 1024, 1)


def label_blank_disk(inst: Installation) -> None:
    cfg = inst.config.target(MEDIA_TARGET).model_copy(update={"mount": inst.media_mount})
    medium = init_medium(cfg, MEDIA_TARGET, MEDIA_LABEL)  # type: ignore[arg-type]
    with open_catalog(inst.config.catalog_path) as catalog:
        media_rows.register_medium(catalog, MEDIA_TARGET, medium.label, medium.media_id, medium.created)


def profile_at(ctx: Context, files: int, with_restic: bool) -> list[dict[str, Any]]:
    """backup, incremental backup, media sync and restore of a `files`-file archive: one row per command;
    `with_restic`: also raw restic's peak for the same backup and restore."""
    archive = cached_archive(ctx.cache, small_spec(files))
    work = ctx.scratch(f"memory-{files}")
    inst = fresh_installation(ctx.template, work / "inst", archive.root)
    probe_out = work / "probe.json"
    label_blank_disk(inst)
    commands = {"backup run": ("backup", "run", JOB, "--no-replicate"),
                "backup run (again)": ("backup", "run", JOB, "--no-replicate"),
                "media sync": ("media", "sync", MEDIA_TARGET),
                "restore": ("restore", "latest", "--to", str(work / "restored"))}
    rows = [{"files": len(archive.files), "command": name, **probed(inst, probe_out, *args)}
            for name, args in commands.items()]
    rows[0]["catalog_bytes"] = inst.config.catalog_path.stat().st_size
    if not with_restic:
        remove_tree(work)
        return rows
    raw = fresh_raw_repo(ctx.template, work / "raw")
    rows.append({"files": len(archive.files), "command": "raw restic backup",
                 "restic_rss_mib": restic_peak_rss(raw, "backup", str(archive.root))})
    rows.append({"files": len(archive.files), "command": "raw restic restore",
                 "restic_rss_mib": restic_peak_rss(raw, "restore", "latest", "--target", str(work / "raw-restored"))})
    remove_tree(work)
    return rows


@measurement("memory_small_files", about="peak RSS of backupctl (apart from restic) for many small files")
def memory_small_files(ctx: Context) -> Result:
    small = max(1, ctx.small_files // 10)
    rows = profile_at(ctx, small, with_restic=False) + profile_at(ctx, ctx.small_files, with_restic=True)
    peak = {n: max(r.get("backupctl_rss_mib", 0) for r in rows if r["files"] == n)
            for n in {r["files"] for r in rows}}
    figures = {"backupctl_peak_rss_mib": max(peak.values()),
               "backupctl_growth_mib": round(peak[max(peak)] - peak[min(peak)], 1), "table": rows}
    return Result(f"peak memory, {small} and {ctx.small_files} small files", "figures", figures=figures,
                  notes=["backupctl_rss_mib: the backupctl process alone (VmHWM); restic_rss_mib: raw restic doing "
                         "the same work (restic's memory is restic's, whoever starts it)"])
