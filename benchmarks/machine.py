"""Facts about the machine and the tools, recorded with every result (figures mean nothing without them)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "?"


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "unknown", []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model, flags


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(repo: Path) -> str:
    return _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])


def facts(workdir: Path) -> dict[str, Any]:
    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "sha_ni": "sha_ni" in flags,
        "memory_gib": _memory_gib(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "kernel": platform.release(),
        "filesystem": _first_line(["stat", "-f", "-c", "%T", str(workdir)]),
        "python": platform.python_version(),
        "restic": _first_line(["restic", "version"]),
        "openssl": _first_line(["openssl", "version"]),
        "pydicom": _version("pydicom"),
        "boto3": _version("boto3"),
        "moto": _version("moto"),
        "backupctl_commit": git_commit(Path(__file__).resolve().parent.parent),
    }
