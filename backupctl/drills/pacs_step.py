"""Where the PACS capability plugs into restore drills (depth 'pacs'): ingest, then query.

The PACS module registers a factory with `register`; a drill of depth 'pacs' then starts a scratch PACS
under the drill's scratch folder, ingests the restored DICOM files (phase `ingest`), asks it for every
restored study (phase `query`) and closes it. Without a registered factory, depth 'pacs' is refused before
a drill starts, never silently downgraded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backupctl.progress import Progress

if TYPE_CHECKING:
    from backupctl.config import Config


@dataclass
class StepFinding:
    severity: str                    # error | warning
    kind: str                        # rejected | not-found | count-mismatch | ...
    path: str | None = None          # a file (as its path in the snapshot) or a study UID
    detail: str = ""


@dataclass
class StepOutcome:
    checked: int                     # files ingested, or studies queried
    files: int = 0
    bytes: int = 0
    detail: str = ""
    findings: list[StepFinding] = field(default_factory=list)


class PacsDrillStep(Protocol):
    def ingest(self, files: list[tuple[str, Path]], progress: Progress) -> StepOutcome:
        """Store the restored files ((path in the snapshot, restored path) pairs) in the scratch PACS."""

    def query(self, studies: dict[str, int], progress: Progress) -> StepOutcome:
        """Ask the scratch PACS for each study UID; the value is how many instances it must hold."""

    def close(self) -> None:
        """Stop the scratch PACS and release what it holds (its storage is under the drill's scratch)."""


PacsFactory = Callable[["Config", Path], PacsDrillStep]
_factory: PacsFactory | None = None


def register(factory: PacsFactory) -> None:
    global _factory
    _factory = factory


def factory() -> PacsFactory | None:
    """The scratch PACS of depth 'pacs' drills: a registered one (tests, plugins), else Orthanc's."""
    if _factory is not None:
        return _factory
    try:
        from backupctl.pacs.drill import OrthancDrillStep
    except ImportError:   # an installation without the PACS capability
        return None
    return OrthancDrillStep
