"""`init` and `config check`."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli.common import OPTIONS, out, print_json

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(config_app, name="config")
    app.command("man")(man)


def man() -> None:
    """Print the man page (roff) generated from this command line: `backupctl man > backupctl.1`."""
    import click
    import typer.main

    from backupctl.cli import app
    from backupctl.cli.manpage import render

    command = typer.main.get_command(app)
    # typer >= 0.26 builds on a vendored click: the context must be of the command's own click
    context = getattr(command, "context_class", click.Context)
    typer.echo(render(command, context), nl=False)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder for backupctl.toml, jobs/, secrets/, var/.")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Create a commented backupctl.toml, a sample job and drill, the password file (0600) and the staging
    restic repository. Idempotent: what exists is kept."""
    from backupctl.actions.init import initialize

    config, created = initialize(directory, samples=True)
    if json_output:
        print_json({"ok": True, "config": str(config.path), "created": created,
                    "jobs": sorted(config.jobs), "drills": sorted(config.drills)})
        return
    for item in created:
        out.print(f"created {item}")
    out.print(f"ready: {config.path} (check it with `backupctl -c {config.path} config check`)")


@config_app.command("check")
def check(json_output: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False) -> None:
    """Validate backupctl.toml, jobs/*.toml and restore_drills/*.toml without running anything."""
    from backupctl.config import collect_config, config_path

    config, errors = collect_config(OPTIONS.config, secrets=True)
    path = config_path(OPTIONS.config)
    if json_output:
        print_json({"config": str(path), "ok": not errors, "errors": errors,
                    "jobs": sorted(config.jobs) if config else [], "drills": sorted(config.drills) if config else [],
                    "targets": sorted(config.settings.targets) if config else [],
                    "safe_excludes": config.safe_excludes if config else {}})
    else:
        for line in errors:
            typer.echo(f"error: {line}", err=True)
        if config:
            for job, added in sorted(config.safe_excludes.items()):
                out.print(f"job {job}: a system root is a source; backupctl excludes {', '.join(added)}")
        if config and not errors:
            out.print(f"{path}: ok — {len(config.jobs)} job(s), {len(config.drills)} drill(s), "
                      f"{len(config.settings.targets)} target(s)")
    if errors:
        raise typer.Exit(2)
