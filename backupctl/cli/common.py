"""What every command group shares: the global options, loading the config, printing JSON and tables.

Start-up: `backupctl X` imports only what X runs. The command modules import their actions inside the
command functions, and this module defers pydantic (the config) and rich (the consoles) to first use, so
`--help` and `--json` runs pay for neither (tests/test_cli_imports.py holds this).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.progress import Progress, default_progress
from backupctl.units import human_bytes, zoned_time  # noqa: F401 - human_bytes re-exported for this module's users

if TYPE_CHECKING:
    from rich.console import Console

    from backupctl.config import Config


@dataclass
class GlobalOptions:
    config: Path | None = None
    quiet: bool = False
    debug: bool = False
    command: str = "backupctl"    # the command path, for the run log (never its arguments: they may name patients)
    json_wanted: bool = False          # --json given: every outcome, errors too, prints one JSON object
    json_printed: bool = False


class LazyConsole:
    """A rich Console created on first use: importing rich costs ~15 ms that `--json` runs never need."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:  # only called for what this class lacks: the Console's API
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


OPTIONS = GlobalOptions()
out = LazyConsole(highlight=False, soft_wrap=True)
err = LazyConsole(stderr=True, highlight=False, soft_wrap=True)


def load() -> Config:
    """The validated configuration (everything is checked before any job starts)."""
    from backupctl.config import load_config  # pydantic: only for commands that read the config
    from backupctl.logs import attach_run_log

    config = load_config(OPTIONS.config)
    OPTIONS.command = _command_path()
    if attach_run_log(config.state_dir) is not None:
        import logging

        logging.getLogger("backupctl.run").info("%s: started by uid %d", OPTIONS.command, os.getuid())
    return config


def _command_path() -> str:
    """`backupctl backup run` for the command running now (typer >= 0.26 keeps its contexts in its own click)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    return ctx.command_path if ctx is not None else OPTIONS.command


def progress(json_output: bool = False) -> Progress:
    return default_progress(quiet=OPTIONS.quiet or json_output)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
    OPTIONS.json_printed = True


def short_time(iso: str | None) -> str:
    return zoned_time(iso)


def clip(text: str, width: int = 100) -> str:
    """`text` in at most `width` characters, cut between words (an operator reads the whole of each word)."""
    import textwrap

    if len(text) <= width:
        return text
    return textwrap.shorten(text, width, placeholder=" …", break_on_hyphens=False, break_long_words=False)


def table(*columns: str):  # noqa: ANN201 - rich.table.Table
    """A plain table whose cells do not wrap, except the last column (errors, notes)."""
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for i, name in enumerate(columns):
        t.add_column(name, no_wrap=i < len(columns) - 1)
    return t
