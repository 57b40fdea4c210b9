"""`audit verify`, `audit show`, `audit export`, `audit forward`: the tamper-evident audit trail (docs/audit.md)."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import BackupctlError, IntegrityError, UsageError

app = typer.Typer(help="The tamper-evident audit log: verify it, show it, export it, forward it.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="Only records from this time on: an ISO date/time (UTC unless it says), or an age like "
                    "'24h', '7d', '30m'.")]


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r} is neither an ISO date/time nor an age like 24h or 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("verify")
def verify(
    offline: Annotated[bool, typer.Option("--offline", help="Skip the S3 checkpoints (no network).")] = False,
    every_checkpoint: Annotated[bool, typer.Option(
        "--all-checkpoints", help="Hold the log against every checkpoint in S3, not only the latest: catches a "
                                  "history rewritten and re-signed on this host.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Check the hash chain, the signed checkpoints and the latest checkpoint in the Object Lock bucket; name
    the first record that was edited, deleted, moved or cut. Exit code 0 only when all of it holds."""
    from backupctl.audit.verify import verify_audit

    config = common.load()
    report = verify_audit(config, use_s3=not offline, every_checkpoint=every_checkpoint)
    if json_output:
        print_json(report.as_dict())
    else:
        out.print(f"audit log {report.log}: {report.records} records")
        if report.local_checkpoint:
            out.print(f"local checkpoint: {report.local_checkpoint.get('count')} records")
        if report.s3_checkpoint:
            s3 = report.s3_checkpoint
            out.print(f"S3 checkpoint: {s3['count']} records at {s3['time']} ({s3['where']})")
        from rich.markup import escape

        for warning in report.warnings:
            out.print(f"[yellow]warning:[/] {escape(warning)}")
        for problem in report.problems:
            out.print(f"[red]BROKEN:[/] {escape(problem)}")
        if report.ok:
            out.print("[green]audit log verified: chain and checkpoints hold[/]")
    if not report.ok:
        raise IntegrityError(f"audit log does not verify: {report.problems[0]}",
                             hint="keep this copy as evidence; compare with the forwarded copy at the ATNA "
                                  "repository")


def _filtered(since: str | None, action: str | None, actor: str | None) -> tuple[Any, list[Any]]:
    from backupctl.audit.log import log_path, records

    config = common.load()
    start = parse_since(since)
    chosen = []
    for record in records(log_path(config.state_dir)):
        if start is not None and record.when < start:
            continue
        if action and not (record.action == action or record.action.startswith(action + " ")):
            continue
        if actor and record.actor != actor:
            continue
        chosen.append(record)
    return config, chosen


@app.command("show")
def show(
    since: SinceOpt = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action (and its subcommands), "
                                                                "e.g. 'restore' or 's3 expire'.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only records of this user.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most the last N records (0: all).")] = 200,
    json_output: JsonOpt = False,
) -> None:
    """Show audit records, oldest first."""
    _, chosen = _filtered(since, action, actor)
    if limit:
        chosen = chosen[-limit:]
    if json_output:
        print_json({"records": [{**r.fields(), "hash": r.hash} for r in chosen]})
        return
    from rich.markup import escape

    t = make_table("#", "time (UTC)", "actor", "action", "outcome", "ids")
    for r in chosen:
        ids = escape(" ".join(f"{k}={v}" for k, v in r.ids.items()))
        style = {"ok": "", "alert": "bold red", "failed": "red", "refused": "yellow"}.get(r.outcome, "")
        outcome = f"[{style}]{r.outcome}[/]" if style else r.outcome
        t.add_row(str(r.seq), short_time(r.time), escape(r.actor), escape(r.action), outcome, ids)
    out.print(t)


@app.command("export")
def export(
    since: SinceOpt = None,
    syslog: Annotated[bool, typer.Option("--syslog", help="RFC 5424 syslog messages carrying DICOM audit XML "
                                                          "(one per line), as forwarded to an ATNA repository.")]
    = False,
) -> None:
    """Print audit records for another system: JSON lines (default) or syslog messages (--syslog)."""
    import sys

    from backupctl.audit.syslog import message_of

    config, chosen = _filtered(since, None, None)
    for record in chosen:
        if syslog:
            sys.stdout.buffer.write(message_of(config, record) + b"\n")
        else:
            sys.stdout.buffer.write(record.line() + b"\n")
    sys.stdout.flush()


@app.command("forward")
def forward(json_output: JsonOpt = False) -> None:
    """Send the records queued while the audit repository was unreachable ([audit] forward), in order."""
    import backupctl.audit as audit

    config = common.load()
    if config.settings.audit.forward is None:
        raise UsageError("no [audit] forward destination is configured",
                         hint='set forward = "tls://host:6514" in [audit]')
    result = audit.forward(config, force=True)
    if result is None:
        raise BackupctlError("audit forwarding could not start (see the log above)")
    data = {"ok": result.ok, "destination": result.destination, "sent": result.sent, "pending": result.pending,
            "last_forwarded": result.last_seq, "error": result.error}
    if json_output:
        print_json(data)
    else:
        out.print(f"{result.destination}: {result.sent} sent, {result.pending} still queued")
    if not result.ok:
        raise BackupctlError(f"audit repository {result.destination} unreachable: {result.error}",
                             hint="the records stay queued and are sent, in order, when it answers")
