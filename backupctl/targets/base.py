"""The interface every replica target implements.

A target holds a copy of the staging restic repository's files (see `backupctl.repofiles`). The replication
action asks it to `prepare`, `sync` the missing files, and records what it reports; verification asks it
to `audit`; restores and drills ask it for a `local_repository` that restic can read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.progress import Progress
from backupctl.repofiles import RepoFile


@dataclass
class SyncReport:
    target: str
    location: str                      # medium label, or bucket/prefix
    uploaded: int = 0
    uploaded_bytes: int = 0
    skipped: int = 0                   # already present and checked
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    """One thing an audit found wrong, by key. kind: missing | altered | extra | under-locked | ..."""

    kind: str
    key: str
    detail: str = ""


class Target(ABC):
    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def prepare(self) -> str:
        """Check the target can take a write (label matches, bucket locked, ...); return its location."""

    @abstractmethod
    def list_files(self) -> dict[str, int]:
        """Repository-relative path -> size of every replicable file the target holds."""

    @abstractmethod
    def sync(self, staging: Path, files: list[RepoFile], progress: Progress) -> SyncReport:
        """Copy the files the target lacks, in the given (upload) order, checking each."""

    @abstractmethod
    def audit(self, expected: list[RepoFile], progress: Progress) -> list[Finding]:
        """Read back what the target holds against what it should hold."""

    @abstractmethod
    def local_repository(self, scratch: Path) -> Path:
        """A path restic can open read-only: the copy itself, or one rebuilt under `scratch`."""
