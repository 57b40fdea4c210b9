"""`backupctl demo`: the whole product end to end on embedded defaults."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli import common
from backupctl.cli.common import out, print_json


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _summary(key: str, result: dict[str, Any]) -> str:
    if result.get("skipped"):
        return f"skipped ({result['skipped']})"
    if result.get("error"):
        return f"error: {result['error']}"
    figures = ", ".join(f"{k} {v}" for k, v in result.items()
                        if k in ("files", "bytes", "seconds", "snapshot", "label", "objects", "locked",
                                 "rto_met", "instances") and v is not None)
    return figures


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
            mark = "[green]ok[/]  " if result.get("ok") else "[red]FAIL[/]"
            out.print(f"{mark} {key:<8} {_summary(key, result)}")

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
        out.print(f"{verdict} in {result['seconds']:.1f} s{where}")
    if not result["ok"]:
        raise typer.Exit(1)


def _keep_report(result: dict[str, Any], output_dir: Path) -> None:
    """The drill report outlives the throw-away work folder: copy it out and point the result at the copy."""
    drill = result.get("drill") or {}
    report = Path(drill["report"]) if drill.get("report") else None
    if report is None or not report.exists():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    kept = output_dir / report.name
    shutil.copyfile(report, kept)
    drill["report"] = str(kept.absolute())
