"""How fresh is everything: the figures behind `backupctl status` and the Prometheus metrics.

A job is *stale* when its last success is older than `stale_factor` x its expected interval: the job's
`expected_interval_hours`, else the longest gap of its cron schedule over the next runs (so a weekday job is
not stale on Monday morning), else nothing is expected (a manual job is never stale). *failing* means the
last run failed while the last success is still fresh; *never* that it has not succeeded yet.
Replicas: a media target uses its rotation interval; other targets the shortest interval of the jobs
that copy to them. Verification and drills are read from the runs table by kind (`verify...`, `drill...`),
so they appear here as soon as those commands record runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from backupctl.catalog import Catalog
from backupctl.catalog import scheduler as sched_rows
from backupctl.config import Config
from backupctl.scheduler.triggers import cron_trigger, longest_gap

FRESH, FAILING, STALE, NEVER, UNKNOWN = "ok", "failing", "stale", "never", "-"


@dataclass
class Freshness:
    kind: str                        # backup | replica | verify | drill
    name: str                        # job, target, verify kind, drill
    last_run: str | None
    last_status: str | None
    last_error: str | None
    last_success: str | None
    age_seconds: float | None        # since the last success
    expected_seconds: float | None
    state: str                       # ok | failing | stale | never | -
    figures: dict

    def as_dict(self) -> dict:
        return asdict(self)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def expected_seconds(schedule: str | None, timezone: str, hours: float | None, now: datetime) -> float | None:
    if hours is not None:
        return hours * 3600
    if schedule is None:
        return None
    gap = longest_gap(cron_trigger(schedule, timezone), now)
    return gap.total_seconds() if gap else None


def _state(last: dict | None, success: dict | None, expected: float | None, factor: float,
           now: datetime) -> tuple[str, float | None]:
    ok_time = parse_time(success["finished"] or success["started"]) if success else None
    age = (now - ok_time).total_seconds() if ok_time else None
    if expected is None and last is None:
        return UNKNOWN, age
    if age is None:
        return NEVER, age
    if expected is not None and age > expected * factor:
        return STALE, age
    if last is not None and last["status"] not in ("success", "running"):
        return FAILING, age
    return FRESH, age


def _freshness(kind: str, name: str, last: dict | None, success: dict | None, expected: float | None,
               factor: float, now: datetime) -> Freshness:
    state, age = _state(last, success, expected, factor, now)
    figures = {}
    if success:
        figures = {k: success.get(k) for k in ("seconds", "bytes", "bytes_added", "files", "snapshot_id")
                   if success.get(k) is not None}
    return Freshness(kind, name, last["finished"] or last["started"] if last else None,
                     last["status"] if last else None, last["error"] if last else None,
                     (success["finished"] or success["started"]) if success else None, age, expected, state, figures)


def job_freshness(config: Config, catalog: Catalog, now: datetime | None = None) -> list[Freshness]:
    now = now or datetime.now(UTC)
    factor = config.settings.scheduler.stale_factor
    last = sched_rows.last_runs_by_kind(catalog, "backup")
    ok = sched_rows.last_runs_by_kind(catalog, "backup", "success")
    executions = sched_rows.last_executions(catalog)
    return [_freshness("backup", name, _latest(last.get(("backup", name)), executions.get(f"backup:{name}")),
                       ok.get(("backup", name)),
                       expected_seconds(job.schedule, job.timezone, job.expected_interval_hours, now), factor, now)
            for name, job in sorted(config.jobs.items())]


def _latest(run: dict | None, execution: dict | None) -> dict | None:
    """The job's latest outcome: its last backup run, or a later scheduled execution that failed before any
    run was recorded (sources missing, config broken) or was missed while the daemon was down."""
    if execution is None or execution["status"] in ("running", "skipped", "success"):
        return run
    if run is not None and run["started"] >= execution["started"]:
        return run
    return execution


def replica_freshness(config: Config, catalog: Catalog, now: datetime | None = None) -> list[Freshness]:
    now = now or datetime.now(UTC)
    factor = config.settings.scheduler.stale_factor
    last = _latest_per_kind(sched_rows.last_runs_by_kind(catalog, "replicate:%"))
    ok = _latest_per_kind(sched_rows.last_runs_by_kind(catalog, "replicate:%", "success"))
    out = []
    for name, target in sorted(config.settings.targets.items()):
        if target.type == "media":
            expected: float | None = target.rotation_days * 86400
        else:
            intervals = [expected_seconds(j.schedule, j.timezone, j.expected_interval_hours, now)
                         for j in config.jobs.values() if name in j.targets]
            known = [i for i in intervals if i is not None]
            expected = min(known) if known else None
        kind = f"replicate:{name}"
        out.append(_freshness("replica", name, last.get(kind), ok.get(kind), expected, factor, now))
    return out


def _latest_per_kind(rows: dict[tuple[str, str], dict]) -> dict[str, dict]:
    """Replication runs are per (target, job); a target's freshness is its latest run of any job."""
    latest: dict[str, dict] = {}
    for (kind, _job), row in rows.items():
        if kind not in latest or row["id"] > latest[kind]["id"]:
            latest[kind] = row
    return latest


def drill_freshness(config: Config, catalog: Catalog, now: datetime) -> list[Freshness] | None:
    """Per drill definition, from the drills' own table: a drill succeeds only if it passed (every check held
    and the RTO was met); its figures carry the measured recovery time against the RTO."""
    outcomes = sched_rows.drill_outcomes(catalog)
    if outcomes is None:
        return None
    last, passed = outcomes
    factor = config.settings.scheduler.stale_factor
    out = []
    for name in sorted(set(config.drills) | set(last)):
        drill = config.drills.get(name)
        expected = expected_seconds(drill.schedule, drill.timezone, None, now) if drill else None
        latest = dict(last[name], status="success" if last[name]["passed"] else "failed") if name in last else None
        fresh = _freshness("drill", name, latest, passed.get(name), expected, factor, now)
        source = passed.get(name) or last.get(name) or {}
        fresh.figures.update({"seconds": source.get("recovery_seconds"), "rto_seconds": source.get("rto_seconds"),
                              "rto_met": source.get("rto_met")})
        out.append(fresh)
    return out


def check_freshness(config: Config, catalog: Catalog, prefix: str, now: datetime | None = None) -> list[Freshness]:
    """Verification (`verify...`) or drills (`drill...`): the latest run of each kind and subject."""
    now = now or datetime.now(UTC)
    if prefix == "drill":
        drills = drill_freshness(config, catalog, now)
        if drills is not None:
            return drills
    factor = config.settings.scheduler.stale_factor
    last = sched_rows.last_runs_by_kind(catalog, f"{prefix}%")
    ok = sched_rows.last_runs_by_kind(catalog, f"{prefix}%", "success")
    out = []
    for key in sorted(last):
        kind, subject = key
        expected = None
        if prefix == "drill" and subject in config.drills:
            d = config.drills[subject]
            expected = expected_seconds(d.schedule, d.timezone, None, now)
        name = subject if prefix == "drill" else f"{kind} {subject}".strip()
        out.append(_freshness(prefix, name, last[key], ok.get(key), expected, factor, now))
    return out
