"""Anomaly rules, evaluated on each record as it is written: which access looks odd enough to tell someone.

- restores or patient lookups outside working hours;
- more than `max_per_hour` of them by one actor within an hour;
- repeated failed authentication (a wrong repository password, a refused console sign-in);
- a refused delete on S3 (Object Lock stopped someone);
- a key or kit export (always worth a second look);
- a snapshot that backup found suspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from backupctl.audit.log import Record
from backupctl.config import AuditRules

ALERT_ACTION = "security alert"
AUTH_FAILURES = {"WrongPassword", "S3AccessDenied", "ConsoleSignInRefused"}


@dataclass(frozen=True)
class Match:
    rule: str
    text: str


def watched(rules: AuditRules, action: str) -> bool:
    words = action.split()
    return any(w in words for w in rules.watched)


def off_hours(rules: AuditRules, when: datetime) -> bool:
    local = when.astimezone(ZoneInfo(rules.timezone))
    start_text, end_text = rules.working_hours.split("-")
    start = time.fromisoformat(start_text)
    # "24:00" is the end of the day (time() has no 24)
    within = start <= local.time() if end_text == "24:00" else start <= local.time() < time.fromisoformat(end_text)
    return local.isoweekday() not in rules.working_days or not within


def evaluate(rules: AuditRules, record: Record, window: list[Record]) -> list[Match]:
    """The rules `record` trips, given the records of the hour before it (`window`, including `record`)."""
    if not rules.enabled or record.action == ALERT_ACTION:
        return []
    found: list[Match] = []
    if watched(rules, record.action):
        if off_hours(rules, record.when):
            found.append(Match("off-hours", f"{record.action} by {record.actor} outside working hours "
                                            f"({rules.working_hours}, {rules.timezone})"))
        since = record.when - timedelta(hours=1)
        burst = [r for r in window if r.actor == record.actor and watched(rules, r.action) and r.when >= since]
        # fires once, when the count first passes the limit, not on every record after it
        if len(burst) == rules.max_per_hour + 1:
            found.append(Match("burst", f"{len(burst)} restores or lookups by {record.actor} within an hour "
                                        f"(limit {rules.max_per_hour})"))
    if record.outcome != "ok" and record.details.get("error") in AUTH_FAILURES:
        since = record.when - timedelta(hours=1)
        failures = [r for r in window if r.actor == record.actor and r.outcome != "ok"
                    and r.details.get("error") in AUTH_FAILURES and r.when >= since]
        if len(failures) == rules.max_failed_auth_per_hour:
            found.append(Match("failed-authentication", f"{len(failures)} failed authentications by "
                                                         f"{record.actor} within an hour"))
    if record.details.get("refused_deletes") or (record.details.get("error") == "S3ObjectLocked"):
        found.append(Match("refused-delete", f"S3 refused to delete locked data during {record.action}"))
    if any(record.action == a or record.action.startswith(a + " ") for a in rules.alert_actions):
        found.append(Match("export", f"{record.action} by {record.actor}"))
    if record.details.get("suspect"):
        found.append(Match("suspect-snapshot", f"{record.action} made a snapshot that looks suspect"))
    return found
