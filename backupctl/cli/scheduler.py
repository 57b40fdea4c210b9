"""`scheduler run`, `schedule list`, `status`, `metrics`: the daemon and what operators and monitoring read."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import OPTIONS, clip, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.cli.media import media_status
from backupctl.errors import BackupctlError

if TYPE_CHECKING:
    from backupctl.config import Config

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

scheduler_app = typer.Typer(help="The scheduler daemon.", no_args_is_help=True)
schedule_app = typer.Typer(help="Scheduled jobs and drills.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
STATE_COLOURS = {"ok": "green", "failing": "yellow", "stale": "bold red", "never": "bold red", "-": "dim"}


def register(app: typer.Typer) -> None:
    app.add_typer(scheduler_app, name="scheduler")
    app.add_typer(schedule_app, name="schedule")
    app.command("status")(status)
    app.command("metrics")(metrics)


# the daemon ----------------------------------------------------------------------------------------------------


@scheduler_app.command("run")
def run(
    log_format: Annotated[str | None, typer.Option("--log-format", help="text or json (JSON lines); "
                                                   "default: [scheduler] log_format")] = None,
) -> None:
    """Run the scheduler in the foreground (systemd: see examples/backupctl-scheduler.service).
    SIGHUP reloads the configuration, SIGTERM stops after running jobs finish (within the grace time)."""
    from backupctl.config import config_path
    from backupctl.logs import setup_logging
    from backupctl.scheduler.daemon import Daemon

    if log_format not in (None, "text", "json"):
        raise typer.BadParameter("expected text or json", param_hint="--log-format")
    daemon = Daemon(config_path(OPTIONS.config), log_format)
    setup_logging(daemon.log_format)
    daemon.run()


@scheduler_app.command("exec", hidden=True)
def exec_job(
    kind: Annotated[str, typer.Argument(help="backup or drill")],
    name: Annotated[str, typer.Argument(help="Job or drill name.")],
) -> None:
    """Run one scheduled execution in this process (the daemon starts this as a child); prints one JSON line."""
    from backupctl.logs import FORMAT_ENV, setup_logging
    from backupctl.progress import LogProgress
    from backupctl.scheduler.kinds import EXIT_CODES, ChainResult, StepResult, for_scheduled_runs, run_chain

    setup_logging(os.environ.get(FORMAT_ENV, "text"))
    try:
        result = run_chain(for_scheduled_runs(common.load()), kind, name, LogProgress(every=60))
    except BackupctlError as exc:  # bad config or name: still one JSON line for the daemon to record
        result = ChainResult(kind, name, "failed", [StepResult("start", "failed", exc.one_line())], 0.0)
    sys.stdout.write(json.dumps(result.as_dict(), default=str) + "\n")
    sys.stdout.flush()
    raise typer.Exit(EXIT_CODES[result.status])


# schedule list ---------------------------------------------------------------------------------------------------


def schedule_rows(config: "Config") -> list[dict[str, Any]]:
    from backupctl.catalog import open_catalog
    from backupctl.catalog import scheduler as sched_rows
    from backupctl.scheduler.kinds import schedule_id
    from backupctl.scheduler.state import running_daemon, stored_next_runs
    from backupctl.scheduler.triggers import cron_trigger

    now = datetime.now(UTC)
    stored = stored_next_runs(config.state_dir)
    daemon = running_daemon(config.state_dir)
    items = [("backup", n, j.schedule, j.timezone) for n, j in sorted(config.jobs.items())]
    items += [("drill", n, d.schedule, d.timezone) for n, d in sorted(config.drills.items())]
    with open_catalog(config.catalog_path) as catalog:
        executions = sched_rows.last_executions(catalog)
        rows = []
        for kind, name, cron, tz in items:
            sid = schedule_id(kind, name)
            last = sched_rows.last_run_like(catalog, name, "backup" if kind == "backup" else "drill%")
            next_run, source = None, "manual"
            if cron:
                if sid in stored:
                    next_run, source = stored[sid], "daemon" if daemon else "store (due when the daemon starts)"
                else:
                    next_run, source = cron_trigger(cron, tz).get_next_fire_time(None, now), "cron (not yet loaded)"
            execution = executions.get(sid)
            rows.append({
                "id": sid, "kind": kind, "name": name, "schedule": cron, "timezone": tz,
                "next_run": next_run.astimezone(UTC).isoformat() if next_run else None, "next_run_source": source,
                "overdue": bool(next_run and next_run < now),
                "last_run": (last or {}).get("started"), "last_status": (last or {}).get("status"),
                "last_error": (last or {}).get("error"),
                "last_scheduled": execution["started"] if execution else None,
                "last_scheduled_status": execution["status"] if execution else None,
            })
    return rows


@schedule_app.command("list")
def schedule_list(json_output: JsonOpt = False) -> None:
    """Each job and drill: its cron, next and last run, last status."""
    config = common.load()
    rows = schedule_rows(config)
    if json_output:
        print_json(rows)
        return
    table = make_table("schedule", "cron", "tz", "next run (UTC)", "last run", "status", "last scheduled")
    for r in rows:
        colour = {"success": "green", "partial": "yellow", "running": "cyan", None: "dim"}.get(r["last_status"], "red")
        nxt = short_time(r["next_run"]) + (" [yellow](due)[/]" if r["overdue"] else "") if r["schedule"] else "manual"
        sched = f"{short_time(r['last_scheduled'])} {r['last_scheduled_status']}" if r["last_scheduled"] else "-"
        table.add_row(r["id"], r["schedule"] or "-", r["timezone"], nxt, short_time(r["last_run"]),
                      f"[{colour}]{r['last_status'] or '-'}[/]", sched)
    out.print(table if rows else "no jobs or drills configured")


# status ----------------------------------------------------------------------------------------------------------


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def status_report(config: "Config") -> dict[str, Any]:
    from backupctl.catalog import open_catalog
    from backupctl.health import check_freshness, job_freshness, replica_freshness
    from backupctl.incident.freeze import frozen_state
    from backupctl.incident.state import suspect_status
    from backupctl.scheduler.state import read_state, running_daemon
    from backupctl.verify.status import study_coverage_now

    now = datetime.now(UTC)
    pid = running_daemon(config.state_dir)
    daemon_state = read_state(config.state_dir)
    with open_catalog(config.catalog_path) as catalog:
        jobs = job_freshness(config, catalog, now)
        replicas = replica_freshness(config, catalog, now)
        verify = check_freshness(config, catalog, "verify", now)
        drills = check_freshness(config, catalog, "drill", now)
        media = media_status(config, catalog)
        suspects = suspect_status(config, catalog)
        coverage = study_coverage_now(config, catalog)
    scheduled = any(j.schedule for j in config.jobs.values()) or any(d.schedule for d in config.drills.values())
    daemon = {"running": pid is not None, "pid": pid, "needed": scheduled,
              "started": daemon_state.get("started") if pid else None,
              "reload_error": daemon_state.get("reload_error") if pid else None}
    bad = [f for f in (*jobs, *replicas, *verify, *drills) if f.state in ("stale", "never")]
    problems = [f"{f.kind} {f.name}: {f.state}" for f in bad]
    problems += [f"medium {m['target']}/{m['label']}: stale" for m in media if m["state"] == "stale"]
    problems += [f"job {x['job']}: snapshot {x['short_id']} is SUSPECT ({x['summary']}); see docs/incident.md"
                 for x in suspects]
    if (frozen := frozen_state(config)) is not None:
        problems.append(f"incident frozen since {frozen['since']} ({frozen['reason']}): pruning and expiry paused")
    if not coverage["ok"]:
        from backupctl.verify.status import coverage_text

        problems.append(f"study coverage: {coverage_text(coverage)}")
    if scheduled and pid is None:
        problems.append("the scheduler daemon is not running")
    if daemon["reload_error"]:
        problems.append(f"the last reload was refused: {daemon['reload_error']}")
    return {"ok": not problems, "problems": problems, "daemon": daemon, "jobs": [f.as_dict() for f in jobs],
            "replicas": [f.as_dict() for f in replicas], "media": media, "verify": [f.as_dict() for f in verify],
            "drills": [f.as_dict() for f in drills], "coverage": coverage, "suspects": suspects,
            "frozen": frozen is not None, "time": now.isoformat()}



def _state_cell(state: str) -> str:
    return f"[{STATE_COLOURS.get(state, 'red')}]{state}[/]"


def _titled(title: str, *columns: str):  # noqa: ANN202 - rich.table.Table
    table = make_table(*columns)
    table.title, table.title_justify, table.title_style = title, "left", "bold"
    return table


def _freshness_table(title: str, rows: list[dict]):  # noqa: ANN202 - rich.table.Table
    table = _titled(title, "name", "last success", "age", "expected every", "state", "last run")
    for f in rows:
        last = f"{f['last_status']}" + (f": {f['last_error']}" if f["last_error"] and f["last_status"] != "success"
                                         else "") if f["last_status"] else "-"
        table.add_row(f["name"], short_time(f["last_success"]), human_age(f["age_seconds"]),
                      human_age(f["expected_seconds"]), _state_cell(f["state"]), clip(last))
    return table


def status(
    json_output: JsonOpt = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when anything is stale or the daemon is "
                                        "down (for monitoring scripts).")] = False,
) -> None:
    """One-screen overview: last success per job against its expected interval, replicas and media freshness,
    last verification and drill, and the daemon; stale items in red."""
    config = common.load()
    report = status_report(config)
    if json_output:
        print_json(report)
    else:
        _print_status(report)
    if check and not report["ok"]:
        raise typer.Exit(1)


def _print_status(report: dict[str, Any]) -> None:
    d = report["daemon"]
    if d["running"]:
        out.print(f"scheduler: [green]running[/] (pid {d['pid']}, since {short_time(d['started'])})")
    else:
        out.print("scheduler: " + ("[bold red]not running[/]" if d["needed"] else "[dim]not running[/]"))
    if d["reload_error"]:
        out.print(f"  [bold red]last reload refused[/]: {d['reload_error']}")
    out.print(_freshness_table("backups", report["jobs"]) if report["jobs"] else "no jobs configured")
    if report["replicas"]:
        out.print(_freshness_table("replicas", report["replicas"]))
    if report["media"]:
        table = _titled("offline media", "medium", "mounted", "last sync", "age", "rotation", "state")
        for m in report["media"]:
            colour = {"ok": "green", "stale": "bold red"}.get(m["state"], "yellow")
            table.add_row(f"{m['target']}/{m['label']}", "yes" if m["mounted"] else "", short_time(m["last_sync"]),
                          human_age(m["age_days"] * 86400 if m["age_days"] is not None else None),
                          f"{m['rotation_days']:g} d", f"[{colour}]{m['state']}[/]")
        out.print(table)
    for key, title in (("verify", "verification"), ("drills", "restore drills")):
        out.print(_freshness_table(title, report[key]) if report[key] else f"{title}: none recorded yet")
    c = report.get("coverage")
    if c and c["total"]:
        from backupctl.verify.status import coverage_text

        out.print(f"study coverage: {'[green]ok[/]' if c['ok'] else '[bold red]RED[/]'} ({coverage_text(c)})")
    if report["ok"]:
        out.print("[green]all fresh[/]")
    else:
        for line in report["problems"]:
            out.print(f"[bold red]![/] {line}")


# metrics ---------------------------------------------------------------------------------------------------------


def metrics(
    textfile: Annotated[Path | None, typer.Option("--textfile", help="Write atomically to this file "
                                                  "(node_exporter textfile collector) instead of stdout.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the samples as one JSON object.")] = False,
) -> None:
    """Print the Prometheus metrics (text exposition format) computed from the catalog."""
    from backupctl.metrics import render, write_textfile

    config = common.load()
    data = render(config)
    if json_output:
        from prometheus_client.parser import text_string_to_metric_families

        samples = [{"name": s.name, "labels": s.labels, "value": s.value}
                   for family in text_string_to_metric_families(data.decode()) for s in family.samples]
        if textfile is not None:
            write_textfile(textfile, data)
        print_json({"ok": True, "textfile": str(textfile) if textfile else None, "samples": samples})
        return
    if textfile is None:
        sys.stdout.write(data.decode())
    else:
        write_textfile(textfile, data)
        out.print(f"wrote {textfile}")
