"""`backupctl verify`: run the chosen levels, each as a run in the catalog with its findings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.catalog import Catalog, open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import BackupctlError, Interrupted, Terminated, UsageError
from backupctl.progress import NullProgress, Progress
from backupctl.verify.findings import ERROR, LEVELS, Finding, LevelResult, first_failures
from backupctl.verify.replicas import verify_replicas
from backupctl.verify.repo import verify_repo
from backupctl.verify.restore import verify_restore


@dataclass
class VerifyOptions:
    snapshot: str = "latest"
    job: str | None = None
    copy: str = "staging"
    sample: int | None = None
    studies: list[str] | None = None
    public_key: Path | None = None
    targets: list[str] | None = None
    seed: int | None = None
    slice_no: int | None = None


@dataclass
class VerifyReport:
    results: list[LevelResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def first_failures(self) -> str:
        return first_failures(self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "levels": [r.as_dict() for r in self.results]}


def check_levels(levels: list[str]) -> list[str]:
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise UsageError(f"unknown verify level '{unknown[0]}'", hint=f"use {', '.join(LEVELS)}")
    return [lv for lv in LEVELS if lv in levels]   # always in the cheap-to-costly order


def _run_level(config: Config, catalog: Catalog, level: str, run_id: int, options: VerifyOptions,
               progress: Progress) -> list[LevelResult]:
    if level == "repo":
        return [verify_repo(config, catalog, run_id, progress, slice_no=options.slice_no)]
    if level == "replicas":
        return verify_replicas(config, catalog, run_id, progress, options.targets)
    return [verify_restore(config, catalog, run_id, progress, snapshot=options.snapshot, job=options.job,
                           copy=options.copy, sample=options.sample, studies=options.studies,
                           public_key=options.public_key, seed=options.seed)]


def _record(catalog: Catalog, run_id: int, level: str, results: list[LevelResult]) -> None:
    for r in results:
        r.run_id = run_id
        verify_rows.record_verification(
            catalog, run_id, level, r.subject, ok=r.ok, checked=r.checked, bytes_read=r.bytes, seconds=r.seconds,
            summary={k: v for k, v in r.as_dict().items() if k not in ("findings",)},
            findings=[verify_rows.FindingRow(f.severity, f.kind, f.subject, f.detail) for f in r.findings])
    failures = [f for r in results for f in r.errors]
    status = "success" if not failures else "failed"
    run_rows.finish_run(catalog, run_id, status, run_rows.RunFigures(
        bytes=sum(r.bytes for r in results), files=sum(r.checked for r in results),
        seconds=sum(r.seconds for r in results)),
        error=first_failures(results) if failures else None)


def run_verify(config: Config, levels: list[str], options: VerifyOptions | None = None,
               progress: Progress | None = None) -> VerifyReport:
    """Run each level; a level that cannot run (locked repository, missing key) is a failed level, and the
    others still run. Ctrl-C records the running level as interrupted and stops."""
    options = options or VerifyOptions()
    progress = progress or NullProgress()
    report = VerifyReport()
    started = time.monotonic()
    with open_catalog(config.catalog_path) as catalog:
        for level in check_levels(levels):
            run_id = run_rows.start_run(catalog, options.job or "-", kind=f"verify:{level}")
            try:
                results = _run_level(config, catalog, level, run_id, options, progress)
            except (KeyboardInterrupt, Terminated, Interrupted):
                run_rows.finish_run(catalog, run_id, "interrupted", error=f"verify {level} interrupted")
                raise Interrupted(f"verify {level} interrupted; nothing was changed, scratch space removed") \
                    from None
            except UsageError as exc:  # bad input (no such snapshot or study): say so, exit 2
                run_rows.finish_run(catalog, run_id, "failed", error=exc.one_line())
                raise
            except BackupctlError as exc:
                results = [LevelResult(level, "-", findings=[Finding(ERROR, "could-not-run", level, exc.one_line())])]
            _record(catalog, run_id, level, results)
            report.results += results
    report.seconds = time.monotonic() - started
    return report
