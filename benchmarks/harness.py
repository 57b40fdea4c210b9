"""The benchmark machinery: a registry of named measurements, interleaved pairs, medians and spreads.

A measurement is a small function registered by name with `@measurement(...)`. It takes the shared
`Context` and returns a `Result`: usually a pair (A = backupctl, B = the tool it drives or the hardware
bar) run interleaved, A B, B A, A B ..., so drifting load on a shared machine hits both sides alike. The
ratio compares the medians; the per-pair ratios give its spread. A measurement whose feature is not on
main yet raises `Skip` (or names a `requires` check), and the output says so instead of inventing a figure.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class Skip(Exception):  # noqa: N818 - reads as `raise Skip("why")`
    """The measurement cannot run here (feature not on main yet, tool missing); the reason is reported."""


class BenchError(Exception):
    """A command under measurement failed; the measurement is reported as failed with this line."""


@dataclass(frozen=True)
class Run:
    """One timed execution: wall-clock seconds, CPU seconds (user + system, children included)."""

    seconds: float
    cpu_seconds: float


@dataclass(frozen=True)
class Completed:
    run: Run
    stdout: str
    stderr: str = ""


def run_command(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                stdin: bytes | None = None, capture_stderr: bool = False) -> Completed:
    """Run a command to completion and time it; wait4 gives its CPU time (children included).

    Not its peak RSS: a child's ru_maxrss starts from its parent's RSS at spawn (this runner's), which
    would hide a smaller child; `memory` measures RSS its own way."""
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        inp.write(stdin or b"")
        inp.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "(no message)"
        raise BenchError(f"{os.path.basename(argv[0])} {' '.join(argv[1:3])} ... exited {proc.returncode}: {tail}")
    return Completed(Run(seconds, usage.ru_utime + usage.ru_stime), stdout, stderr if capture_stderr else "")


def remove_tree(path: Path) -> None:
    """`rm -rf`: several times faster than shutil.rmtree on the 100,000-file trees of `memory`."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False, stdin=subprocess.DEVNULL)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_call(fn: Callable[[], object]) -> Run:
    """Time an in-process call. CPU counts every thread of this process (process_time) and the worker
    processes the call started and reaped (RUSAGE_CHILDREN), so a process pool's cores are counted."""
    started, cpu, children = time.monotonic(), time.process_time(), _children_cpu()
    fn()
    return Run(time.monotonic() - started, time.process_time() - cpu + _children_cpu() - children)


def warm_cache(roots: Sequence[Path]) -> None:
    """Read every file under `roots` once, so a timed run finds its input in the page cache: the machine's
    memory manager (DAMON reclaim here) may have evicted it since, and the side that ran first would pay."""
    buf = bytearray(1 << 20)
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    with open(os.path.join(folder, name), "rb", buffering=0) as fh:
                        while fh.readinto(buf):
                            pass
                except OSError:
                    continue


def interleave(repeats: int, a: Callable[[int], Run], b: Callable[[int], Run],
               before: Callable[[int], None] | None = None,
               inputs: Sequence[Path] = ()) -> tuple[list[Run], list[Run]]:
    """Run the pair `repeats` times, alternating which goes first (A B, B A, ...); `before(i)` prepares
    round i untimed (a fresh repository, changed files); `inputs` are read into the page cache before every
    timed run (see `warm_cache`)."""
    runs_a: list[Run] = []
    runs_b: list[Run] = []

    def settled(side: Callable[[int], Run], i: int) -> Run:
        # what the previous run left dirty in the page cache (a 2 GB restore) is written back now, untimed:
        # otherwise the kernel writes it back during the next run, whichever side that is
        os.sync()
        warm_cache(inputs)
        return side(i)

    for i in range(repeats):
        if before is not None:
            before(i)
        if i % 2 == 0:
            runs_a.append(settled(a, i))
            runs_b.append(settled(b, i))
        else:
            runs_b.append(settled(b, i))
            runs_a.append(settled(a, i))
    return runs_a, runs_b


# results -------------------------------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    runs: list[Run]
    bytes: int | None = None            # processed per run, for throughput
    files: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def cores(self) -> float:
        """CPU seconds per wall second (median of runs): how many cores this side kept busy."""
        return statistics.median(r.cpu_seconds / r.seconds for r in self.runs if r.seconds > 0)

    def as_dict(self) -> dict[str, Any]:
        seconds = [r.seconds for r in self.runs]
        med = self.median
        d: dict[str, Any] = {
            "label": self.label,
            "median_s": round(med, 4),
            "min_s": round(min(seconds), 4),
            "max_s": round(max(seconds), 4),
            "spread_pct": round(100 * (max(seconds) - min(seconds)) / med, 1) if med else None,
            "cores": round(self.cores, 2),
            "runs_s": [round(s, 4) for s in seconds],
        }
        if self.bytes:
            d["bytes"] = self.bytes
            d["mb_per_s"] = round(self.bytes / med / 1e6, 1) if med else None
        if self.files:
            d["files"] = self.files
            d["files_per_s"] = round(self.files / med, 1) if med else None
        return d


@dataclass(frozen=True)
class Target:
    op: Literal["<=", ">="]
    value: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass
class Result:
    """What a measurement found. kind 'time': ratio = A/B of median seconds (lower is better);
    'throughput': ratio = A's throughput over B's (higher is better), per core used when `per_core`."""

    title: str
    kind: Literal["time", "throughput", "figures"]
    a: Side | None = None
    b: Side | None = None
    target: Target | None = None
    per_core: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    derived: dict[str, Result] = field(default_factory=dict)   # reported as NAME.KEY (e.g. a phase left out)

    def ratio(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        if self.kind == "time":
            return self.a.median / self.b.median
        ratio = self.b.median / self.a.median
        if self.per_core:
            ratio *= max(1.0, self.b.cores) / max(1.0, self.a.cores)
        return ratio

    def pair_ratios(self) -> list[float]:
        if self.a is None or self.b is None:
            return []
        pairs = zip(self.a.runs, self.b.runs, strict=True)
        if self.kind == "time":
            return [ra.seconds / rb.seconds for ra, rb in pairs]
        out = []
        for ra, rb in pairs:
            r = rb.seconds / ra.seconds
            if self.per_core:
                r *= max(1.0, rb.cpu_seconds / rb.seconds) / max(1.0, ra.cpu_seconds / ra.seconds)
            out.append(r)
        return out

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio()
        pairs = self.pair_ratios()
        d: dict[str, Any] = {"status": "measured", "title": self.title, "kind": self.kind}
        if ratio is not None:
            d["ratio"] = round(ratio, 3)
            d["ratio_meaning"] = ("A/B time, lower is better" if self.kind == "time" else
                                  "A/B throughput" + (" per core used" if self.per_core else "")
                                  + ", higher is better")
            d["pair_ratio_min"] = round(min(pairs), 3)
            d["pair_ratio_max"] = round(max(pairs), 3)
        if self.target is not None and ratio is not None:
            d["target"] = str(self.target)
            d["meets_target"] = self.target.met(ratio)
        if self.a is not None:
            d["a"] = self.a.as_dict()
        if self.b is not None:
            d["b"] = self.b.as_dict()
        if self.figures:
            d["figures"] = self.figures
        if self.notes:
            d["notes"] = self.notes
        if self.derived:
            d["derived"] = {key: r.as_dict() for key, r in self.derived.items()}
        return d


# registry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    name: str
    fn: Callable[..., Result]
    default: bool                       # part of the default run, or only with --only / --all
    requires: Callable[[], str | None] | None
    about: str


REGISTRY: dict[str, Measurement] = {}


MeasureFn = Callable[..., Result]


def measurement(name: str, *, about: str, default: bool = True,
                requires: Callable[[], str | None] | None = None) -> Callable[[MeasureFn], MeasureFn]:
    """Register a measurement under `name`; `requires()` returns why it cannot run, or None."""

    def register(fn: MeasureFn) -> MeasureFn:
        if name in REGISTRY:
            raise ValueError(f"measurement {name} registered twice")
        REGISTRY[name] = Measurement(name, fn, default, requires, about)
        return fn

    return register


@contextmanager
def phase(figures: dict[str, Any], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of a block under figures[name] (for one-off, untimed-pair figures)."""
    started = time.monotonic()
    yield
    figures[name] = round(time.monotonic() - started, 3)
