"""What a scheduled job runs, by kind: a backup job is the chain backup -> replicate -> verify; a drill is
one restore drill; a report is the drill report made and mailed. Every step is a function here taking
`(config, name, progress)` and returning a `StepResult`; the capabilities it calls are imported when it runs
(a scheduler start pays for none of them). A step that raises `StepUnavailable` is reported as skipped, never
as success. `register_step` replaces a step with a callable (tests, plugins).

The chain stops at the first failed or interrupted step: a failed backup is not replicated (the replicas
keep the previous, known-good state) and a failed replication is not verified. A partial backup (some files
unreadable) is still replicated and verified: what was saved must reach the other copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from backupctl.actions.backup import run_backup
from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.config import Config
from backupctl.errors import BackupctlError, Interrupted, PartialSnapshot, StepUnavailable, Terminated
from backupctl.logs import log_context
from backupctl.progress import Progress
from backupctl.status import Status

log = logging.getLogger("backupctl.scheduler")

KINDS = ("backup", "drill", "report")
CHAINS: dict[str, tuple[str, ...]] = {"backup": ("backup", "replicate", "verify"), "drill": ("drill",),
                                      "report": ("report",)}
SEVERITY = {"skipped": 0, "success": 1, "partial": 2, "failed": 3, "interrupted": 4}
EXIT_CODES = {**{s.value: s.exit_code for s in Status if s.final}, "skipped": 0}   # skipped: not a run


@dataclass
class StepResult:
    step: str
    status: str                      # success | partial | failed | interrupted | skipped
    error: str | None = None
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChainResult:
    kind: str
    name: str
    status: str
    steps: list[StepResult]
    seconds: float

    @property
    def error(self) -> str | None:
        errors = [f"{s.step}: {s.error}" for s in self.steps if s.error and s.status != "skipped"]
        return "; ".join(errors) or None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "status": self.status, "error": self.error,
                "seconds": round(self.seconds, 3), "steps": [asdict(s) for s in self.steps]}


StepFn = Callable[[Config, str, Progress], StepResult]
_REGISTERED: dict[str, StepFn] = {}


def register_step(name: str, fn: StepFn) -> None:
    _REGISTERED[name] = fn


def schedule_id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_schedule_id(value: str) -> tuple[str, str]:
    kind, _, name = value.partition(":")
    return kind, name


# built-in steps ---------------------------------------------------------------------------------------------


def _backup(config: Config, name: str, progress: Progress) -> StepResult:
    try:
        outcome = run_backup(config, name, progress, replicate=False)
    except PartialSnapshot as exc:
        return StepResult("backup", "partial", exc.one_line())
    if outcome.is_suspect:   # kept and replicated (evidence), but the chain must not look like a success
        return StepResult("backup", "partial", f"snapshot {outcome.short_id} is SUSPECT: "
                          f"{outcome.suspect['summary']}; see docs/incident.md",  # type: ignore[index]
                          figures={"snapshot": outcome.short_id, "suspect": True})
    return StepResult("backup", outcome.status, figures={
        "snapshot": outcome.short_id, "files": outcome.files, "bytes": outcome.bytes,
        "bytes_added": outcome.bytes_added, "seconds": round(outcome.seconds, 3)})


def _replicate(config: Config, name: str, progress: Progress) -> StepResult:
    targets = config.job(name).targets
    if not targets:
        return StepResult("replicate", "skipped", "the job has no targets")
    with open_catalog(config.catalog_path) as catalog:
        outcomes = [replicate_to(config, catalog, t, progress, job=name) for t in targets]
    failed = [o for o in outcomes if not o.ok]
    figures = {o.target: {"files": o.report.uploaded, "bytes": o.report.uploaded_bytes}
               for o in outcomes if o.ok and o.report}
    if failed:
        return StepResult("replicate", "failed", "; ".join(f"{o.target}: {o.error}" for o in failed), figures=figures)
    return StepResult("replicate", "success", figures=figures)


def verify_after_backup(config: Config, name: str, progress: Progress) -> StepResult:
    """`backupctl verify` after a backup: the repository (restic check on a rotating slice of packs) and,
    when the job has targets, the replicas it was just copied to. Restore-level checks are the drills' job."""
    from backupctl.verify import run
    targets = config.job(name).targets
    levels = ["repo", "replicas"] if targets else ["repo"]
    report = run.run_verify(config, levels, run.VerifyOptions(job=name, targets=list(targets) or None), progress)
    if report.ok:
        return StepResult("verify", "success", figures={"levels": levels, "seconds": round(report.seconds, 3)})
    return StepResult("verify", "failed", report.first_failures() or "verification failed")


def scheduled_drill(config: Config, name: str, progress: Progress) -> StepResult:
    """`backupctl drill run NAME`: passes only if every check held and the RTO was met."""
    from backupctl.actions import drill
    result = drill.run_drill(config, name, progress)
    figures = {"run_id": result.run_id, "recovery_seconds": result.recovery_seconds, "rto_met": result.rto_met,
               "snapshot": (result.snapshot_id or "")[:8] or None}
    if result.passed:
        return StepResult("drill", "success", figures=figures)
    reasons = result.first_failures() or [result.error or ("RTO not met" if result.rto_met is False else "failed")]
    return StepResult("drill", "failed", "; ".join(str(r) for r in reasons), figures=figures)


def scheduled_report(config: Config, name: str, progress: Progress) -> StepResult:
    """The drill report (`[report] schedule`): made, and mailed when there are recipients."""
    from backupctl.drills.delivery import mail_report, make_report

    made = make_report(config)
    figures = {"report": str(made.published.report), "pdf": str(made.published.pdf or "") or None,
               "drills": len(made.data["drills"]), "verdict": made.data["verdict"]}
    if not config.settings.report.email_to:
        return StepResult("report", "success", figures=figures)
    delivery = mail_report(config, made)
    figures["mailed_to"] = len(config.settings.report.email_to)
    if not delivery.ok:
        return StepResult("report", "failed", f"the report was written but not mailed ({delivery.destination}: "
                                              f"{delivery.error})", figures=figures)
    return StepResult("report", "success", figures=figures)


def _skippable(step: str, fn: StepFn) -> StepFn:
    def run(config: Config, name: str, progress: Progress) -> StepResult:
        try:
            return fn(config, name, progress)
        except StepUnavailable:
            return StepResult(step, "skipped", f"{step} is not available in this version of backupctl")

    return run


BUILTIN: dict[str, StepFn] = {"backup": _backup, "replicate": _replicate, "verify": verify_after_backup,
                              "drill": scheduled_drill, "report": scheduled_report}


def step_function(step: str) -> StepFn:
    if step in _REGISTERED:
        return _REGISTERED[step]
    return _skippable(step, BUILTIN[step])


def for_scheduled_runs(config: Config) -> Config:
    """The configuration as a scheduled run uses it: it queues for the repository lock up to
    `[scheduler] lock_wait_seconds` (a manual run in progress delays it instead of failing it)."""
    settings = config.settings
    wait = max(settings.staging.lock_wait_seconds, settings.scheduler.lock_wait_seconds)
    staging = settings.staging.model_copy(update={"lock_wait_seconds": wait})
    return Config(config.path, settings.model_copy(update={"staging": staging}), config.jobs, config.drills)


# the chain --------------------------------------------------------------------------------------------------


def _run_step(step: str, config: Config, name: str, progress: Progress) -> StepResult:
    started = time.monotonic()
    try:
        result = step_function(step)(config, name, progress)
    except (KeyboardInterrupt, Terminated, Interrupted) as exc:
        message = exc.one_line() if isinstance(exc, Interrupted) else "stopped by a signal"
        result = StepResult(step, "interrupted", message)
    except BackupctlError as exc:
        result = StepResult(step, "failed", exc.one_line())
    except Exception as exc:  # a bug must still end as a recorded failure, not a silent thread death
        log.exception("step %s of %s crashed", step, name)
        result = StepResult(step, "failed", f"internal error: {exc!r}")
    result.seconds = round(time.monotonic() - started, 3)
    return result


def run_chain(config: Config, kind: str, name: str, progress: Progress) -> ChainResult:
    """Run every step of `kind` for `name` in order, stopping after a failed or interrupted one."""
    if kind not in CHAINS:
        raise BackupctlError(f"unknown schedule kind '{kind}' (kinds: {', '.join(KINDS)})")
    if kind == "backup":
        config.job(name)  # unknown names are bad input, said early
    elif kind == "drill":
        config.drill(name)
    started = time.monotonic()
    steps: list[StepResult] = []
    for step in CHAINS[kind]:
        with log_context(step=step):
            log.info("%s %s: step %s starting", kind, name, step)
            result = _run_step(step, config, name, progress)
            log.log(logging.INFO if result.status in ("success", "skipped") else logging.ERROR,
                    "%s %s: step %s %s%s", kind, name, step, result.status,
                    f": {result.error}" if result.error else "")
        steps.append(result)
        if result.status in ("failed", "interrupted"):
            break
    worst = max((s.status for s in steps), key=SEVERITY.__getitem__, default="skipped")
    status = "success" if worst == "skipped" else worst
    if all(s.status == "skipped" for s in steps):
        status = "failed"  # nothing ran: a drill without its module must not look like a success
    return ChainResult(kind, name, status, steps, time.monotonic() - started)
