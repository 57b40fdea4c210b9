"""What every command group shares: the global options, loading the config, printing JSON and tables."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from backupctl.config import Config, load_config
from backupctl.progress import Progress, default_progress


@dataclass
class GlobalOptions:
    config: Path | None = None
    quiet: bool = False
    debug: bool = False


OPTIONS = GlobalOptions()
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def load() -> Config:
    """The validated configuration (everything is checked before any job starts)."""
    return load_config(OPTIONS.config)


def progress(json_output: bool = False) -> Progress:
    return default_progress(quiet=OPTIONS.quiet or json_output)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def short_time(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def table(*columns: str):  # noqa: ANN201 - rich.table.Table
    """A plain table whose cells do not wrap, except the last column (errors, notes)."""
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for i, name in enumerate(columns):
        t.add_column(name, no_wrap=i < len(columns) - 1)
    return t
