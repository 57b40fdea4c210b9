"""What verification finds, in one shape for every level (repo, replicas, restore)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR, WARNING, NOTE = "error", "warning", "note"
LEVELS = ("repo", "replicas", "restore")   # `backupctl verify --level`, cheapest first


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing found. Errors fail the check; warnings are shown and recorded but do not fail it.

    kind names the problem in a word an operator can search for: hash-mismatch, missing, truncated,
    not-dicom, altered, under-locked, pack-damaged, signature, changed-during-backup, ...
    subject names the thing: a restored file's path (as in the snapshot), an object key, a pack id.
    """

    severity: str
    kind: str
    subject: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.subject}: {self.kind}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class LevelResult:
    """The outcome of one verification level."""

    level: str
    subject: str
    checked: int = 0                 # packs, objects or files
    bytes: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None       # why the level did not run (e.g. a medium not mounted)
    run_id: int | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        secs = self.seconds or 1e-9
        return {
            "level": self.level, "subject": self.subject, "ok": self.ok, "checked": self.checked,
            "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.bytes / secs / 1e6, 1), "items_per_second": round(self.checked / secs, 1),
            "errors": len(self.errors), "warnings": len(self.warnings), "skipped": self.skipped,
            "findings": [f.as_dict() for f in self.findings], "run_id": self.run_id, **self.figures,
        }


def first_failures(results: list[LevelResult], limit: int = 3) -> str:
    """The first errors in plain words, for the one-line message of a failed verify."""
    lines = [f"{r.level}: {f.line()}" for r in results for f in r.errors][:limit]
    total = sum(len(r.errors) for r in results)
    more = f" (+{total - len(lines)} more)" if total > len(lines) else ""
    return "; ".join(lines) + more
