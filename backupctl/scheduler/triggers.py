"""Cron expressions as operators write them, turned into APScheduler 3.x triggers.

Two traps of `CronTrigger.from_crontab` are closed here:

* APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0 (APScheduler issue 286), so
  `0 2 * * 0` would run on Mondays. Numeric weekdays are translated to names before APScheduler sees them.
* Five fields only: a sixth leading field (seconds, as in Quartz or systemd) is accepted so tests and demos can
  schedule a job every few seconds; operators normally use five.

`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly` and `@yearly`/`@annually` are accepted as in crontab.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _weekday_number(token: str) -> int:
    token = token.lower()
    if token in DAY_NAMES:
        return DAY_NAMES.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7  # 7 is Sunday too
    raise ValueError(f"'{token}' is not a weekday (0-7 or sun-sat)")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as an explicit APScheduler list of day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step '{step_text}' in '{part}' must be at least 1")
        if rng == "*":
            first, last = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            first, last = _weekday_number(a), _weekday_number(b)
            if b.strip() == "7":
                last = 7
            if last < first:
                raise ValueError(f"range '{rng}' runs backwards")
        else:
            first = last = _weekday_number(rng)
            if step_text:
                last = 6
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """Parse `expr` (5 fields, or 6 with seconds first, or an @alias) into a trigger in `timezone`."""
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    fields = text.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, dow) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, dow = fields
    else:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                       day_of_week=crontab_weekdays(dow), timezone=timezone)


def next_fire_times(trigger: CronTrigger, count: int, after: datetime) -> list[datetime]:
    """The next `count` fire times strictly after `after`."""
    times: list[datetime] = []
    previous = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    return times


def longest_gap(trigger: CronTrigger, after: datetime, samples: int = 16) -> timedelta | None:
    """The longest interval between consecutive runs over the next `samples` runs: what a `0 2 * * 1-5`
    job may legitimately go without a backup (the weekend), used when a job sets no expected interval."""
    times = next_fire_times(trigger, samples + 1, after)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return max(gaps) if gaps else None
