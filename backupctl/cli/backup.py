"""`backup run`, `replicate`, `snapshots`, `restore`, `runs`, `unlock`."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import common
from backupctl.cli import find as find_cmds
from backupctl.cli.common import human_bytes, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import IntegrityError, PartialRun, SuspectSnapshot, TargetError, UsageError

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

backup_app = typer.Typer(help="Run backups.", no_args_is_help=True)
snapshots_app = typer.Typer(help="List the snapshots the catalog knows; `show ID` for one.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("replicate")(replicate)
    snapshots_app.callback(invoke_without_command=True)(snapshots)
    snapshots_app.command("show")(find_cmds.show)
    app.add_typer(snapshots_app, name="snapshots")
    app.command("restore")(restore)
    app.command("runs")(runs)
    app.command("unlock")(unlock)
    app.command("forget")(forget)


@backup_app.command("run")
def backup_run(
    job: Annotated[str, typer.Argument(help="Job name (jobs/NAME.toml).")],
    no_replicate: Annotated[bool, typer.Option("--no-replicate", help="Skip copying to the job's targets.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Snapshot a job's sources into the staging repository, then replicate to its targets."""
    from backupctl.actions.backup import run_backup

    config = common.load()
    outcome = run_backup(config, job, common.progress(json_output), replicate=not no_replicate)
    if json_output:
        data = asdict(outcome)
        data["ok"] = outcome.replicated_ok
        print_json(data)
    else:
        out.print(f"snapshot {outcome.short_id} of job {job}: {outcome.files} files, {human_bytes(outcome.bytes)}, "
                  f"{human_bytes(outcome.bytes_added)} new, {outcome.seconds:.1f} s")
        if outcome.safe_excludes:
            out.print(f"  excluded by backupctl (system root source): {', '.join(outcome.safe_excludes)}")
        if (m := outcome.manifest) and "error" not in m:
            changed = f", [yellow]{m['changed_during_backup']} changed during backup[/]" \
                if m["changed_during_backup"] else ""
            rate = f", {m['mb_per_second']} MB/s" if m["hashed"] else ""
            out.print(f"  signed manifest: {m['files']} files ({m['hashed']} read, {m['reused']} unchanged), "
                      f"{m['dicom']} DICOM in {m['studies']} studies{rate}{changed}")
        for r in outcome.replicas:
            if r.ok and r.report:
                out.print(f"  {r.target} ({r.report.location}): {r.report.uploaded} files copied, "
                          f"{human_bytes(r.report.uploaded_bytes)}, {r.report.skipped} already there")
        if outcome.pacs:
            out.print(f"  orthanc: down {outcome.pacs['downtime_seconds'] or 0:.1f} s for the copy "
                      f"({outcome.pacs['storage_files']} storage files, "
                      f"{outcome.pacs['linked_while_stopped']} linked while stopped)")
        if outcome.suspect and outcome.suspect["suspect"]:
            out.print(f"  [bold red]SUSPECT[/]: {outcome.suspect['summary']}")
            for s in outcome.suspect["signals"]:
                if s["fired"]:
                    out.print(f"    {s['name']}: {s['count']}, e.g. " + ", ".join(s["examples"]))
    failed = [r for r in outcome.replicas if not r.ok]
    if outcome.is_suspect:
        also = "; replication failed too" if failed else ""
        raise SuspectSnapshot(f"snapshot {outcome.short_id} is kept but SUSPECT: {outcome.suspect['summary']}"  # type: ignore[index]
                              f"{also}", hint="see docs/incident.md; `backupctl incident last-clean`")
    if outcome.hook_errors:
        raise PartialRun(f"snapshot {outcome.short_id} is saved, but " + "; ".join(outcome.hook_errors))
    if failed:
        raise TargetError(f"snapshot {outcome.short_id} is saved in staging, but replication failed: "
                          + "; ".join(f"{r.target}: {r.error}" for r in failed))


def replicate(
    job: Annotated[str | None, typer.Argument(help="Replicate to this job's targets.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every target of every job.")] = False,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Only this target (repeatable).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Copy the staging repository's new files to targets (offline media, S3); resumable."""
    from backupctl.actions.replicate import replicate_to
    from backupctl.catalog import open_catalog

    config = common.load()
    if job is None and not all_jobs and not target:
        raise UsageError("name a job, --target NAME or --all")
    names = list(target or [])
    if not names:
        jobs = config.jobs.values() if all_jobs else [config.job(job)]  # type: ignore[arg-type]
        names = sorted({t for j in jobs for t in j.targets})
    with open_catalog(config.catalog_path) as catalog:
        outcomes = [replicate_to(config, catalog, name, common.progress(json_output), job=job or "-")
                    for name in names]
    if json_output:
        print_json({"ok": all(o.ok for o in outcomes), "targets": [o.as_dict() for o in outcomes]})
    else:
        for o in outcomes:
            if o.ok and o.report:
                out.print(f"{o.target} ({o.report.location}): {o.report.uploaded} files copied "
                          f"({human_bytes(o.report.uploaded_bytes)}), {o.report.skipped} already there")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise TargetError("; ".join(f"{o.target}: {o.error}" for o in failed))


def snapshots(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List the snapshots the catalog knows, with where each replica lives; `snapshots show ID --studies`
    lists one snapshot's studies."""
    if ctx.invoked_subcommand is not None:
        return
    from backupctl.catalog import open_catalog
    from backupctl.catalog import snapshots as snapshot_rows

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = snapshot_rows.list_snapshots(catalog, job)
    if json_output:
        print_json(rows)
        return
    table = make_table("id", "job", "time", "files", "size", "status", "replicas")
    for r in rows:
        table.add_row(r["short_id"], r["job"], short_time(r["time"]), str(r["files"]), human_bytes(r["size"]),
                      r["status"], ", ".join(f"{x['target']}:{x['location']}" for x in r["replicas"]) or "-")
    out.print(table if rows else "no snapshots yet")


def restore(
    snapshot: Annotated[str | None, typer.Argument(
        help="Snapshot id (or unique prefix), or 'latest'; with --study, default the newest holding it.")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Empty folder to restore into (with --to-pacs: "
                                                          "keep the files there).")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Only this path (repeatable).")] = None,
    study: Annotated[list[str] | None, typer.Option(
        "--study", help="Only this study's files (Study Instance UID, repeatable), verified after restore.")] = None,
    from_target: Annotated[str, typer.Option("--from", help="Copy to read: staging or a target name.")] = "staging",
    force: Annotated[bool, typer.Option("--force", help="Restore into a non-empty folder.")] = False,
    to_pacs: Annotated[str | None, typer.Option("--to-pacs", metavar="URL",
                                                help="Send the DICOM files to this Orthanc (REST), e.g. "
                                                     "http://127.0.0.1:8042.")] = None,
    pacs_credentials: Annotated[Path | None, typer.Option(
        "--pacs-credentials", metavar="FILE", envvar="BACKUPCTL_PACS_CREDENTIALS_FILE",
        help="'username:password' file (0600) for --to-pacs; or set BACKUPCTL_PACS_CREDENTIALS.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=32,
                                             help="Parallel uploads for --to-pacs.")] = 4,
    to_dicom: Annotated[str | None, typer.Option("--to-dicom", metavar="AET@HOST:PORT",
                                                 help="Send the DICOM files to any PACS over DICOM networking "
                                                      "(C-STORE, storage commitment, C-FIND query-back).")] = None,
    calling_aet: Annotated[str, typer.Option("--calling-aet", help="Our AE title for --to-dicom.")] = "BACKUPCTL",
    commitment: Annotated[bool, typer.Option("--commitment/--no-commitment",
                                             help="Ask the PACS for storage commitment (--to-dicom).")] = True,
    commitment_port: Annotated[int | None, typer.Option(
        "--commitment-port", min=1, max=65535,
        help="Port our AE listens on for the PACS's commitment report on a new association (the PACS must "
             "know it for --calling-aet).")] = None,
    commitment_timeout: Annotated[float, typer.Option("--commitment-timeout", min=1,
                                                      help="Seconds to wait for the commitment report.")] = 60.0,
    query_back: Annotated[bool, typer.Option("--query-back/--no-query-back",
                                             help="C-FIND each restored study on the PACS (--to-dicom).")] = True,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", metavar="FILE",
                                                help="DICOM TLS for --to-dicom: the CA (PEM) the PACS's "
                                                     "certificate must chain to.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", metavar="FILE",
                                                  help="DICOM TLS: our certificate (PEM), for a PACS that "
                                                       "asks for one.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE",
                                                 help="DICOM TLS: the key of --tls-cert (PEM, 0600).")] = None,
    as_orthanc: Annotated[Path | None, typer.Option("--as-orthanc", metavar="DIR",
                                                    help="Lay out a whole Orthanc (config, index, storage) "
                                                         "from a snapshot of an orthanc source.")] = None,
    patient_id: find_cmds.PatientIdOpt = None,
    accession: find_cmds.AccessionOpt = None,
    study_date: find_cmds.StudyDateOpt = None,
    modality: find_cmds.ModalityOpt = None,
    patient_name: find_cmds.PatientNameOpt = None,
    job: find_cmds.JobOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be restored, how many bytes, from "
                                                            "which copy and how long the last drills of "
                                                            "that copy suggest; restore nothing.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Restore a snapshot (all of it, --include paths, --study UIDs, or the studies found by --patient-id,
    --accession, --study-date, --modality, --patient-name) from staging or a replica: into a folder, into a
    running PACS (--to-pacs), or as a ready-to-start Orthanc (--as-orthanc)."""
    from backupctl.actions.find import StudyQuery

    query = StudyQuery(patient_id, accession, study_date, modality, patient_name)
    if sum(x is not None for x in (to_pacs, to_dicom, as_orthanc)) > 1 or (as_orthanc and to):
        raise UsageError("choose one of --to, --to-pacs/--to-dicom (optionally with --to) and --as-orthanc")
    if to is None and to_pacs is None and to_dicom is None and as_orthanc is None and not dry_run:
        raise UsageError("say where to restore: --to DIR, --to-pacs URL, --to-dicom AET@HOST:PORT or "
                         "--as-orthanc DIR")
    if study or query.given():
        if study and query.given():
            raise UsageError("give --study UIDs or search criteria (--patient-id, ...), not both")
        if to_pacs or to_dicom or as_orthanc or (to is None and not dry_run):
            raise UsageError("a study restore goes into a folder: give --to DIR (without --to-pacs, --to-dicom "
                             "or --as-orthanc)")
        restore_study_cmd(snapshot, to, study or [], from_target, force, json_output, query=query, job=job,
                          dry_run=dry_run)
        return
    if snapshot is None:
        raise UsageError("name the snapshot to restore (an id, or 'latest'), or give --study UID or "
                         "search criteria (--patient-id, --accession, ...)")
    from backupctl.actions.restore import restore_snapshot

    config = common.load()
    progress = common.progress(json_output)
    if snapshot == "latest":   # per job: several jobs need --job
        from backupctl.actions.find import pick_job

        job = pick_job(config, job)
    if to_dicom is not None:
        from backupctl.pacs.dimse import DicomTarget

        DicomTarget.parse(to_dicom)          # bad input: say so before touching the repository
    if dry_run or (snapshot == "latest" and (to_pacs or to_dicom or as_orthanc) is not None):
        from backupctl.actions.find import plan_restore, resolve_snapshot
        from backupctl.catalog import open_catalog

        with open_catalog(config.catalog_path) as catalog:
            snapshot = resolve_snapshot(config, catalog, snapshot, job)
            if dry_run:
                if from_target != "staging":
                    config.target(from_target)
                _print_plan(plan_restore(catalog, snapshot, from_target, includes=include), json_output)
                return
    if to_pacs is not None:
        _restore_to_pacs(config, snapshot, to_pacs, to, include, from_target, pacs_credentials, concurrency,
                         progress, json_output)
        return
    if to_dicom is not None:
        tls = None
        if tls_ca or tls_cert or tls_key:
            from backupctl.pacs.dimse import tls_context

            if tls_key and not tls_cert:
                raise UsageError("--tls-key needs --tls-cert")
            tls = tls_context(tls_ca, tls_cert, tls_key)
        _restore_to_dicom(config, snapshot, to_dicom, to, include, from_target, calling_aet, commitment,
                          commitment_port, commitment_timeout, query_back, tls, progress, json_output)
        return
    if as_orthanc is not None:
        from backupctl.pacs.restore import outcome_dict, restore_as_orthanc

        made = restore_as_orthanc(config, snapshot, as_orthanc, copy=from_target, progress=progress)
        if json_output:
            print_json({**outcome_dict(made), "start_command": made.start_command})
        else:
            out.print(f"Orthanc of snapshot {made.snapshot_id[:8]} laid out in {made.to}: "
                      f"{made.storage_files} stored files, index {human_bytes(made.index_bytes)}; "
                      f"start it with: {made.start_command}")
        return
    assert to is not None
    outcome = restore_snapshot(config, snapshot, to, includes=include, copy=from_target, force=force,
                               progress=progress, job=job, size_of=lambda sid: _catalog_size(config, sid))
    if json_output:
        print_json({**asdict(outcome), "ok": True})
    else:
        out.print(f"restored {outcome.files} files ({human_bytes(outcome.bytes)}) of snapshot "
                  f"{outcome.snapshot_id[:8]} from {outcome.source} into {outcome.to} in {outcome.seconds:.1f} s")
        out.print(f"not verified: a whole-snapshot restore is copied, not checked; `backupctl verify --level "
                  f"restore --snapshot {outcome.snapshot_id[:8]} --from {outcome.source}` checks one against its "
                  "signed manifest")


def _catalog_size(config, snapshot: str) -> int | None:  # noqa: ANN001 - Config
    """The snapshot's size as the catalog knows it (for the progress bar), or None."""
    from backupctl.catalog import find as find_rows
    from backupctl.catalog import open_catalog

    if not config.catalog_path.exists():   # a restore after the catalog was lost: no bar, and no new catalog
        return None
    with open_catalog(config.catalog_path) as catalog:
        rows = find_rows.snapshots_by_prefix(catalog, snapshot)
    return int(rows[0]["size"]) if len(rows) == 1 and rows[0]["size"] else None


def _restore_to_pacs(config, snapshot: str, url: str, keep: Path | None, include: list[str] | None,  # noqa: ANN001
                     copy: str, credentials_file: Path | None, concurrency: int, progress, json_output: bool) -> None:
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise UsageError("--to-pacs URL must not carry credentials (they would sit in the process list)",
                         hint="put 'username:password' in a 0600 file and pass --pacs-credentials FILE")
    from backupctl.pacs.orthanc import read_credentials
    from backupctl.pacs.restore import outcome_dict, restore_to_pacs

    from_env = credentials_file is None and bool(os.environ.get("BACKUPCTL_PACS_CREDENTIALS"))
    creds = read_credentials(credentials_file, "BACKUPCTL_PACS_CREDENTIALS" if from_env else None)
    sent = restore_to_pacs(config, snapshot, url, credentials=creds, includes=include, copy=copy, keep=keep,
                           concurrency=concurrency, progress=progress)
    if json_output:
        print_json(outcome_dict(sent))
    else:
        out.print(f"sent {sent.sent} of {sent.dicom_files} DICOM files of snapshot {sent.snapshot_id[:8]} to "
                  f"{sent.url} ({sent.stored} stored, {sent.already} already there, {sent.retries} retries) "
                  f"in {sent.seconds:.1f} s")
    if sent.rejected:
        first = sent.rejected[0]
        raise PartialRun(f"the PACS refused {len(sent.rejected)} of {sent.dicom_files} files "
                         f"(first: {first['file']}: {first['reason']})")


def _restore_to_dicom(config, snapshot: str, target: str, keep: Path | None,  # noqa: ANN001, PLR0913
                      include: list[str] | None, copy: str, calling_aet: str, commitment: bool,
                      commitment_port: int | None, commitment_timeout: float, query_back: bool, tls, progress,  # noqa: ANN001
                      json_output: bool) -> None:
    from backupctl.pacs.restore import outcome_dict, restore_to_dicom

    done = restore_to_dicom(config, snapshot, target, calling_aet=calling_aet, includes=include, copy=copy,
                            keep=keep, commitment=commitment, commitment_port=commitment_port,
                            commitment_timeout=commitment_timeout, query_back=query_back, tls=tls,
                            progress=progress)
    r = done.report
    if json_output:
        print_json(outcome_dict(done))
    else:
        out.print(f"sent {r['stored'] + r['already']} of {done.dicom_files} DICOM files of snapshot "
                  f"{done.snapshot_id[:8]} to {done.target}: {r['stored']} stored, {r['already']} already there, "
                  f"{len(r['refused'])} refused, {r['transcoded']} transcoded, {r['retries']} retries, "
                  f"in {done.seconds:.1f} s", markup=False)
        for row in r["refused"][:10]:
            out.print(f"  refused {row['file']}: {row['status'] or '-'} {row['reason']}", markup=False)
        commit = {"off": "storage commitment: off (not asked; 'sent' means stored, not committed)",
                  "committed": f"storage commitment: {r['committed']} committed by the PACS",
                  "partial": f"storage commitment: {r['committed']} committed, {len(r['not_committed'])} NOT",
                  "timeout": "storage commitment: no report from the PACS in time: nothing is known committed"}
        out.print(commit[r["commitment"]], markup=False)
        for row in done.query_back:
            out.print(f"  query-back {row['study']}: {row['found']} of {row['expected']} instances "
                      f"{'ok' if row['ok'] else 'MISMATCH'}", markup=False)
    if r["commitment"] == "timeout":
        from backupctl.errors import DicomNetworkError

        raise DicomNetworkError(f"{done.target} sent no storage commitment report within the timeout; "
                                f"{r['stored']} instances stored, none known committed",
                                hint="check the PACS knows our AE title and --commitment-port")
    if not done.ok:
        problems = []
        if r["refused"]:
            first = r["refused"][0]
            problems.append(f"the PACS refused {len(r['refused'])} of {done.dicom_files} files "
                            f"(first: {first['file']}: {first['status'] or '-'} {first['reason']})")
        if r["not_committed"]:
            problems.append(f"{len(r['not_committed'])} instances not committed")
        bad = [row for row in done.query_back if not row["ok"]]
        if bad:
            problems.append(f"query-back differs for {len(bad)} of {len(done.query_back)} studies")
        raise PartialRun("; ".join(problems))


def _print_plan(plan, json_output: bool, found: dict | None = None) -> None:  # noqa: ANN001 - RestorePlan
    if json_output:
        print_json({**({"find": found} if found is not None else {}), "dry_run": plan.as_dict(), "ok": True})
        return
    what = f"{len(plan.studies)} study(ies)" if plan.studies else "the whole snapshot"
    when = f"about {plan.expected_seconds:.0f} s" if plan.expected_seconds is not None else "time unknown"
    out.print(f"would restore {what} of snapshot {plan.snapshot_id[:8]} (job {plan.job}) from {plan.copy}: "
              f"{plan.files if plan.files is not None else '?'} files, {human_bytes(plan.bytes)}; {when} "
              f"({plan.basis})")


def restore_study_cmd(snapshot: str | None, to: Path | None, studies: list[str], copy: str, force: bool,
                      json_output: bool, *, query=None, job: str | None = None,  # noqa: ANN001 - StudyQuery
                      dry_run: bool = False) -> None:
    from backupctl.actions.find import plan_restore, resolve_snapshot, snapshot_holding_all
    from backupctl.catalog import find as find_rows
    from backupctl.catalog import open_catalog
    from backupctl.verify.study import newest_snapshot_with, restore_studies

    config = common.load()
    if copy != "staging":
        config.target(copy)
    found = None
    with open_catalog(config.catalog_path) as catalog:
        sid = resolve_snapshot(config, catalog, snapshot, job) if snapshot else None
        if query is not None and query.given():
            result = find_cmds.run_query(config, catalog, query, job, sid, False, copy, None)
            if not result.matches:
                if json_output:
                    print_json({"find": result.as_dict(), "ok": False})
                raise UsageError("no study in the catalog matches the query: nothing restored",
                                 hint="check the values with `backupctl find` first")
            found = result.as_dict()
            if not json_output:   # what is about to be restored, before anything is
                find_cmds.print_matches(result)
            studies = [m.study_uid for m in result.matches]
            # from a replica: the newest snapshot that copy holds, not the newest staging holds
            on = None if copy == "staging" else find_rows.snapshots_on(catalog, copy)
            sid = sid or snapshot_holding_all(result, on, copy)
        sid = sid or newest_snapshot_with(catalog, studies)
        if dry_run:
            _print_plan(plan_restore(catalog, sid, copy, studies), json_output, found)
            return
        assert to is not None
        outcome = restore_studies(config, catalog, studies, to, snapshot=sid, copy=copy, force=force,
                                  progress=common.progress(json_output))
    if json_output:
        print_json({**({"find": found} if found is not None else {}), **outcome.as_dict(), "ok": outcome.verified})
    else:
        out.print(f"restored {len(studies)} study(ies): {outcome.files} files ({human_bytes(outcome.bytes)}) of "
                  f"snapshot {outcome.snapshot_id[:8]} from {outcome.source} into {outcome.to} in "
                  f"{outcome.seconds:.1f} s")
        out.print(outcome.closing_line())
    if not outcome.verified:
        bad = [f for f in outcome.findings if f.severity == "error"]
        raise IntegrityError(f"restored files fail verification: {bad[0].line()}"
                             + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""))


def runs(
    job: Annotated[str | None, typer.Option("--job", "-j")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    json_output: JsonOpt = False,
) -> None:
    """Recent runs: did they run, how did they end, and why one failed."""
    from backupctl.catalog import open_catalog
    from backupctl.catalog import runs as run_rows

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = run_rows.list_runs(catalog, job, limit=limit)
    if json_output:
        print_json(rows)
        return
    table = make_table("run", "kind", "job", "started", "status", "seconds", "files", "added", "error")
    for r in rows:
        colour = {"success": "green", "partial": "yellow", "running": "cyan"}.get(r["status"], "red")
        table.add_row(str(r["id"]), r["kind"], r["job"], short_time(r["started"]), f"[{colour}]{r['status']}[/]",
                      f"{r['seconds']:.1f}" if r["seconds"] is not None else "-", str(r["files"] or "-"),
                      human_bytes(r["bytes_added"]), r["error"] or "")
    out.print(table if rows else "no runs yet")


def unlock(json_output: JsonOpt = False) -> None:
    """Remove stale restic locks (of killed processes) from the staging repository."""
    from backupctl.repository import staging_restic

    config = common.load()
    locks = config.staging_repository / "locks"

    def held() -> list[str]:
        return sorted(p.name for p in locks.iterdir()) if locks.is_dir() else []

    before = held()
    staging_restic(config).unlock()
    after = held()
    if json_output:
        print_json({"ok": True, "repository": str(config.staging_repository),
                    "removed": [x for x in before if x not in after], "kept": after})
        return
    out.print(f"{len(before) - len(after)} stale lock(s) removed, {len(after)} live one(s) kept")


def forget(
    job: Annotated[str, typer.Argument(help="Apply this job's [retention] policy.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; change nothing.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Forget and prune the job's snapshots its retention policy no longer keeps (staging repository only;
    replicas are never touched: S3 objects go only via `s3 expire` after their lock expired)."""
    from backupctl.actions.forget import apply_retention

    config = common.load()
    outcome = apply_retention(config, job, dry_run=dry_run)
    if json_output:
        print_json({**asdict(outcome), "ok": True})
        return
    verb = "would remove" if dry_run else "removed"
    for s in outcome.kept:
        out.print(f"keep    {s['id'][:8]}  {short_time(s['time'])}  ({', '.join(s['reasons']) or 'policy'})")
    for s in outcome.removed:
        out.print(f"{verb:<7} {s['id'][:8]}  {short_time(s['time'])}")
    out.print(f"{len(outcome.kept)} kept, {len(outcome.removed)} {verb} from the staging repository")
