"""The tamper-evident audit trail: one function records an action (`record`), everything else follows from it.

A record is appended to the hash-chained log (`audit.log`), checked against the anomaly rules (a match is a
`security alert` record and a notification), and forwarded to the ATNA repository when one is configured.
`seal` seals the log's state with the signing key, locally and in an Object Lock bucket. The CLI's
dispatch (`backupctl.audit.edge`) calls both for every command, so no command can skip them; the scheduler
and the actions add records where they know more. See docs/audit.md.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from backupctl.audit.log import Record, append, current_actor, log_path, tail_since

if TYPE_CHECKING:
    from backupctl.config import Config

log = logging.getLogger("backupctl.audit")

# ids that may name patients: replaced by the catalog's HMAC pseudonym unless the repository is cleared
PATIENT_KEYS = ("patient", "patient_id", "patients", "accession", "accession_number", "patient_name")
_SECRET_WORDS = ("password", "secret", "token", "credential", "passphrase")


_notes: dict[str, Any] = {}


def note(**ids: Any) -> None:
    """What an action learned that its arguments did not say (the snapshot a backup made, the id `latest`
    resolved to): the CLI edge adds it to the command's record."""
    _notes.update({k: v for k, v in ids.items() if v is not None})


def take_notes() -> dict[str, Any]:
    taken = dict(_notes)
    _notes.clear()
    return taken


def record(config: Config, action: str, outcome: str, *, actor: str | None = None,
           details: dict[str, Any] | None = None, **ids: Any) -> Record | None:
    """Write one audit record (and what follows from it); None when the log cannot be written (logged).

    `ids` name what was acted on (job, snapshot, target, drill, studies, patient); `details` say how it went.
    Patient identifiers become pseudonyms and secret-looking details are dropped before anything is written.
    """
    path = log_path(config.state_dir)
    try:
        written = append(path, action, outcome, actor=actor or current_actor(), ids=clean_ids(config, ids),
                         details=clean_details(details))
    except OSError as exc:
        log.error("audit record of %s not written to %s: %s", action, path, exc.strerror or exc)
        return None
    try:
        _alerts(config, written)
    except OSError as exc:
        log.error("audit anomaly rules not evaluated: %s", exc)
    forward(config)
    return written


def _alerts(config: Config, written: Record) -> None:
    from backupctl.audit.rules import ALERT_ACTION, evaluate

    rules = config.settings.audit.rules
    if not rules.enabled or written.action == ALERT_ACTION:
        return
    path = log_path(config.state_dir)
    window = tail_since(path, written.when - timedelta(hours=1))
    for match in evaluate(rules, written, window):
        alert = append(path, ALERT_ACTION, "alert", actor=written.actor, ids=written.ids,
                       details={"rule": match.rule, "text": match.text, "about": written.seq})
        log.info("audit security alert (%s): %s", match.rule, match.text)
        notify_alert(config, alert, match.rule, match.text)


def notify_alert(config: Config, alert: Record, rule: str, text: str) -> None:
    """Send a security alert to the configured channels (webhook, e-mail); never raises."""
    from backupctl.errors import BackupctlError
    from backupctl.notify import Notice, Notifier

    cfg = config.settings.notify
    if not (cfg.webhook_url_file or cfg.webhook_url_env or cfg.email_to):
        return
    try:
        notifier = Notifier(config, cfg)
    except BackupctlError as exc:
        log.error("security alert not sent: %s", exc.one_line())
        return
    notifier.send(Notice(event="failure", kind="audit", name=rule, execution=f"audit-{alert.seq}",
                         status="alert", started=alert.time, finished=alert.time, error=text))


RETRY_SECONDS = 60


def forward(config: Config, *, force: bool = False) -> Any:
    """Send the queued records to the ATNA repository, when one is configured; never raises.

    After a failed attempt, records only queue for RETRY_SECONDS: a repository that drops packets would
    otherwise cost every command a connect timeout. `audit forward` (force) always tries."""
    if config.settings.audit.forward is None:
        return None
    import time

    from backupctl.audit.log import audit_dir
    from backupctl.audit.syslog import forward_pending

    mark = audit_dir(config.state_dir) / "forward.failed"
    try:
        if not force and time.time() - mark.stat().st_mtime < RETRY_SECONDS:
            return None
    except FileNotFoundError:
        pass
    from backupctl.errors import BackupctlError

    try:
        result = forward_pending(config)
    except (OSError, BackupctlError) as exc:
        if force:
            raise
        log.warning("audit forwarding failed: %s", exc.one_line() if isinstance(exc, BackupctlError) else exc)
        return None
    if result is not None and result.error:
        log.warning("audit records queued (%d), %s unreachable: %s", result.pending, result.destination,
                    result.error)
        mark.touch(mode=0o600)
        os.utime(mark)
    elif result is not None:
        mark.unlink(missing_ok=True)
    return result


def seal(config: Config) -> dict[str, Any] | None:
    """Sign the log's count and last hash; keep it locally and in the checkpoint bucket. Never raises."""
    from backupctl.audit.checkpoint import safe_write_checkpoint

    return safe_write_checkpoint(config)


def clean_ids(config: Config, ids: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in ids.items():
        if value is None or value == [] or any(w in key for w in _SECRET_WORDS):
            continue
        if key in PATIENT_KEYS and not config.settings.audit.include_patient_ids:
            value = pseudonyms(config, value)
            key = "patient"
        out[key] = value
    return out


def pseudonyms(config: Config, value: Any) -> Any:
    """The catalog's keyed hash of each patient identifier (the same key as the manifests use)."""
    from backupctl.errors import BackupctlError
    from backupctl.signing import load_signing_key, patient_hash

    try:
        key = load_signing_key(config.signing_key).patient_hash_key()
    except BackupctlError:
        return "(withheld: no signing key to pseudonymise it)"
    if isinstance(value, list | tuple):
        return [patient_hash(key, str(v)) for v in value]
    return patient_hash(key, str(value))


def clean_details(details: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (details or {}).items()
            if v is not None and not any(w in k.lower() for w in _SECRET_WORDS)}
