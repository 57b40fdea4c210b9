"""`find`, `snapshots show`, `ls`, `diff`: what the backups hold, found by what the admin is given."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import UsageError

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
PatientIdOpt = Annotated[str | None, typer.Option(
    "--patient-id", help="Patient ID, exact (looked up by its keyed hash; never stored in clear).")]
AccessionOpt = Annotated[str | None, typer.Option("--accession", help="Accession Number, exact.")]
StudyDateOpt = Annotated[str | None, typer.Option(
    "--study-date", help="Study date: a day (20240131, 2024-01-31) or a range (A-B, A..B; an end may be open).")]
ModalityOpt = Annotated[str | None, typer.Option("--modality", help="Modality, e.g. CT, MR.")]
PatientNameOpt = Annotated[str | None, typer.Option(
    "--patient-name", help="Patient Name, DICOM wildcards: * any characters, ? one (e.g. 'DOE^J*').")]
JobOpt = Annotated[str | None, typer.Option("--job", "-j", help="Only this job; the job 'latest' refers to.")]
CopyOpt = Annotated[str, typer.Option("--from", help="Copy to read: staging or a target name.")]
PublicKeyOpt = Annotated[Path | None, typer.Option(
    "--public-key", help="Trusted public key for manifests [default: the .pub beside the signing key].")]


def register(app: typer.Typer) -> None:
    app.command("find")(find)
    app.command("ls")(ls)
    app.command("diff")(diff)


def find(
    study: Annotated[str | None, typer.Option("--study", help="Study Instance UID.")] = None,
    series: Annotated[str | None, typer.Option("--series", help="Series Instance UID.")] = None,
    patient_id: PatientIdOpt = None,
    accession: AccessionOpt = None,
    study_date: StudyDateOpt = None,
    modality: ModalityOpt = None,
    patient_name: PatientNameOpt = None,
    job: JobOpt = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Only this snapshot (id, prefix or "
                                                                    "'latest' of the job).")] = None,
    every_snapshot: Annotated[bool, typer.Option("--all-snapshots", help="One line per snapshot holding a study "
                                                                         "(default: its newest).")] = False,
    copy: CopyOpt = "staging",
    public_key: PublicKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find studies by Patient ID, accession number, study date, modality or patient name (alone or
    combined), or which snapshots hold a study or series UID; nothing is restored."""
    from backupctl.actions.find import StudyQuery

    query = StudyQuery(patient_id, accession, study_date, modality, patient_name)
    if study is not None or series is not None:
        if query.given() or (study is not None and series is not None):
            raise UsageError("--study or --series stand alone: give one UID, or search by the other criteria")
        _find_uid(study, series, json_output)
        return
    from backupctl.catalog import open_catalog

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        result = run_query(config, catalog, query, job, snapshot, every_snapshot, copy, public_key)
    if json_output:
        print_json(result.as_dict())
    else:
        print_matches(result)
    if not result.matches:
        raise UsageError("no study in the catalog matches the query",
                         hint="widen it (a date range, a wildcard), or `backupctl catalog rebuild` to re-index")


def run_query(config: Any, catalog: Any, query: Any, job: str | None, snapshot: str | None,  # noqa: ANN401
              every_snapshot: bool, copy: str, public_key: Path | None) -> Any:  # noqa: ANN401
    from backupctl.actions.find import find_studies

    if not query.given():
        raise UsageError("give --study UID, --series UID, or at least one of --patient-id, --accession, "
                         "--study-date, --modality, --patient-name")
    if copy != "staging":
        config.target(copy)
    return find_studies(config, catalog, query, job=job, snapshot=snapshot, every_snapshot=every_snapshot,
                        copy=copy, public_key=public_key)


def print_matches(result: Any) -> None:  # noqa: ANN401 - actions.find.FindResult
    from rich.markup import escape

    asked = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.query.asked().items())
    by_name = result.query.patient_name is not None
    # lines, not a table: a Study UID is up to 64 characters, and a table would cut it on a narrow terminal
    for m in result.matches:
        name = f"  patient name {escape(m.patient_name or '')}" if by_name else ""
        out.print(f"{_day(m.study_date)}  {m.modalities or '-':<5} {m.instances:>5} inst.  "
                  f"{human_bytes(m.bytes):>10}  snapshot {m.short_id} ({m.job}, {short_time(m.snapshot_time)}), "
                  f"in {m.snapshots} snapshot(s){name}")
        out.print(f"    study {m.study_uid}")
    total = sum(m.bytes for m in result.matches)
    read = f"; {result.manifests_read} signed manifest(s) read for the name" if by_name else ""
    out.print(f"{len(result.matches)} study(ies), {human_bytes(total)}, match {escape(asked)}{read}")
    if result.names_unreadable:
        out.print(f"[yellow]warning[/] {result.names_unreadable} studies' names are sealed under another "
                  "identifiers key and could not be matched")


def _day(d: str | None) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:]}" if d else "-         "


def _find_uid(study: str | None, series: str | None, json_output: bool) -> None:
    from backupctl.catalog import open_catalog
    from backupctl.verify.study import find_series, find_study

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = find_study(catalog, study) if study else find_series(catalog, series or "")
    if json_output:
        print_json({"study": study, "series": series, "snapshots": rows, "ok": bool(rows)})
    elif rows:
        table = make_table("snapshot", "job", "time", "series", "instances", "size", "replicas")
        for r in rows:
            table.add_row(r["short_id"], r["job"], short_time(r["time"]), str(r.get("series", "-")),
                          str(r["instances"]), human_bytes(r.get("bytes")),
                          ", ".join(f"{x['target']}:{x['location']}" for x in r["replicas"]) or "-")
        out.print(table)
    if not rows:
        raise UsageError(f"{'study' if study else 'series'} {study or series} is in no snapshot the catalog knows",
                         hint="check the UID; `backupctl catalog rebuild` re-indexes from a repository")


def show(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or unique prefix), or 'latest' (of --job).")],
    studies: Annotated[bool, typer.Option("--studies", help="List the snapshot's studies.")] = False,
    job: JobOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """One snapshot: its figures, replicas and (--studies) the studies it holds, from the catalog."""
    from backupctl.actions.find import resolve_snapshot
    from backupctl.catalog import open_catalog
    from backupctl.catalog import snapshots as snapshot_rows
    from backupctl.catalog import verify as verify_rows

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        sid = resolve_snapshot(config, catalog, snapshot, job)
        row = next(r for r in snapshot_rows.list_snapshots(catalog, include_forgotten=True) if r["id"] == sid)
        held = verify_rows.studies_of(catalog, sid) if studies else None
    if json_output:
        print_json({**row, **({"studies": held} if held is not None else {}), "ok": True})
        return
    out.print(f"snapshot {row['short_id']} ({row['id']}) of job {row['job']}, taken {short_time(row['time'])}: "
              f"{row['files']} files, {human_bytes(row['size'])}, {row['status']}; replicas: "
              + (", ".join(f"{x['target']}:{x['location']}" for x in row["replicas"]) or "none"))
    if held is None:
        return
    for s in held:
        out.print(f"{_day(s['study_date'])}  {s['modalities'] or '-':<5} {s['series']:>3} series "
                  f"{s['instances']:>5} inst.  {human_bytes(s['bytes']):>10}  {s['study_uid']}")
    if not held:
        out.print("no DICOM study in this snapshot")
    if held:
        out.print(f"{len(held)} studies, {sum(s['instances'] for s in held)} instances, "
                  f"{human_bytes(sum(s['bytes'] for s in held))}")


def ls(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or unique prefix), or 'latest' (of --job).")],
    path: Annotated[str | None, typer.Argument(help="Only this folder or file (absolute, as backed up).")] = None,
    job: JobOpt = None,
    copy: CopyOpt = "staging",
    json_output: JsonOpt = False,
) -> None:
    """List a snapshot's files (restic's listing), without restoring anything."""
    from dataclasses import asdict

    from rich.markup import escape

    from backupctl.actions.browse import list_files
    from backupctl.actions.find import resolve_snapshot
    from backupctl.catalog import open_catalog

    config = common.load()
    if copy != "staging":
        config.target(copy)
    with open_catalog(config.catalog_path) as catalog:
        sid = resolve_snapshot(config, catalog, snapshot, job)
    rows = list_files(config, sid, path, copy)
    if json_output:
        print_json({"snapshot_id": sid, "path": path, "files": [asdict(r) for r in rows], "ok": bool(rows)})
    else:
        for r in rows:
            size = human_bytes(r.size) if r.type == "file" else r.type
            out.print(f"{size:>10}  {short_time(r.mtime)}  {escape(r.path)}")
        files = [r for r in rows if r.type == "file"]
        out.print(f"{len(files)} files, {human_bytes(sum(r.size for r in files))}")
    if not rows:
        raise UsageError(f"snapshot {sid[:8]} holds nothing at {path}", hint=f"list it all: backupctl ls {sid[:8]}")


def diff(
    before: Annotated[str, typer.Argument(help="The older snapshot (id or unique prefix).")],
    after: Annotated[str, typer.Argument(help="The newer snapshot (id, unique prefix, or 'latest' of --job).")],
    job: JobOpt = None,
    copy: CopyOpt = "staging",
    public_key: PublicKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Studies added, removed and changed between two snapshots, from their signed manifests (no restore)."""
    from backupctl.actions.browse import diff_snapshots
    from backupctl.actions.find import resolve_snapshot
    from backupctl.catalog import open_catalog

    config = common.load()
    if copy != "staging":
        config.target(copy)
    with open_catalog(config.catalog_path) as catalog:
        a, b = resolve_snapshot(config, catalog, before, job), resolve_snapshot(config, catalog, after, job)
    result = diff_snapshots(config, a, b, copy, public_key)
    if json_output:
        print_json(result.as_dict())
        return
    for s in result.added:
        out.print(f"[green]+ added  [/] {s['study_uid']}  {s['modalities'] or '-'}  {s['instances']} instances, "
                  f"{human_bytes(s['bytes'])}")
    for s in result.removed:
        out.print(f"[red]- removed[/] {s['study_uid']}  {s['modalities'] or '-'}  {s['instances']} instances, "
                  f"{human_bytes(s['bytes'])}")
    for c in result.changed:
        out.print(f"[yellow]~ changed[/] {c.study_uid}  {c.instances_before} -> {c.instances_after} instances "
                  f"(+{c.files_added} -{c.files_removed} ~{c.files_altered} files), "
                  f"{human_bytes(c.bytes_before)} -> {human_bytes(c.bytes_after)}")
    out.print(f"{a[:8]} -> {b[:8]}: {len(result.added)} studies added, {len(result.removed)} removed, "
              f"{len(result.changed)} changed, {result.unchanged} unchanged; other files +{result.other_files_added} "
              f"-{result.other_files_removed} ~{result.other_files_altered}")
