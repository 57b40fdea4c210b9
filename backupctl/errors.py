"""The package's exception tree. The CLI edge (`backupctl.cli`) turns each into one line and an exit code.

Exit codes: 2 bad input (config, arguments), 1 a failed run, 3 a partial run (something was saved but not
all of it), 4 a suspect snapshot (saved and kept, but its changes look like ransomware; see docs/incident.md),
130 interrupted. Messages are one line: what is wrong, then how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' when `name` looks like a typo of one known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class BackupctlError(Exception):
    """Base of every error backupctl expects and explains."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # what was done before the error (a partial snapshot's figures): `--json` prints it with the error
        self.details: dict[str, object] | None = None

    def one_line(self) -> str:
        text = self.message.strip().replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(BackupctlError):
    """Bad input from the user: arguments, files, config."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is missing or invalid; the message names file, field and what is expected."""


class SecretError(UsageError):
    """A secret file is missing, empty or readable by others."""


class ConsoleError(UsageError):
    """The web console cannot start or an account command was refused (docs/console.md)."""


class LockBusy(BackupctlError):
    """Another backupctl process holds the repository lock."""


class Interrupted(BackupctlError):
    """SIGINT/SIGTERM stopped the run; what was half done was cleaned up or recorded as failed."""

    exit_code = 130


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler the CLI installs (`process.raise_on_sigterm`): handled
    like Ctrl-C (KeyboardInterrupt); `process.INTERRUPTIONS` names both."""


class PartialRun(BackupctlError):
    """Something was saved, but not everything (e.g. restic exit 3: some files unreadable)."""

    exit_code = 3


class SuspectSnapshot(BackupctlError):
    """The snapshot is saved, kept and tagged `suspect`: its changes against the previous one look like
    ransomware (encrypted, renamed or deleted files, ransom notes, executable preambles)."""

    exit_code = 4


class IncidentOpen(BackupctlError):
    """Refused while a suspect snapshot is open (expiry and pruning pause during an incident)."""


class NoCleanSnapshot(BackupctlError):
    """No snapshot before the first suspect one passes verification."""


class KitError(UsageError):
    """A recovery kit cannot be opened: wrong passphrase, damaged or not a kit."""


# restic --------------------------------------------------------------------------------------------------


class ResticError(BackupctlError):
    """restic failed; `stderr_tail` keeps its last lines for the log (never shown with secrets)."""

    def __init__(self, message: str, *, hint: str | None = None, stderr_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.stderr_tail = stderr_tail


class ResticNotInstalled(ResticError):
    exit_code = 2


class RepositoryNotFound(ResticError):
    pass


class WrongPassword(ResticError):
    exit_code = 2


class RepositoryLocked(ResticError):
    pass


class SourceUnreadable(UsageError):
    """A source path is missing or cannot be read: checked before restic runs."""


class UnknownSnapshot(UsageError):
    """A snapshot id or prefix that names no snapshot, or more than one."""


class SourceOverlap(UsageError):
    """A job's source holds or lies inside backupctl's own state, secrets, media or cache."""


class PartialSnapshot(PartialRun, ResticError):
    """restic exit 3: the snapshot was saved but some files could not be read."""

    summary: object = None

    def with_summary(self, summary: object) -> PartialSnapshot:
        self.summary = summary
        return self


# targets -------------------------------------------------------------------------------------------------


class TargetError(BackupctlError):
    """A replica target (offline medium, S3) refused or failed an operation."""


class MediaLabelMismatch(TargetError):
    exit_code = 2


class MediaNotMounted(TargetError):
    exit_code = 2


class MediaWriteFailed(TargetError):
    """The disk refused a write during a sync (full, or failing: EIO); that run's partial files are removed."""


class MediaFull(MediaWriteFailed):
    """The disk has less free space than the sync needs: refused before anything is written."""


class IntegrityError(BackupctlError):
    """Data read back does not match what was written (hash, size, signature)."""


# PACS (Orthanc) and hooks --------------------------------------------------------------------------------


class OrthancError(BackupctlError):
    """An Orthanc instance could not be started, stopped, reached or refused a request."""


class OrthancNotInstalled(OrthancError):
    exit_code = 2


class OrthancStartError(OrthancError):
    """Orthanc did not answer `/system` in time, or exited while starting."""


class OrthancStopError(OrthancError):
    """Orthanc did not stop (stop command failed, or the index stayed locked)."""


class OrthancUnreachable(OrthancError):
    """No HTTP answer from an Orthanc REST API (refused, timed out)."""


class OrthancHttpError(OrthancError):
    """Orthanc answered with an HTTP error; `status` is the HTTP status."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class DowntimeExceeded(OrthancError):
    """The PACS stayed stopped longer than the job's `max_downtime_seconds`; the copy was discarded."""


class DicomNetworkError(BackupctlError):
    """A DICOM peer (DIMSE) was unreachable, rejected the association, or refused a request."""


class HookFailed(BackupctlError):
    """A job's before/after hook exited non-zero or timed out."""


# S3 Object Lock target ----------------------------------------------------------------------------------


class S3Error(TargetError):
    """An S3 endpoint refused or failed an operation; the message names endpoint/bucket, never keys."""


class S3Unreachable(S3Error):
    """The endpoint did not answer (DNS, connection refused, timeout)."""


class S3TLSError(S3Error):
    """The endpoint's certificate could not be verified."""

    exit_code = 2


class S3AccessDenied(S3Error):
    """The credential is wrong or lacks a permission."""

    exit_code = 2


class S3BucketNotLocked(S3Error):
    """The bucket is missing, unversioned or has no Object Lock: backups there could be deleted."""

    exit_code = 2


class S3LockNotHonoured(S3Error):
    """The server kept an object without the lock it was asked for, even after PutObjectRetention."""


# restore drills ------------------------------------------------------------------------------------------


class DrillFailed(BackupctlError):
    """A restore drill ran to its end and a check failed or the RTO was missed (recorded in the catalog)."""

    def __init__(self, message: str, *, hint: str | None = None, drill_id: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.drill_id = drill_id


class ReportError(BackupctlError):
    """A drill report could not be printed to PDF (no chromium, chromium failed) or mailed."""


class CatalogError(BackupctlError):
    """The catalog cannot be opened, migrated or read."""


class RgwError(BackupctlError):
    """The development Ceph RGW could not be brought up or down."""


class CoverageStale(IntegrityError):
    """Something has gone unverified for longer than the configured bound."""


class SignatureInvalid(IntegrityError):
    """A signature does not verify, or was made by a key other than the trusted one."""


class EmbeddedServerError(BackupctlError):
    """The embedded S3 server (moto) could not be started."""


class ManifestError(IntegrityError):
    """A manifest is missing, malformed, or its signature does not verify."""


# control flow inside one capability: caught there, never shown to a user as they are


class StopDrill(Exception):
    """A check failed that later phases depend on; the drill records it and stops early."""


class StepUnavailable(Exception):
    """The capability a step needs is not part of this installation."""


class NotDicom(Exception):
    """The bytes are neither a DICOM Part 10 file nor a dataset stored without file meta."""


class SelectionError(Exception):
    """Nothing to drill: no snapshot matches, or a listed study is not in the snapshot."""
