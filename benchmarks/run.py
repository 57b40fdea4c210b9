"""`python -m benchmarks.run`: measure backupctl against the tools it drives, write results/latest.{json,md}.

    python -m benchmarks.run                       # the default run: 2 GB, 3 rounds per pair (< 10 min)
    python -m benchmarks.run --size-gb 0.2 --repeats 3 --only backup_full --only restore
    python -m benchmarks.run --list                # every measurement, and whether the default run has it

Measurements whose feature is not on main yet are reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.fsutil import atomic_write_text
from benchmarks import measures as _measures  # noqa: F401 - registers the measurements
from benchmarks import memory as _memory  # noqa: F401 - registers the memory measurement
from benchmarks.context import Context
from benchmarks.harness import REGISTRY, BenchError, Measurement, Skip, remove_tree
from benchmarks.machine import facts
from benchmarks.report import render
from benchmarks.workload import PIXEL_ROWS, cached_archive, linked_copy, make_template, spec_for

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "backupctl-bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--size-gb", type=float, default=2.0, help="synthetic archive size (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per pair (default 3)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this measurement (repeatable); see --list")
    p.add_argument("--all", action="store_true", help="also run the measurements not in the default run")
    p.add_argument("--small-files", type=int, default=100_000,
                   help="file count for the peak-memory measurement (default 100000)")
    p.add_argument("--rows", type=int, default=PIXEL_ROWS, help="image rows/columns (default 512: CT)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"where generated archives are kept between runs (default {DEFAULT_CACHE})")
    p.add_argument("--workdir", type=Path, default=None, help="scratch space (default: the system temp folder)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where latest.json and latest.md go")
    p.add_argument("--list", action="store_true", help="list the measurements and exit")
    args = p.parse_args(argv)
    if args.size_gb <= 0 or args.repeats < 1 or args.small_files < 1 or args.rows < 8:
        p.error("--size-gb must be > 0, --repeats and --small-files >= 1, --rows >= 8")
    unknown = [n for n in args.only if n not in REGISTRY]
    if unknown:
        p.error(f"unknown measurement {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return args


def selected(args: argparse.Namespace) -> list[Measurement]:
    if args.only:
        return [REGISTRY[n] for n in args.only]
    return [m for m in REGISTRY.values() if m.default or args.all]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_one(m: Measurement, ctx: Context) -> dict[str, Any]:
    reason = m.requires() if m.requires else None
    if reason:
        return {"status": "skipped", "title": m.about, "reason": reason}
    started, load = time.monotonic(), os.getloadavg()[0]
    try:
        result = m.fn(ctx).as_dict()
    except Skip as exc:
        return {"status": "skipped", "title": m.about, "reason": str(exc)}
    except BenchError as exc:
        return {"status": "failed", "title": m.about, "error": str(exc)}
    except Exception as exc:  # a bug in a measurement must not lose the others' figures
        traceback.print_exc()
        return {"status": "failed", "title": m.about, "error": f"{type(exc).__name__}: {exc}"}
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    # other work on the machine shows up as spread; the 1-minute load says how busy it was
    result["load_average"] = round((load + os.getloadavg()[0]) / 2, 2)
    return result


def build_context(args: argparse.Namespace, workdir: Path, workload: dict[str, Any]) -> Context:
    spec = spec_for(int(args.size_gb * 1e9), rows=args.rows)
    started = time.monotonic()
    archive = cached_archive(args.cache, spec)
    workload.update(files=len(archive.files), bytes=archive.bytes, rows=spec.rows, archive=str(archive.root),
                    prepare_seconds=round(time.monotonic() - started, 1))
    source = linked_copy(archive, workdir / "source")
    template = make_template(workdir / "template")
    return Context(workdir=workdir, repeats=args.repeats, archive=archive, source=source, template=template,
                   small_files=args.small_files, cache=args.cache)


def compile_package() -> None:
    """Write backupctl's bytecode, as a package install does: with PYTHONDONTWRITEBYTECODE set and an editable
    install, every CLI process would otherwise compile its modules again (~0.1 CPU-s per command here)."""
    import backupctl

    compileall.compile_dir(Path(backupctl.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for m in REGISTRY.values():
            print(f"{m.name:32} {'default' if m.default else '--all  '}  {m.about}")
        return 0
    todo = selected(args)
    compile_package()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="backupctl-bench-", dir=args.workdir))
    started = datetime.now(UTC)
    doc: dict[str, Any] = {"ok": False, "started": started.isoformat(), "args": {
        "size_gb": args.size_gb, "repeats": args.repeats, "only": args.only, "all": args.all,
        "small_files": args.small_files, "rows": args.rows}, "machine": facts(workdir), "workload": {},
        "measurements": {}}
    try:
        say(f"preparing a {args.size_gb:g} GB archive (cached in {args.cache}) ...")
        ctx = build_context(args, workdir, doc["workload"])
        for m in todo:
            say(f"{m.name}: {m.about} ...")
            doc["measurements"][m.name] = outcome = run_one(m, ctx)
            say(f"{m.name}: {summary_line(outcome)}")
            for key, derived in outcome.pop("derived", {}).items():
                derived["load_average"] = outcome.get("load_average")
                doc["measurements"][f"{m.name}.{key}"] = derived
                say(f"{m.name}.{key}: {summary_line(derived)}")
    except KeyboardInterrupt:
        say("interrupted; nothing written")
        return 130
    finally:
        remove_tree(workdir)
    doc["finished"] = datetime.now(UTC).isoformat()
    doc["wall_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    doc["machine"]["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    doc["ok"] = all(m["status"] != "failed" for m in doc["measurements"].values())
    write_results(doc, args.out)
    print(render(doc))
    return 0 if doc["ok"] else 1


def summary_line(m: dict[str, Any]) -> str:
    if m["status"] != "measured":
        return f"{m['status']}: {m.get('reason') or m.get('error')}"
    if "ratio" not in m:
        return "measured"
    verdict = "" if "meets_target" not in m else (" (meets" if m["meets_target"] else " (MISSES") + \
        f" target {m['target']})"
    took = f" in {m['wall_seconds']} s" if "wall_seconds" in m else ""
    return f"ratio {m['ratio']:.3f}{verdict}{took}"


def write_results(doc: dict[str, Any], out: Path) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "latest.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out / "latest.md", render(doc))


if __name__ == "__main__":
    sys.exit(main())
