"""`backupctl demo`: the whole product end to end on embedded defaults."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _line(key: str, r: dict[str, Any]) -> str:
    """One readable line per capability, from the step's measured figures."""
    hb = human_bytes
    if key == "backup":
        again = r.get("second_run") or {}
        return (f"snapshot {r.get('snapshot')}: {r.get('files')} files, {hb(r.get('bytes'))} in {r.get('seconds')} s; "
                f"an unchanged second run added {hb(again.get('bytes_added'))}")
    if key == "media":
        return (f"disk {r.get('label')}: {r.get('files')} files copied, each checked by its SHA-256 name; "
                f"a second sync copied {r.get('second_sync_copied')}")
    if key == "restore":
        same = "byte-identical to the archive" if r.get("identical") else "DIFFERENT from the archive"
        return (f"{r.get('files')} files (the archive and its signed manifest) from the {r.get('from')} disk "
                f"in {r.get('seconds')} s, {same}")
    if key == "verify":
        tamper = (r.get("tamper_test") or {}).get("detected")
        return (f"{r.get('files_hashed')} files hashed, {r.get('dicom_files_parsed')} DICOM files parsed, "
                f"{r.get('failures')} failures" + ("; a flipped byte was detected and named" if tamper else ""))
    if key == "s3":
        attack = r.get("attack") or {}
        probe = r.get("probe") or {}
        worm = "enforces WORM" if probe.get("enforced") else "does NOT enforce WORM (expected of the embedded server)"
        audit = "clean" if r.get("audit_ok") else "FAILED"
        return (f"{r.get('objects')} objects, {r.get('locked')} locked, audit {audit}; "
                f"a simulated attack was {'named and recovered from' if attack.get('ok') else 'NOT handled'}; "
                f"probe: endpoint {worm}")
    if key == "drill":
        met = "met" if r.get("rto_met") else "MISSED"
        return (f"from {r.get('from')}: {r.get('files')} files in {r.get('seconds')} s (first study verified after "
                f"{r.get('first_study_seconds')} s), RTO {r.get('rto_minutes'):g} min {met}")
    if key == "find":
        return (f"by patient ID {(r.get('by_patient_id') or {}).get('studies')} studies, by accession "
                f"{(r.get('by_accession') or {}).get('studies')}, by name wildcard "
                f"{(r.get('by_name_wildcard') or {}).get('studies')}; {r.get('restored_files')} files restored, "
                + ("verified" if r.get("verified") else "NOT verified")
                + ("; catalog holds no ID in clear" if r.get("catalog_holds_id_in_clear") is False else ""))
    if key == "dry_run":
        return (f"from {r.get('from')}: {r.get('files')} files, {hb(r.get('bytes'))}, expected "
                f"{r.get('expected_seconds')} s, took {r.get('measured_seconds')} s")
    if key == "pacs":
        return (f"{r.get('instances_stored')} instances stored in Orthanc, backed up live with "
                f"{r.get('downtime_seconds')} s downtime, {r.get('instances_matched')} restored and matched")
    if key == "scheduler":
        hook = (r.get("webhook") or {}).get("delivered")
        families = (r.get("metrics") or {}).get("families")
        return (f"ran on schedule after {r.get('first_run_seconds')} s, webhook "
                f"{'delivered' if hook else 'NOT delivered'}, {families} metric families exported")
    if key == "audit":
        return (f"{r.get('records')} records, chain {'verified' if r.get('chain_verified') else 'BROKEN'}, "
                f"checkpoint {'locked in S3' if r.get('checkpoint_in_s3') else 'NOT in S3'}, {r.get('forwarded')} "
                f"forwarded to a syslog receiver; a tampered copy was "
                + ("caught" if r.get("tampered_copy_caught") else "NOT caught"))
    if key == "incident":
        recovered = r.get("recovered") or {}
        return (f"a simulated attack was {'flagged' if r.get('flagged') else 'NOT flagged'} (snapshot "
                f"{r.get('suspect_snapshot')}), {(r.get('freeze') or {}).get('held')} versions held, last clean "
                f"{(r.get('last_clean') or {}).get('snapshot')} recovered from S3 in {recovered.get('seconds')} s, "
                + ("identical" if recovered.get("identical") else "NOT identical")
                + (", report signature verified" if r.get("report_verified") else ", report NOT verified"))
    return ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, int | float | str) and k != "ok")


def _summary(key: str, result: dict[str, Any]) -> str:
    if result.get("skipped"):
        return f"skipped ({result['skipped']})"
    if result.get("error"):
        return f"error: {result['error']}"
    try:
        return _line(key, result)
    except (TypeError, ValueError):
        return ""


def demo(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object, a key per capability.")] = False,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Keep everything in this (new) folder.")] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the drill report is kept when the "
                                             "work folder is thrown away.")] = Path("demo-output"),
) -> None:
    """Synthesize a small PACS archive, back it up, copy it to a simulated offline disk, restore it and compare
    byte for byte (and every capability after that). Exits 0 only if all of it held."""
    keep = workdir is not None
    root = workdir or Path(tempfile.mkdtemp(prefix="backupctl-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        raise typer.BadParameter(f"{root} is not empty; give a new folder", param_hint="--workdir")

    def show(key: str, result: dict[str, Any]) -> None:
        if not json_output:
            from rich.markup import escape  # rich only for text output

            mark = "[green]ok[/]  " if result.get("ok") else "[red]FAIL[/]"
            out.print(f"{mark} {key:<9} {escape(_summary(key, result))}")

    try:
        from backupctl.demo import run_demo  # imported on use: it pulls in pydicom and numpy (~0.2 s)

        result = run_demo(root, common.progress(json_output), on_step=show)
        if not keep:
            _keep_report(result, output_dir)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            result_workdir = None
        else:
            result_workdir = str(root)
    result["workdir"] = result_workdir
    if json_output:
        print_json(result)
    else:
        verdict = "[green]demo passed[/]" if result["ok"] else "[red]demo FAILED[/]"
        where = f"; files kept in {root}" if keep else ""
        report = (result.get("drill") or {}).get("report")
        if report:
            out.print(f"drill report: {report}")
        recovery = (result.get("incident") or {}).get("report")
        if recovery and not keep:
            out.print(f"incident recovery report: {recovery}")
        out.print(f"{verdict} in {result['seconds']:.1f} s{where}")
    if not result["ok"]:
        raise typer.Exit(1)


def _keep_report(result: dict[str, Any], output_dir: Path) -> None:
    """The drill report outlives the throw-away work folder: copy it out with its signature, its PDF and the
    public key, and point the result at the copies (an auditor checks them there with openssl alone)."""
    drill = result.get("drill") or {}
    _keep(drill, ("report", "signature", "pdf", "pdf_signature", "public_key"), output_dir)
    incident = result.get("incident") or {}
    _keep(incident.get("reports") or {}, ("json", "md", "review"), output_dir / "incident")
    if incident.get("reports", {}).get("md"):
        incident["report"] = incident["reports"]["md"]


def _keep(paths: dict[str, Any], keys: tuple[str, ...], folder: Path) -> None:
    """Copy the files `paths` names under `keys` into `folder`, and point `paths` at the copies."""
    for key in keys:
        source = Path(paths[key]) if paths.get(key) else None
        if source is None or not source.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / source.name
        shutil.copyfile(source, kept)
        paths[key] = str(kept.absolute())
