"""`incident last-clean|clear|list`: ransomware readiness (see docs/incident.md)."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import common
from backupctl.cli.common import out, print_json, short_time

app = typer.Typer(help="Ransomware incidents: suspect snapshots, the last clean snapshot.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


@app.command("list")
def list_cmd(json_output: JsonOpt = False) -> None:
    """Open suspect snapshots, with what fired."""
    from backupctl.catalog import open_catalog
    from backupctl.incident.state import suspect_status

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = suspect_status(config, catalog)
    if json_output:
        print_json({"ok": not rows, "suspects": rows})
        return
    for r in rows:
        out.print(f"[bold red]SUSPECT[/] {r['short_id']} job {r['job']} {short_time(r['time'])}: {r['summary']}")
    if not rows:
        out.print("no open suspect snapshots")


@app.command("clear")
def clear_cmd(
    snapshot: Annotated[str, typer.Argument(help="The suspect snapshot (id or unique prefix).")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is not (or no longer) an incident.")] = "",
    json_output: JsonOpt = False,
) -> None:
    """Close a suspect snapshot after investigation: retention and expiry apply again. The restic tag stays."""
    from backupctl.catalog import open_catalog
    from backupctl.incident.state import clear_suspect

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        done = clear_suspect(catalog, snapshot, reason)
    if json_output:
        print_json({"ok": True, **done})
    else:
        out.print(f"snapshot {done['snapshot'][:8]} of job {done['job']} cleared: {done['reason']}")


@app.command("last-clean")
def last_clean_cmd(
    job: Annotated[str | None, typer.Option("--job", "-j", help="The job (needed when there are several).")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Newest clean snapshot holding this study.")] = None,
    from_copy: Annotated[str | None, typer.Option("--from", help="Copy a verification run now reads: staging or "
                                                  "a target [default: staging, else the job's S3 target].")] = None,
    json_output: JsonOpt = False,
) -> None:
    """The newest snapshot before the first suspect one that passes a restore-level verification (verified
    now when it never was), with when it was taken, what verified it and which copies hold it."""
    from backupctl.incident.last_clean import last_clean

    config = common.load()
    found = last_clean(config, job, study, common.progress(json_output), copy=from_copy)
    if json_output:
        print_json(found.as_dict())
        return
    v = found.verified_by
    out.print(f"last clean snapshot of job {found.job}: [bold]{found.short_id}[/] taken {short_time(found.time)}")
    if found.first_suspect:
        out.print(f"  before the first suspect snapshot {found.first_suspect['snapshot'][:8]} "
                  f"({short_time(found.first_suspect['time'])})")
    out.print(f"  verified: restore level, run {v['run_id']}, {v['checked_files']} files"
              + (" (just now)" if v["ran_now"] else f" ({short_time(v['when'])})"))
    out.print(f"  copies: {', '.join(found.copies) or 'none recorded'}")
    for p in found.passed_over:
        out.print(f"  [yellow]passed over[/] {p['snapshot'][:8]}: {p['why']}")
    out.print(f"  restore it: backupctl restore {found.short_id} --to DIR"
              + (f" --study {found.study}" if found.study else ""))


keys_app = typer.Typer(help="The recovery kit: everything a clean machine needs besides the S3 copy.",
                       no_args_is_help=True)
PassFileOpt = Annotated[Path | None, typer.Option(
    "--passphrase-file", metavar="FILE",
    help="A 0600 file holding the kit passphrase (else the BACKUPCTL_KIT_PASSPHRASE variable).")]


@keys_app.command("export-kit")
def export_kit_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the kit (armoured text, 0600).")],
    passphrase_file: PassFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write the recovery kit, encrypted with a passphrase (scrypt + AES-256-GCM): repository password,
    signing public key, S3 coordinates and credential references, catalog location and rebuild steps."""
    from backupctl.incident.kit import export_kit, read_passphrase

    config = common.load()
    done = export_kit(config, output, read_passphrase(passphrase_file))
    if json_output:
        print_json({"ok": True, **done})
    else:
        out.print(f"wrote recovery kit {output} (targets: {', '.join(done['targets']) or 'none'}; jobs: "
                  f"{', '.join(done['jobs']) or 'none'}); print it, keep it and its passphrase apart, offline")


@keys_app.command("import-kit")
def import_kit_cmd(
    kit: Annotated[Path, typer.Argument(help="The kit file written by `keys export-kit`.")],
    to: Annotated[Path, typer.Option("--to", help="An empty folder for the new installation.")],
    passphrase_file: PassFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Open a recovery kit into an empty folder: a backupctl.toml for it, the password (0600), the public key,
    the jobs, and the steps to rebuild the catalog and restore from the S3 copy."""
    from backupctl.errors import UsageError
    from backupctl.incident.kit import import_kit, open_kit, read_passphrase

    try:
        text = kit.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the kit {kit} ({type(exc).__name__})") from None
    done = import_kit(open_kit(text, read_passphrase(passphrase_file)), to)
    if json_output:
        print_json({"ok": True, **done})
        return
    out.print(f"installation written to {done['folder']}; next, from that folder:")
    for i, step in enumerate(done["next_steps"], 1):
        out.print(f"  {i}. {step}")


@app.command("freeze")
def freeze_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the freeze).")] = "",
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job's S3 targets [default: all].")]
    = None,
    json_output: JsonOpt = False,
) -> None:
    """Contain an incident: legal holds on every object version the S3 copy holds for the job(s), and
    pruning (`forget`) and `s3 expire` paused until `thaw`."""
    from backupctl.incident.freeze import freeze

    done = freeze(common.load(), reason, job)
    if json_output:
        print_json(done)
    else:
        where = ", ".join(done["targets"]) or "no S3 target"
        out.print(f"frozen: {done['held']} object versions on legal hold in {where}; pruning and expiry paused")
        for j, snap in done["last_clean"].items():
            out.print(f"  job {j}: newest snapshot before any suspect one: {snap[:8] if snap else 'none'}")
    if done["failures"]:
        from backupctl.errors import PartialRun

        raise PartialRun(f"{len(done['failures'])} legal holds could not be set (first: {done['failures'][0]})")


@app.command("thaw")
def thaw_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why the incident is over (recorded).")] = "",
    json_output: JsonOpt = False,
) -> None:
    """Lift the legal holds of `freeze` and let pruning and expiry run again."""
    from backupctl.incident.freeze import thaw

    done = thaw(common.load(), reason)
    if json_output:
        print_json(done)
    else:
        out.print(f"thawed: {done['lifted']} legal holds lifted; pruning and expiry run again")


@app.command("recover")
def recover_cmd(
    job: Annotated[str, typer.Option("--job", "-j", help="The job to recover.")],
    to: Annotated[Path, typer.Option("--to", help="An empty folder to restore into.")],
    from_target: Annotated[str | None, typer.Option("--from", help="The S3 target to read [default: the job's "
                                                    "first S3 target].")] = None,
    rto_minutes: Annotated[float, typer.Option("--rto-minutes", min=0.1, help="The recovery time objective the "
                                               "report measures against.")] = 60,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where the reports go [default: "
                                                    "<state>/incident/recovery-TIME].")] = None,
    to_pacs: Annotated[str | None, typer.Option("--to-pacs", metavar="URL", help="Then send the verified DICOM "
                                                "files to this Orthanc (REST).")] = None,
    pacs_credentials: Annotated[Path | None, typer.Option(
        "--pacs-credentials", metavar="FILE", envvar="BACKUPCTL_PACS_CREDENTIALS_FILE",
        help="'username:password' file (0600) for --to-pacs; or set BACKUPCTL_PACS_CREDENTIALS.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """The runbook as one command: the newest clean snapshot from the immutable S3 copy (never staging),
    restored into --to, verified against its signed manifest, optionally sent to a PACS, with a signed
    recovery report and a post-incident review skeleton."""
    import os

    from backupctl.errors import NoCleanSnapshot, PartialRun, UsageError
    from backupctl.incident.recover import recover_incident

    creds = None
    if to_pacs is not None:
        if "@" in to_pacs.split("//", 1)[-1].split("/", 1)[0]:
            raise UsageError("--to-pacs URL must not carry credentials (they would sit in the process list)",
                             hint="put 'username:password' in a 0600 file and pass --pacs-credentials FILE")
        from backupctl.pacs.orthanc import read_credentials

        from_env = pacs_credentials is None and bool(os.environ.get("BACKUPCTL_PACS_CREDENTIALS"))
        creds = read_credentials(pacs_credentials, "BACKUPCTL_PACS_CREDENTIALS" if from_env else None)
    config = common.load()
    rec = recover_incident(config, job, to, copy=from_target, rto_minutes=rto_minutes, report_dir=report_dir,
                           progress=common.progress(json_output), pacs_url=to_pacs, pacs_credentials=creds)
    data = rec.as_dict()
    if json_output:
        print_json(data)
    else:
        state = "recovered" if rec.ok else "[bold red]NOT recovered[/]"
        out.print(f"{state}: job {job}, snapshot {(rec.snapshot or '-')[:8]} from {rec.copy} into {rec.to}: "
                  f"{rec.files} files verified in {data['seconds']:.1f} s "
                  f"({'within' if data['within_rto'] else 'over'} the RTO of {rto_minutes:g} min)")
        for p in rec.phases:
            out.print(f"  {p.name:8} {p.seconds:8.1f} s  {p.detail}")
        for s in rec.skipped:
            out.print(f"  [yellow]skipped[/] {s['snapshot'][:8]}: {s['why']}")
        if rec.pacs:
            out.print(f"  sent to {rec.pacs['url']}: {rec.pacs['sent']} of {rec.pacs['dicom_files']} DICOM files "
                      f"accepted ({rec.pacs['stored']} stored, {rec.pacs['already']} already there)")
        out.print(f"  report: {rec.reports['md']} (signed; check with `backupctl drill report --verify FILE`)")
        out.print(f"  post-incident review to fill in: {rec.reports['review']}")
    if rec.pacs and rec.pacs["rejected"]:
        first = rec.pacs["rejected"][0]
        raise PartialRun(f"recovered and verified, but the PACS refused {len(rec.pacs['rejected'])} files "
                         f"(first: {first['file']}: {first['reason']})")
    if not rec.ok:
        raise NoCleanSnapshot(f"no clean snapshot of job {job} could be restored and verified from {rec.copy} "
                              f"({len(rec.skipped)} tried)", hint="see the report; try offline media")
