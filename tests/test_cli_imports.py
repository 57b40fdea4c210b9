"""Start-up: a command loads the libraries it uses, and no others.

Every `backupctl` command is a new process, and an incremental backup is about a second of restic, so
importing boto3, pydicom or APScheduler for nothing is a visible share of it (they cost 0.05 to 0.2 s each).
These checks run the real CLI in a new process under `python -X importtime`, which lists every module the
process imported, and look for libraries that belong to other commands. Nothing is timed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import typer

from backupctl.cli import app
from backupctl.config import Config
from tests.helpers import cli

S3 = {"boto3", "botocore", "moto"}
DICOM = {"pydicom", "numpy"}
SCHEDULER = {"apscheduler"}
SIGNING = {"cryptography"}
CATALOG = {"sqlite3"}
NO_COMMAND_NEEDS_THEM_FOR_HELP = S3 | DICOM | SCHEDULER | SIGNING | CATALOG
CONFIG_AND_OUTPUT = {"pydantic", "rich"}


def imported_modules(*python_args: str) -> set[str]:
    """The dotted names of every module a new `python -X importtime ARGS...` process imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", *python_args], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("python_args", [("-c", "import backupctl.cli"), ("-m", "backupctl", "--version")],
                         ids=["import backupctl.cli", "backupctl --version"])
def test_the_cli_itself_imports_no_library_of_any_command(python_args: tuple[str, ...]) -> None:
    loaded = packages(imported_modules(*python_args)) & (NO_COMMAND_NEEDS_THEM_FOR_HELP | CONFIG_AND_OUTPUT)
    assert loaded == set()


def test_the_top_level_help_needs_only_rich() -> None:
    loaded = packages(imported_modules("-m", "backupctl", "--help")) & NO_COMMAND_NEEDS_THEM_FOR_HELP
    assert loaded == set()


def command_paths(group: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for command in group.registered_commands:
        yield (*prefix, command.name or "")
    for sub in group.registered_groups:
        yield (*prefix, sub.name or "")
        yield from command_paths(sub.typer_instance, (*prefix, sub.name or ""))


def test_no_command_help_imports_a_library_of_what_it_would_run() -> None:
    # One process asks every command for its help, so what any of them imported is in the union.
    # (pydantic comes with typer, which checks the global options with it; rich renders the help.)
    paths = list(command_paths(app))
    assert ("backup", "run") in paths and ("s3", "audit") in paths and ("scheduler", "run") in paths
    script = ("import sys\nfrom backupctl.cli import run\n"
              f"for path in {paths!r}:\n"
              "    assert run([*path, '--help']) == 0, path\n")
    loaded = packages(imported_modules("-c", script)) & NO_COMMAND_NEEDS_THEM_FOR_HELP
    assert loaded == set()


def test_a_backup_to_offline_media_loads_no_s3_or_pacs_client(installation: Config) -> None:
    cli(installation, "media", "init", "offline", "--label", "DISK-A", check=True)
    modules = imported_modules("-m", "backupctl", "--config", str(installation.path), "--quiet",
                               "backup", "run", "pacs", "--json")
    assert "backupctl.actions.backup" in modules          # it did run the backup
    assert packages(modules) & S3 == set()
    assert {m for m in modules if m.startswith(("backupctl.s3", "backupctl.targets.s3", "backupctl.pacs"))} == set()


def callbacks(group: typer.Typer) -> Iterator[Callable[..., object]]:
    if group.registered_callback and group.registered_callback.callback:
        yield group.registered_callback.callback
    for command in group.registered_commands:
        assert command.callback is not None
        yield command.callback
    for sub in group.registered_groups:
        yield from callbacks(sub.typer_instance)


def test_command_annotations_are_objects_not_strings() -> None:
    # typer reads every command's annotations at each start; as strings (`from __future__ import annotations`)
    # each one is an eval, which made building the command tree cost 18 ms instead of 5 ms.
    stringly = [f"{f.__module__}.{f.__qualname__}" for f in callbacks(app)
                if any(isinstance(a, str) for a in f.__annotations__.values())]
    assert stringly == []
