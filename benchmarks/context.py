"""The state one bench run shares between its measurements: sizes, the archive, the template repository,
and fixtures one measurement leaves for the next (e.g. the backed-up pair that incremental runs start from)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness import remove_tree
from benchmarks.workload import Archive, RawRepo

T = TypeVar("T")


@dataclass
class Context:
    workdir: Path                       # scratch space of this run, removed at the end
    repeats: int
    archive: Archive                    # the pristine cached archive (never modified)
    source: Archive                     # the hard-linked working copy every backup reads
    template: RawRepo
    small_files: int                    # file count for the memory measurement
    cache: Path
    fixtures: dict[str, Any] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        """An empty folder under the run's workdir (emptied if a previous measurement used the name)."""
        path = self.workdir / name
        remove_tree(path)
        path.mkdir(parents=True)
        return path

    def fixture(self, name: str, make: Callable[[], T]) -> T:
        """What `make` builds, once per run; a measurement may also `offer` it having built it anyway."""
        if name not in self.fixtures:
            self.fixtures[name] = make()
        return self.fixtures[name]

    def offer(self, name: str, value: Any) -> None:
        self.fixtures[name] = value
