"""The status of a run, one vocabulary for the catalog, the CLI's exit codes, reports and notifications."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL = "partial"            # something was saved, not all of it
    FAILED = "failed"
    INTERRUPTED = "interrupted"    # stopped by a signal, or its process vanished (killed, power loss)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for a run that ended so (see backupctl.errors)."""
        return _EXIT_CODES[self]

    @property
    def final(self) -> bool:
        return self is not Status.RUNNING


_EXIT_CODES = {Status.RUNNING: 0, Status.SUCCESS: 0, Status.PARTIAL: 3, Status.FAILED: 1, Status.INTERRUPTED: 130}
