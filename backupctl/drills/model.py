"""What a restore drill measures and finds: phases, checks, failures, studies, and the drill's result.

Plain data, shared by the drill action, the catalog and the reports. Phase durations come from a monotonic
clock (`PhaseClock`); wall-clock times are only the start and end recorded with the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# In the order a drill runs them, one after the other. fetch does work only for a remote copy (S3: the
# repository is brought to scratch first; select needs it), ingest/query only for depth pacs. The checks run
# while restic restores (inside 'restore') and, for what is left when it ends, in 'verify'. (Drills recorded
# before that had 'hash' and 'dicom' phases instead of 'verify'; reports still show them.)
PHASES = ("fetch", "select", "restore", "verify", "ingest", "query", "cleanup")
# The checks a drill can make, in the order they are reported.
CHECKS = ("copy", "snapshot", "manifest", "scope", "space", "restore", "hash", "dicom", "ingest", "query", "rto")
MAX_PROBLEMS_RECORDED = 200
ERROR, WARNING = "error", "warning"


@dataclass
class Phase:
    name: str
    status: str = "not-run"          # ok | failed | skipped | not-run
    seconds: float = 0.0
    bytes: int = 0
    files: int = 0
    detail: str = ""

    @property
    def mb_per_second(self) -> float | None:
        return self.bytes / self.seconds / 1e6 if self.bytes and self.seconds > 0 else None

    @property
    def files_per_second(self) -> float | None:
        return self.files / self.seconds if self.files and self.seconds > 0 else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 4)
        data["mb_per_second"] = _round(self.mb_per_second)
        data["files_per_second"] = _round(self.files_per_second)
        return data


@dataclass
class Check:
    name: str
    status: str                      # pass | fail | skipped
    checked: int = 0
    failed: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class Problem:
    """One thing a check found: an error fails the check, a warning is reported and does not."""

    check: str
    severity: str                    # error | warning
    kind: str                        # missing | hash-mismatch | truncated | uid-mismatch | restore-error | ...
    path: str | None = None          # the file, as its path in the snapshot
    detail: str = ""


@dataclass
class StudyResult:
    study_uid: str
    files: int
    bytes: int
    ok: bool
    verified_seconds: float | None = None


class PhaseClock:
    """Times phases with a monotonic clock. A phase may run in several stretches; its seconds add up."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.started = now()
        self.phases = {name: Phase(name) for name in PHASES}
        self.recovery_ended = 0.0      # elapsed when the last phase before clean-up ended: the recovery time

    def elapsed(self) -> float:
        return self._now() - self.started

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        phase = self.phases[name]
        began = self._now()
        try:
            yield phase
        except BaseException:
            phase.status = "failed"
            raise
        finally:
            ended = self._now()
            phase.seconds += ended - began
            if name != "cleanup":
                self.recovery_ended = ended - self.started
            if phase.status in ("not-run", "skipped"):
                phase.status = "ok"

    def skip(self, name: str, why: str) -> None:
        phase = self.phases[name]
        if phase.status == "not-run":
            phase.status, phase.detail = "skipped", why

    def fail(self, name: str, why: str) -> None:
        phase = self.phases[name]
        phase.status, phase.detail = "failed", why


@dataclass
class DrillResult:
    """Everything one drill found. `passed` holds only if every check held and the RTO was met."""

    run_id: int
    name: str
    job: str
    copy: str
    snapshot_rule: str
    scope: str
    depth: str
    seed: int
    rto_seconds: float
    snapshot_id: str | None = None
    snapshot_time: str | None = None
    rpo_seconds: float | None = None
    job_newest_snapshot_id: str | None = None      # the job's newest snapshot in the catalog at the drill
    job_newest_snapshot_time: str | None = None
    copy_newest_snapshot_time: str | None = None   # the job's newest snapshot in the drilled copy
    phases: list[Phase] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    studies: list[StudyResult] = field(default_factory=list)
    recovery_seconds: float | None = None
    rto_basis: str | None = None
    rto_met: bool | None = None
    first_study_seconds: float | None = None
    first_study_uid: str | None = None
    files: int = 0
    bytes: int = 0
    archive_files: int | None = None
    archive_bytes: int | None = None
    estimated_full_seconds: float | None = None
    scratch: str | None = None
    scratch_removed: bool = False
    manifest_sha256: str | None = None
    key_id: str | None = None
    status: str = "running"          # the run's status: success | failed | interrupted
    error: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks) and self.rto_met is True and self.error is None

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def add_check(self, check: Check) -> Check:
        self.checks = [c for c in self.checks if c.name != check.name] + [check]
        self.checks.sort(key=lambda c: CHECKS.index(c.name) if c.name in CHECKS else len(CHECKS))
        return check

    def first_failures(self, n: int = 3) -> list[str]:
        """Plain words for the first failed checks, for a one-line error message."""
        out = []
        for c in self.checks:
            if not c.ok:
                paths = [p.path for p in self.problems if p.check == c.name and p.severity == ERROR and p.path][:1]
                where = f" (first: {paths[0]})" if paths else ""
                out.append(f"{c.name}: {c.detail}{where}")
        return out[:n]

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("phases", "checks", "problems", "studies")}
        data["passed"] = self.passed
        data["phases"] = [p.as_dict() for p in self.phases]
        data["checks"] = [asdict(c) for c in self.checks]
        data["problems"] = [asdict(p) for p in self.problems]
        data["studies"] = [asdict(s) for s in self.studies]
        for key in ("recovery_seconds", "first_study_seconds", "estimated_full_seconds"):
            data[key] = _round(data[key])
        return data


def duration_text(seconds: float | None) -> str:
    """Seconds under a minute, minutes above: how long, in the unit a reader expects."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def hours_text(seconds: float | None) -> str:
    """An age or a long target: seconds under a minute, minutes under two hours, hours under two days, then
    days."""
    if seconds is None:
        return "-"
    if seconds < 7200:
        return duration_text(seconds)
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
