"""`pacs check|copies|drill`: the Orthanc source of a job, its downtime history, a PACS drill on a folder."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import common
from backupctl.cli.common import err, human_bytes, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import BackupctlError, IntegrityError, OrthancError, UsageError

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

app = typer.Typer(help="PACS (Orthanc): check a job's source, downtime history, drill a restored folder.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


@app.command("check")
def check(job: Annotated[str, typer.Argument(help="A job with an [orthanc] source.")],
          json_output: JsonOpt = False) -> None:
    """Check a job's Orthanc source without stopping anything: paths, snapshot folder, credentials, whether
    Orthanc runs (index lock holder) and answers."""
    from backupctl.pacs.orthanc import index_lock_holder
    from backupctl.pacs.source import resolve_orthanc, restart_if_left_stopped

    config = common.load()
    spec = config.job(job)
    if spec.orthanc is None:
        raise UsageError(f"job {job} has no [orthanc] source")
    src = resolve_orthanc(config, spec)
    restarted = restart_if_left_stopped(src)
    if restarted:
        err.print(f"[yellow]{restarted}[/]")
    holder = index_lock_holder(src.index_file)
    facts: dict[str, object] = {"job": job, "url": src.cfg.url, "index_lock_holder": holder,
                                "snapshot_dir": str(src.snapshot_dir)}
    try:
        system = src.client(timeout=5).system()
        facts.update(answers=True, version=system.get("Version"), name=system.get("Name"))
    except OrthancError as exc:
        facts.update(answers=False, error=exc.one_line())
    facts["ok"] = bool(facts["answers"]) and holder is not None
    if json_output:
        print_json(facts)
    else:
        state = f"running (pid {holder})" if holder else "not running (index unlocked)"
        answer = (f"answers: Orthanc {facts.get('version')} '{facts.get('name')}'" if facts["answers"]
                  else f"does not answer: {facts.get('error')}")
        out.print(f"job {job}: Orthanc {state}; {src.cfg.url} {answer}; copies go to {src.snapshot_dir}")
    if not facts["ok"]:
        raise OrthancError(f"job {job}: Orthanc is not fully up: " + ("index unlocked" if holder is None else
                                                                       str(facts.get("error"))))


@app.command("copies")
def copies(job: Annotated[str | None, typer.Option("--job", "-j", help="Only this job.")] = None,
           limit: Annotated[int, typer.Option("--limit", "-n")] = 20, json_output: JsonOpt = False) -> None:
    """Recent consistent copies of Orthanc sources: when, how long the PACS was down, how much was linked."""
    from backupctl.catalog import open_catalog
    from backupctl.catalog import pacs as pacs_rows

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = pacs_rows.list_copies(catalog, job, limit)
    if json_output:
        print_json(rows)
        return
    t = make_table("run", "job", "stopped", "status", "down s", "stop s", "copy s", "files", "linked stopped",
                   "index", "error")
    for r in rows:
        t.add_row(str(r["run_id"] or "-"), r["job"], short_time(r["stopped_at"] or r["recorded"]), r["status"],
                  _secs(r["downtime_seconds"]), _secs(r["stop_seconds"]), _secs(r["copy_seconds"]),
                  str(r["storage_files"] or "-"), str(r["linked_while_stopped"] or 0),
                  human_bytes(r["index_bytes"]), r["error"] or ("left stopped" if not r["was_running"] else ""))
    out.print(t if rows else "no Orthanc copies yet")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@app.command("drill")
def drill(
    restored: Annotated[Path, typer.Argument(help="A restored folder (files, or an Orthanc copy).")],
    expected_from: Annotated[Path | None, typer.Option(
        "--expected-from", help="Folder of the original DICOM files to compare with (default: the restored "
                                "files themselves, which cannot reveal a missing file).")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Scratch folder for the throw-away "
                                                                   "Orthanc (default: under [paths] state).")] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Instances downloaded and hashed.")] = 5,
    json_output: JsonOpt = False,
) -> None:
    """Start a throw-away Orthanc on a restored folder, ingest (or open the restored index), and check that
    every study is there over REST and C-FIND, with every stored file's MD5."""
    import shutil
    import tempfile

    from backupctl.pacs.drill import expected_from_files, run_pacs_drill
    from backupctl.pacs.ingest import iter_dicom_files

    if not restored.is_dir():
        raise UsageError(f"{restored} is not a folder")
    expected = (expected_from_files(iter_dicom_files(expected_from), source=f"files in {expected_from}")
                if expected_from else None)
    if workdir is None:
        config = common.load()
        (config.state_dir / "scratch").mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="backupctl-pacs-drill-", dir=config.state_dir / "scratch"))
    else:
        scratch = workdir
    try:
        result = run_pacs_drill(restored, scratch, expected=expected, progress=common.progress(json_output),
                                sample=sample)
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if json_output:
        print_json(result.as_dict())
    else:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items())
        md5_ok = result.md5_checked - result.md5_failed
        out.print(f"PACS drill ({result.mode}): {result.matched_instances} of "
                  f"{result.expected.get('instances', 0)} instances found, {result.findscu_studies} studies by "
                  f"C-FIND, MD5 {md5_ok}/{result.md5_checked} ok; {phases}")
        for f in result.findings:
            out.print(f"  {f.severity}: {f.kind} {f.subject}: {f.detail}")
    if result.error:
        raise BackupctlError(f"PACS drill could not run: {result.error}")
    if not result.ok:
        raise IntegrityError(f"PACS drill failed: {len(result.errors)} problem(s), first: "
                             f"{result.errors[0].kind} {result.errors[0].subject}")
