"""`drill run`, `drill list`, `drill show`, `drill report`: restore drills and their signed reports."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json, short_time
from backupctl.errors import DrillFailed, ReportError, UsageError

if TYPE_CHECKING:
    from backupctl.config import Config
    from backupctl.drills.model import DrillResult

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

app = typer.Typer(help="Restore drills: prove on a schedule that the archive comes back, and how fast.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Drill name (restore_drills/NAME.toml).")],
    seed: Annotated[int | None, typer.Option("--seed", help="Repeat the random choices of an earlier drill.")] = None,
    job: Annotated[str | None, typer.Option("--job", "-j", help="Drill this job's snapshots ('latest' is per "
                                                                "job) [default: the drill's job].")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Restore from the drill's copy, verify against the signed manifest, time every phase against the RTO.
    Exits 1 when a check fails or the RTO is missed."""
    from backupctl.actions.drill import run_drill

    config = common.load()
    result = run_drill(config, name, common.progress(json_output), seed=seed, job=job)
    if json_output:
        print_json({**result.as_dict(), "ok": result.passed})
    else:
        _print_result(result)
    if not result.passed:
        raise DrillFailed(f"drill {name} (#{result.run_id}) failed: " + ("; ".join(result.first_failures())
                          or result.error or "see `backupctl drill show`"),
                          hint=f"details: backupctl drill show {result.run_id}", drill_id=result.run_id)


def _print_result(r: "DrillResult") -> None:
    from backupctl.drills.report import recovery_text, rto_text

    word = "[green]passed[/]" if r.passed else "[red]FAILED[/]"
    snap = (r.snapshot_id or "-")[:8]
    out.print(f"drill {r.name} #{r.run_id} {word}: snapshot {snap} from {r.copy}, scope {r.scope}, depth {r.depth}, "
              f"seed {r.seed}")
    table = common.table("phase", "status", "seconds", "files", "MB/s", "files/s")
    for p in r.phases:
        table.add_row(p.name, p.status,
                      f"{p.seconds:.2f}" if p.status != "skipped" else "-", str(p.files or "-"),
                      f"{p.mb_per_second:.1f}" if p.mb_per_second else "-",
                      f"{p.files_per_second:.0f}" if p.files_per_second else "-")
    out.print(table)
    for c in r.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {c.name:<9} {c.detail}")
    if r.first_study_seconds is not None:
        out.print(f"first study restored and verified after {r.first_study_seconds:.1f} s")
    d = r.as_dict()
    d.update(rto_seconds=r.rto_seconds)
    out.print(f"recovery {recovery_text(d)}; RTO {rto_text(d)}")
    if r.error:
        out.print(f"[red]error:[/] {r.error}")


@app.command("list")
def list_(
    defined: Annotated[bool, typer.Option("--defined", help="List the drill definitions instead of runs.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Only this drill.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
    json_output: JsonOpt = False,
) -> None:
    """Recent drills with their result (or, with --defined, the drill definitions and their last result)."""
    from backupctl.catalog import drills as drill_rows
    from backupctl.catalog import open_catalog
    from backupctl.drills.report import recovery_text, rto_text

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        if defined:
            rows = [_definition(d, drill_rows.last_drill(catalog, d.name)) for d in config.drills.values()]
        else:
            rows = drill_rows.list_drills(catalog, name=name, limit=limit)
    if json_output:
        print_json(rows)
        return
    if defined:
        table = common.table("drill", "job", "copy", "snapshot", "scope", "depth", "RTO", "schedule", "last")
        for r in rows:
            table.add_row(r["name"], r["job"], r["copy_from"], r["snapshot"], r["scope"], r["depth"],
                          f"{r['rto_minutes']:g} min", r["schedule"] or "-", r["last"])
        out.print(table if rows else "no drills defined (add restore_drills/NAME.toml)")
        return
    table = common.table("id", "started", "drill", "copy", "snapshot", "scope", "result", "recovery", "RTO")
    for r in rows:
        table.add_row(str(r["id"]), short_time(r["started"]), r["name"], r["copy"], (r["snapshot_id"] or "-")[:8],
                      r["scope"], _status_word(r), recovery_text(r), rto_text(r))
    out.print(table if rows else "no drills yet (run one with `backupctl drill run NAME`)")


def _status_word(r: dict[str, Any]) -> str:
    if r["status"] in ("running", "interrupted"):
        return r["status"]
    return "[green]passed[/]" if r.get("passed") else "[red]failed[/]"


def _definition(drill: Any, last: dict[str, Any] | None) -> dict[str, Any]:
    data = drill.model_dump(mode="json")
    if last is None:
        data["last"] = "never run"
    else:
        data["last"] = f"#{last['id']} {short_time(last['started'])} " + (
            "passed" if last.get("passed") else last["status"] if last["status"] != "success" else "failed")
    return data


@app.command("show")
def show(
    drill_id: Annotated[int, typer.Argument(help="Drill id (from `drill list`).")],
    json_output: JsonOpt = False,
) -> None:
    """One drill: phases with durations and throughput, every check, what failed, which studies."""
    from backupctl.catalog import drills as drill_rows
    from backupctl.catalog import open_catalog
    from backupctl.drills.model import hours_text
    from backupctl.drills.report import recovery_point, recovery_text, rpo_text, rto_text

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        d = drill_rows.get_drill(catalog, drill_id)
    if d is None:
        raise UsageError(f"no drill #{drill_id}", hint="list them with `backupctl drill list`")
    d.update(recovery_point(d))
    if json_output:
        print_json(d)
        return
    out.print(f"drill #{d['id']} {d['name']} ({d['status']}, {'passed' if d.get('passed') else 'failed'}), "
              f"started {short_time(d['started'])} on {d['host']}")
    out.print(f"  job {d['job']}, copy {d['copy']}, snapshot {d['snapshot_id'] or '-'} ({d['snapshot_rule']}), "
              f"scope {d['scope']}, depth {d['depth']}, seed {d['seed']}")
    out.print(f"  restored {d['files'] or 0} files, {human_bytes(d['bytes'])} of {d['archive_files'] or '?'} files, "
              f"{human_bytes(d['archive_bytes'])} in the snapshot")
    out.print(f"  recovery {recovery_text(d)}; RTO {rto_text(d)}; first study after "
              f"{d['first_study_seconds']:.1f} s" if d.get("first_study_seconds") is not None else
              f"  recovery {recovery_text(d)}; RTO {rto_text(d)}")
    out.print(f"  recovery point: restored data {rpo_text(d)}"
              + (f"; the job's newest snapshot was {hours_text(d['job_newest_age_seconds'])} old"
                 if d.get("job_newest_age_seconds") is not None else ""))
    for w in d["warnings"]:
        out.print(f"  [yellow]warning:[/] {w}")
    table = common.table("phase", "status", "seconds", "files", "bytes", "MB/s")
    for p in d["phases"]:
        table.add_row(p["name"], p["status"], f"{p['seconds']:.3f}", str(p["files"]), human_bytes(p["bytes"]),
                      f"{p['mb_per_second']:.1f}" if p["mb_per_second"] else "-")
    out.print(table)
    for c in d["checks"]:
        mark = "[green]ok[/]  " if c["status"] != "fail" else "[red]FAIL[/]"
        out.print(f"  {mark} {c['name']:<9} {c['detail']}")
    for p in d["problems"]:
        out.print(f"  {p['severity']}: {p['path'] or '-'}: {p['kind']} ({p['detail']})")
    if d["studies"]:
        out.print("studies: " + ", ".join(f"{s['study_uid']}{'' if s['ok'] else ' (FAILED)'}" for s in d["studies"]))
    if d.get("error"):
        out.print(f"[red]error:[/] {d['error']}")
    if not d.get("scratch_removed") and d["status"] != "running":
        out.print(f"[yellow]scratch {d['scratch']} was not removed[/]")


def parse_since(text: str | None) -> str | None:
    """'2024-05-01', an ISO date-time, or a relative age like '30d' / '12h' as a UTC ISO bound."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)([dhw])", text.strip())
    if m:
        unit = {"d": "days", "h": "hours", "w": "weeks"}[m[2]]
        return (datetime.now(UTC) - timedelta(**{unit: int(m[1])})).isoformat(timespec="microseconds")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date", hint="use 2024-05-01, 2024-05-01T08:00 or 30d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@app.command("report")
def report(
    since: Annotated[str | None, typer.Option("--since", help="Drills since DATE (2024-05-01) or age (30d) "
                                              "[default: all; with --mail, [report] period_days].")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, json or md.")] = "html",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: html under "
                                                "<state>/reports, json/md to stdout).")] = None,
    verify: Annotated[Path | None, typer.Option("--verify", help="Check a report file: its .sig beside it and the "
                                                "signature inside it. Needs no configuration with --public-key.")]
    = None,
    public_key: Annotated[Path | None, typer.Option("--public-key", help="Trusted public key (PEM) for --verify "
                                                    "(default: the .pub beside the configured signing key).")]
    = None,
    pdf: Annotated[bool | None, typer.Option("--pdf/--no-pdf", help="Also print an HTML report to PDF beside it "
                                             "(chromium, headless) [default: [report] pdf]")] = None,
    mail: Annotated[bool, typer.Option("--mail", help="Mail the HTML report, its PDF, signatures and public key "
                                       "to [report] email_to (or --to) through [smtp].")] = False,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient for --mail (repeatable).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """A signed report of the drills: HTML (charts, no network needed), JSON or Markdown. A report written to
    a file gets a detached signature (FILE.sig) and the public key (PEM) beside it, checkable with openssl."""
    from backupctl.drills.report import FORMATS

    if verify is not None:
        _verify(verify, public_key, json_output)
        return
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "html" and (pdf or mail):
        raise UsageError("--pdf and --mail take the HTML report", hint="use --format html")
    bound = parse_since(since)
    config = common.load()
    if fmt != "html":
        _report_text(config, bound, fmt, output, json_output)
        return
    from backupctl.drills.delivery import mail_report, make_report

    made = make_report(config, since=bound, output=output, pdf=pdf, period=mail)
    published = made.published
    delivery = mail_report(config, made, to or None) if mail else None
    if json_output:
        print_json({"ok": delivery is None or delivery.ok, "drills": len(made.data["drills"]),
                    "verdict": made.data["verdict"], **published.as_dict(),
                    "mailed": None if delivery is None else delivery.ok})
    else:
        out.print(f"wrote {published.report} ({len(made.data['drills'])} drill(s)), its signature "
                  f"{published.signature.name} and the public key {published.public_key}")
        if published.pdf:
            out.print(f"printed {published.pdf} and signed it ({published.pdf.name}.sig)")
        out.print(f"key {published.key_id}, SHA-256 fingerprint {published.fingerprint}")
        out.print(f"check with: {published.openssl_command()}")
        out.print(f"verdict: {made.data['verdict']}")
        if delivery is not None and delivery.ok:
            out.print(f"mailed through {delivery.destination}")
    if delivery is not None and not delivery.ok:
        raise ReportError(f"the report was written but not mailed ({delivery.destination}: {delivery.error})")


@app.command("key")
def key(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the PEM here (default: stdout).")]
    = None,
    json_output: JsonOpt = False,
) -> None:
    """The public key reports are checked with: its PEM and SHA-256 fingerprint, to hand to auditors (the
    fingerprint by another way than the reports themselves)."""
    from backupctl.fsutil import atomic_write_bytes
    from backupctl.signing import fingerprint, public_key_pem
    from backupctl.verify.snapshot_manifest import trusted_key

    trusted = trusted_key(common.load())
    pem = public_key_pem(trusted)
    if output is not None:
        atomic_write_bytes(output, pem)
    if json_output:
        print_json({"ok": True, "key_id": trusted.key_id, "fingerprint_sha256": fingerprint(trusted),
                    "pem": pem.decode("ascii"), "output": str(output) if output else None})
        return
    line = f"key {trusted.key_id}, SHA-256 fingerprint {fingerprint(trusted)}"
    if output is None:   # the PEM alone on stdout, so it can be redirected; the fingerprint beside it
        sys.stdout.write(pem.decode("ascii"))
        sys.stdout.flush()
        common.err.print(line)
    else:
        out.print(f"{line}, written to {output}")


def _report_text(config: "Config", since: str | None, fmt: str, output: Path | None, json_output: bool) -> None:
    """A JSON or Markdown report: to stdout, or to a file with its signature and the public key beside it."""
    from backupctl.catalog import open_catalog
    from backupctl.drills.delivery import job_targets
    from backupctl.drills.publish import publish
    from backupctl.drills.report import report_data, signed_report
    from backupctl.verify.snapshot_manifest import signing_key
    from backupctl.verify.status import study_coverage_now

    key = signing_key(config)
    settings = config.settings.report
    with open_catalog(config.catalog_path) as catalog:
        data = report_data(catalog, since=since, key=key.verify_key, site=settings.site, owner=settings.owner,
                           coverage=study_coverage_now(config, catalog), jobs=job_targets(config))
    content = signed_report(data, fmt, key)
    if output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    published = publish(output, content, key)
    if json_output:
        print_json({"ok": True, "drills": len(data["drills"]), **published.as_dict()})
        return
    out.print(f"wrote {output} ({len(data['drills'])} drill(s)), its signature {published.signature.name} and the "
              f"public key {published.public_key}")
    out.print(f"key {published.key_id}, SHA-256 fingerprint {published.fingerprint}")
    out.print(f"check with: {published.openssl_command()}")


def _verify(path: Path, public_key: Path | None, json_output: bool) -> None:
    from backupctl.drills.publish import verify_file
    from backupctl.signing import load_verify_key

    if public_key is not None:
        trusted = load_verify_key(public_key)
    else:
        from backupctl.errors import ConfigError
        from backupctl.verify.snapshot_manifest import trusted_key

        try:
            config = common.load()
        except ConfigError as exc:
            raise UsageError(f"no trusted key to check {path.name} with: no --public-key, and no configuration "
                             f"({exc.message})", hint="pass --public-key KEY.pem, the key whose fingerprint "
                             "you were given") from None
        trusted = trusted_key(config)
    checked = verify_file(path, trusted)
    if json_output:
        print_json({"ok": True, **checked.as_dict()})
        return
    how = " and ".join(w for w, ok in (("detached .sig", checked.detached), ("embedded", checked.embedded)) if ok)
    out.print(f"{path}: signature OK ({checked.format}, {how}; key {checked.key_id}, SHA-256 fingerprint "
              f"{checked.fingerprint}" + (f", generated {checked.generated}" if checked.generated else "") + ")")
