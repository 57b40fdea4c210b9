"""Peak memory (RSS) of backupctl on many small files, at two archive sizes, to show it does not grow.

The backupctl CLI runs inside a small probe that reports its own peak RSS (RUSAGE_SELF) apart from its
children's (RUSAGE_CHILDREN: restic), so restic's memory is never counted as backupctl's.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.dicom.synth import ArchiveSpec
from backupctl.targets.media import init_medium
from benchmarks.context import Context
from benchmarks.harness import Result, measurement, run_command
from benchmarks.workload import (
    JOB,
    MEDIA_LABEL,
    MEDIA_TARGET,
    Installation,
    cached_archive,
    fresh_installation,
    fresh_raw_repo,
)

SMALL_ROWS = 16                    # 16 x 16 pixels: ~1.5 KB DICOM files (key images, SR, reports)
INSTANCES_PER_SERIES = 250
PROBE = """\
import json, resource, sys
from backupctl.cli import run
rc = run(sys.argv[2:])
usage = resource.getrusage
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": rc, "self_kib": usage(resource.RUSAGE_SELF).ru_maxrss,
               "children_kib": usage(resource.RUSAGE_CHILDREN).ru_maxrss}, fh)
sys.exit(rc)
"""


def small_spec(files: int) -> ArchiveSpec:
    series = math.ceil(files / INSTANCES_PER_SERIES)
    per_study = min(series, 4)
    return ArchiveSpec(patients=math.ceil(series / per_study), studies_per_patient=1, series_per_study=per_study,
                       instances_per_series=min(files, INSTANCES_PER_SERIES), rows=SMALL_ROWS, columns=SMALL_ROWS,
                       seed=2)


def probed(inst: Installation, probe_out: Path, *args: str) -> dict[str, Any]:
    """Run one backupctl command in the probe; its wall time, and backupctl's and restic's peak RSS."""
    done = run_command([sys.executable, "-c", PROBE, str(probe_out), "--config", str(inst.config_path), "--quiet",
                        *args], env=inst.env())
    usage = json.loads(probe_out.read_text())
    return {"seconds": round(done.run.seconds, 2), "backupctl_rss_mib": round(usage["self_kib"] / 1024, 1),
            "restic_rss_mib": round(usage["children_kib"] / 1024, 1)}


def label_blank_disk(inst: Installation) -> None:
    cfg = inst.config.target(MEDIA_TARGET).model_copy(update={"mount": inst.media_mount})
    medium = init_medium(cfg, MEDIA_TARGET, MEDIA_LABEL)  # type: ignore[arg-type]
    with open_catalog(inst.config.catalog_path) as catalog:
        media_rows.register_medium(catalog, MEDIA_TARGET, medium.label, medium.media_id, medium.created)


def profile_at(ctx: Context, files: int) -> dict[str, Any]:
    """backup, incremental backup, media sync and restore of a `files`-file archive, probed."""
    archive = cached_archive(ctx.cache, small_spec(files))
    work = ctx.scratch(f"memory-{files}")
    inst = fresh_installation(ctx.template, work / "inst", archive.root)
    probe_out = work / "probe.json"
    label_blank_disk(inst)
    out: dict[str, Any] = {"files": len(archive.files)}
    out["backup"] = probed(inst, probe_out, "backup", "run", JOB, "--no-replicate")
    out["backup_again"] = probed(inst, probe_out, "backup", "run", JOB, "--no-replicate")
    out["media_sync"] = probed(inst, probe_out, "media", "sync", MEDIA_TARGET)
    out["restore"] = probed(inst, probe_out, "restore", "latest", "--to", str(work / "restored"))
    raw = fresh_raw_repo(ctx.template, work / "raw")
    out["raw_restic_backup_rss_mib"] = round(
        run_command(raw.argv("backup", str(archive.root)), env=raw.env()).run.max_rss_kib / 1024, 1)  # type: ignore[operator]
    out["catalog_bytes"] = inst.config.catalog_path.stat().st_size
    return out


@measurement("memory_small_files", about="peak RSS of backupctl (apart from restic) for many small files",
             default=False)
def memory_small_files(ctx: Context) -> Result:
    small = max(1, ctx.small_files // 10)
    at_small, at_full = profile_at(ctx, small), profile_at(ctx, ctx.small_files)
    peak = {n: max(v["backupctl_rss_mib"] for v in d.values() if isinstance(v, dict))
            for n, d in ((small, at_small), (ctx.small_files, at_full))}
    figures = {f"files_{at_small['files']}": at_small, f"files_{at_full['files']}": at_full,
               "backupctl_peak_rss_mib": peak[ctx.small_files],
               "backupctl_growth_mib": round(peak[ctx.small_files] - peak[small], 1)}
    return Result(f"peak memory, {small} and {ctx.small_files} small files", "figures", figures=figures,
                  notes=["backupctl_rss_mib is the Python process alone; restic_rss_mib is restic's own"])
