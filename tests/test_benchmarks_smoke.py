"""The benchmark runner must not rot: run it end to end on a tiny archive (no timing assertions here;
speed is what the benchmarks report, not what tests check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import measures as _measures  # noqa: F401 - fills the registry
from benchmarks import memory as _memory  # noqa: F401
from benchmarks.harness import REGISTRY, Result, Run, Side, Target, interleave

ROOT = Path(__file__).resolve().parent.parent   # `python -m benchmarks.run` runs from the repository root


def run_bench(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "benchmarks.run", "--cache", str(tmp / "cache"), "--out", str(tmp / "out"),
            "--workdir", str(tmp / "work"), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)


@pytest.mark.slow
def test_runner_measures_every_available_measurement_on_a_tiny_archive(tmp_path: Path) -> None:
    done = run_bench("--size-gb", "0.002", "--repeats", "1", "--small-files", "20", "--all", tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert doc["ok"] is True
    names = set(doc["measurements"])
    assert set(REGISTRY) <= names
    assert all(n.split(".")[0] in REGISTRY for n in names), names   # NAME.KEY: a figure derived from NAME
    for name, m in doc["measurements"].items():
        assert m["status"] in ("measured", "skipped"), f"{name}: {m}"
        if m["status"] == "skipped":
            assert m["reason"], name
        elif m["kind"] != "figures":
            assert m["ratio"] > 0 and len(m["a"]["runs_s"]) == 1 == len(m["b"]["runs_s"]), name
    assert doc["measurements"]["backup_full"]["status"] == "measured"
    memory = doc["measurements"]["memory_small_files"]["figures"]
    assert all(r["backupctl_rss_mib"] > 0 for r in memory["table"] if r["command"] == "backup run")
    assert any(r.get("restic_rss_mib", 0) > 0 for r in memory["table"] if r["files"] == 20)
    assert doc["machine"]["restic"].startswith("restic ")
    markdown = (tmp_path / "out" / "latest.md").read_text()
    assert markdown.index("## Ratios") < markdown.index("## Absolute times") < markdown.index("## Machine")
    assert "| backup_full" in markdown
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir()), "scratch left behind"


def test_unknown_measurement_is_one_clear_error(tmp_path: Path) -> None:
    done = run_bench("--only", "no_such_thing", tmp=tmp_path)
    assert done.returncode == 2
    assert "unknown measurement no_such_thing" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_pairs_alternate_which_side_goes_first() -> None:
    order: list[str] = []

    def side(name: str):
        def go(i: int) -> Run:
            order.append(f"{name}{i}")
            return Run(1.0, 1.0)
        return go

    runs_a, runs_b = interleave(4, side("a"), side("b"), before=lambda i: order.append(f"prep{i}"))
    assert order == ["prep0", "a0", "b0", "prep1", "b1", "a1", "prep2", "a2", "b2", "prep3", "b3", "a3"]
    assert len(runs_a) == len(runs_b) == 4


def test_ratios_compare_medians_and_normalise_throughput_per_core() -> None:
    a = Side("a", [Run(2.0, 2.0), Run(4.0, 4.0), Run(3.0, 3.0)])
    b = Side("b", [Run(1.0, 1.0), Run(2.0, 2.0), Run(9.0, 9.0)])
    assert Result("t", "time", a, b).ratio() == pytest.approx(3.0 / 2.0)
    two_cores = Side("a", [Run(1.0, 2.0)])
    one_core = Side("b", [Run(1.0, 1.0)])
    throughput = Result("t", "throughput", two_cores, one_core, target=Target(">=", 0.8), per_core=True)
    assert throughput.ratio() == pytest.approx(0.5)
    assert throughput.as_dict()["meets_target"] is False
