"""`verify`, `verify --status`, `catalog rebuild`."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import CoverageStale, IntegrityError
from backupctl.verify.findings import ERROR, LEVELS, WARNING, LevelResult

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

catalog_app = typer.Typer(help="Maintain the catalog.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
PublicKeyOpt = Annotated[Path | None, typer.Option(
    "--public-key", help="Trusted public key for manifests [default: the .pub beside [signing] key_file].")]
SHOWN_FINDINGS = 20


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.add_typer(catalog_app, name="catalog")


def verify(
    level: Annotated[list[str] | None, typer.Option(
        "--level", "-l", help=f"Level to run (repeatable): {', '.join(LEVELS)} [default: all].")] = None,
    status: Annotated[bool, typer.Option("--status", help="Show coverage: the oldest unverified age per kind "
                                                          "against [verify] max_unverified_days.")] = False,
    snapshot: Annotated[str, typer.Option("--snapshot", help="restore: snapshot id or 'latest'.")] = "latest",
    job: Annotated[str | None, typer.Option("--job", "-j", help="restore: the job whose latest snapshot.")] = None,
    copy: Annotated[str, typer.Option("--from", help="restore: copy to read (staging or a target).")] = "staging",
    sample: Annotated[int | None, typer.Option(
        "--sample", help="restore: this many studies, verified longest ago first (0: all) "
                         "[default: [verify] sample_studies].", min=0)] = None,
    study: Annotated[list[str] | None, typer.Option("--study", help="restore: only this study (repeatable).")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="replicas: only this target.")] = None,
    public_key: PublicKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Verify the backups: repository structure and a rotating slice of its data (repo), every replica object
    (replicas), a restore checked against the snapshot's signed manifest with a full DICOM parse (restore).
    Exit code 0 only when everything checked held."""
    from backupctl.verify.run import VerifyOptions, run_verify

    config = common.load()
    if status:
        _status(config, json_output)
        return
    if job is not None:
        config.job(job)
    elif snapshot == "latest" and "restore" in (level or list(LEVELS)):
        from backupctl.actions.find import pick_job

        job = pick_job(config, None)   # 'latest' is per job: several jobs need --job
    options = VerifyOptions(snapshot=snapshot, job=job, copy=copy, sample=sample, studies=study or None,
                            public_key=public_key, targets=target or None)
    report = run_verify(config, level or list(LEVELS), options, common.progress(json_output))
    if json_output:
        print_json(report.as_dict())
    else:
        _print_report(report.results)
        verdict = "[green]verified: everything checked held[/]" if report.ok else "[red]verification FAILED[/]"
        out.print(f"{verdict} ({report.seconds:.1f} s)")
    if not report.ok:
        raise IntegrityError(f"verification failed: {report.first_failures()}",
                             hint="see `backupctl verify --json` or `backupctl runs` for every finding")


def _rate(r: LevelResult) -> str:
    if r.seconds <= 0 or not r.checked:
        return ""
    unit = {"repo": "packs", "replicas": "objects"}.get(r.level, "files")
    return f"{r.checked / r.seconds:.0f} {unit}/s, {r.bytes / r.seconds / 1e6:.1f} MB/s"


DETAIL_KEYS = ("snapshot", "scope", "dicom_parsed", "decoded", "slice", "packs_total", "packs_never_read", "location")


def _print_report(results: list[LevelResult]) -> None:
    from rich.markup import escape

    table = make_table("level", "subject", "checked", "size", "seconds", "errors", "warnings", "result")
    for r in results:
        verdict = "[yellow]skipped[/]" if r.skipped else ("[green]ok[/]" if r.ok else "[red]FAILED[/]")
        subject = str(r.figures.get("snapshot") or r.subject)
        table.add_row(r.level, escape(subject[:24]), str(r.checked), human_bytes(r.bytes), f"{r.seconds:.1f}",
                      str(len(r.errors)), str(len(r.warnings)), verdict)
    out.print(table)
    for r in results:
        if r.skipped:
            out.print(f"  {r.level} {escape(r.subject)}: skipped: {escape(r.skipped)}")
            continue
        details = [_rate(r)] + [f"{k.replace('_', ' ')} {v}" for k, v in r.figures.items()
                                if k in DETAIL_KEYS and v is not None]
        if r.figures.get("no_decoder"):     # a gap in the checks, named: not a fault of the files
            details.append("not decoded, no decoder installed: " + ", ".join(r.figures["no_decoder"]))
        out.print(f"  {r.level}: " + "; ".join(d for d in details if d))
        shown = [f for f in r.findings if f.severity in (ERROR, WARNING)][:SHOWN_FINDINGS]
        for f in shown:
            colour = "red" if f.severity == ERROR else "yellow"
            out.print(f"    [{colour}]{f.severity}[/] {escape(f.line())}")
        hidden = sum(1 for f in r.findings if f.severity in (ERROR, WARNING)) - len(shown)
        if hidden > 0:
            out.print(f"    … and {hidden} more (all are in the catalog: `backupctl verify --json`)")


def _status(config: Any, json_output: bool) -> None:
    from backupctl.catalog import open_catalog
    from backupctl.verify.status import coverage_status

    with open_catalog(config.catalog_path) as catalog:
        status = coverage_status(config, catalog)
    if json_output:
        print_json(status)
    else:
        table = make_table("what", "total", "never", "failed", "oldest unverified", "bound", "status")
        for c in status["coverage"]:
            age = "never" if c["never_verified"] and c["what"] == "replicas" else (
                "-" if c["oldest_unverified_days"] is None else f"{c['oldest_unverified_days']:.1f} days")
            table.add_row(c["what"], str(c["total"]), str(c["never_verified"]), str(c["last_failed"]), age,
                          f"{c['bound_days']:g} days",
                          "[green]ok[/]" if c["ok"] else "[red]FAILED[/]" if c["last_failed"] else "[red]STALE[/]")
        out.print(table)
        for level, last in status["last"].items():
            when = f"{short_time(last['when'])} ({'ok' if last['ok'] else 'FAILED'})" if last else "never"
            out.print(f"  last verify {level}: {when}")
    if not status["ok"]:
        stale = [c["what"] for c in status["coverage"] if not c["ok"]]
        raise CoverageStale(f"unverified for longer than {status['bound_days']:g} days, or last check failed: "
                            f"{', '.join(stale)}", hint="run `backupctl verify`")


@catalog_app.command("rebuild")
def rebuild(
    source: Annotated[str, typer.Option("--from", help="Copy to read: staging or a target name.")],
    to: Annotated[Path | None, typer.Option("--to", help="Write the catalog here [default: [catalog] path].")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing catalog (kept aside, renamed).")]
    = False,
    public_key: PublicKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Rebuild snapshots, manifests and the study index from a repository alone (signatures checked)."""
    from rich.markup import escape

    from backupctl.verify.rebuild import rebuild_catalog

    config = common.load()
    if source != "staging":
        config.target(source)
    report = rebuild_catalog(config, source, to=to, replace=replace, public_key=public_key,
                             progress=common.progress(json_output))
    if json_output:
        print_json(report.as_dict())
    else:
        out.print(f"rebuilt {report.catalog} from {source}: {report.snapshots} snapshots, {report.manifests} "
                  f"signed manifests, {report.studies} studies in {report.seconds:.1f} s")
        if report.kept_aside:
            out.print(f"  the previous catalog is kept as {report.kept_aside}")
        for p in report.problems:
            out.print(f"  [yellow]warning[/] {escape(p)}")
    if report.problems:
        raise IntegrityError(f"catalog rebuilt, but {len(report.problems)} snapshot(s) could not be indexed: "
                             f"{report.problems[0]}")
