"""The `backupctl` command line. Thin: parses arguments, calls actions, prints; errors become one line.

Every package error (`backupctl.errors`) is printed as `error: <what is wrong> (<how to fix>)` with its exit
code: 2 bad input, 1 failed run, 3 partial, 4 suspect snapshot, 130 interrupted. A traceback is shown only with
--debug.
"""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from backupctl import __version__
from backupctl.audit.edge import CommandWatch
from backupctl.cli import audit as audit_cmds
from backupctl.cli import backup as backup_cmds
from backupctl.cli import console as console_cmds
from backupctl.cli import demo as demo_cmds
from backupctl.cli import dev as dev_cmds
from backupctl.cli import drill as drill_cmds
from backupctl.cli import find as find_cmds
from backupctl.cli import incident as incident_cmds
from backupctl.cli import media as media_cmds
from backupctl.cli import pacs as pacs_cmds
from backupctl.cli import s3 as s3_cmds
from backupctl.cli import scheduler as scheduler_cmds
from backupctl.cli import setup as setup_cmds
from backupctl.cli import verify as verify_cmds
from backupctl.cli.common import OPTIONS, err, print_json
from backupctl.errors import BackupctlError, Terminated
from backupctl.process import raise_on_sigterm

# typer >= 0.26 vendors its own copy of click: catch the exceptions of whichever is in use
_click_exceptions = [click.exceptions]
try:
    from typer._click import exceptions as _typer_click_exceptions

    _click_exceptions.append(_typer_click_exceptions)
except ImportError:
    pass
_CLICK_ERRORS = tuple(m.ClickException for m in _click_exceptions)
_ABORTS = (click.exceptions.Abort, typer.Abort)

app = typer.Typer(
    name="backupctl",
    help="Keep PACS imaging archives recoverable: restic snapshots, offline media, S3 Object Lock, "
         "verification and restore drills.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,   # --install-completion and --show-completion (bash, zsh, fish)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backupctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="BACKUPCTL_CONFIG",
                                                help="backupctl.toml to use [default: ./backupctl.toml]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log debug details and show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    OPTIONS.config, OPTIONS.quiet, OPTIONS.debug = config, quiet, debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # the terminal shows warnings (or everything with --debug) whatever the run log below keeps
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if debug else logging.WARNING)


setup_cmds.register(app)
backup_cmds.register(app)
find_cmds.register(app)
app.add_typer(media_cmds.app, name="media")
app.add_typer(pacs_cmds.app, name="pacs")
app.add_typer(dev_cmds.app, name="dev")
app.add_typer(drill_cmds.app, name="drill")
app.add_typer(incident_cmds.app, name="incident")
app.add_typer(incident_cmds.keys_app, name="keys")
demo_cmds.register(app)
s3_cmds.register(app)
verify_cmds.register(app)
scheduler_cmds.register(app)
app.add_typer(audit_cmds.app, name="audit")
app.add_typer(console_cmds.app, name="console")


# the CLI edge's lines (command, exit code) go to the run log only (`logs.attach_run_log`); before the config
# is loaded there is none, and stderr shows the error itself
_run_log = logging.getLogger("backupctl.run")
_run_log.propagate = False
_run_log.addHandler(logging.NullHandler())


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by `main` and by tests). Every command's outcome is
    recorded in the audit log here, the one place all of them pass (backupctl.audit.edge)."""
    args = sys.argv[1:] if argv is None else argv
    OPTIONS.json_wanted = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    OPTIONS.json_printed = False
    command = typer.main.get_command(app)
    watch = CommandWatch(command)
    code = 1
    try:
        code = _dispatch(command, argv, watch)
    except BaseException as exc:   # a bug's traceback follows, after its record
        watch.error = watch.error or exc
        raise
    finally:
        watch.finish(code)
    return code


def _dispatch(command: Any, argv: list[str] | None, watch: CommandWatch) -> int:
    log = _run_log
    try:
        rc = command.main(args=argv, prog_name="backupctl", standalone_mode=False)
    except BackupctlError as exc:
        watch.error = exc
        if OPTIONS.debug:
            logging.getLogger("backupctl").exception("error")
        log.error("%s: exit %d: %s", OPTIONS.command, exc.exit_code, exc.one_line())
        _json_outcome(exc.exit_code, exc.one_line(), type(exc).__name__, exc.details)
        _print_error(exc.one_line())
        return exc.exit_code
    except (*_ABORTS, KeyboardInterrupt, Terminated) as exc:
        log.warning("%s: interrupted", OPTIONS.command)
        watch.error = exc
        _json_outcome(130, "interrupted", "Interrupted")
        err.print("interrupted")
        return 130
    except _CLICK_ERRORS as exc:
        watch.error = exc
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
            exc.show()
            return exc.exit_code
        # bad arguments: one line, like every other error, and a pointer to --help
        where = f"`{exc.ctx.command_path} --help`" if getattr(exc, "ctx", None) else "`backupctl --help`"
        _json_outcome(exc.exit_code, exc.format_message(), "UsageError")
        _print_error(exc.format_message(), f" (see {where})")
        return exc.exit_code
    except Exception as exc:
        watch.error = exc
        # a bug: its traceback follows, but a --json reader still gets its object
        log.error("%s: internal error: %r", OPTIONS.command, exc)
        _json_outcome(1, f"internal error: {exc!r}", type(exc).__name__)
        raise
    rc = rc if isinstance(rc, int) else 0
    log.info("%s: exit %d", OPTIONS.command, rc)
    return rc


def _json_outcome(code: int, message: str, error_type: str, details: dict | None = None) -> None:
    """With --json, a command that ends in an error still prints its one object (unless it printed it already,
    as `media sync` does before it raises): what was done (`details`), the status and the exit code."""
    if not OPTIONS.json_wanted or OPTIONS.json_printed:
        return
    from backupctl.status import Status

    status = {Status.PARTIAL.exit_code: Status.PARTIAL, Status.INTERRUPTED.exit_code: Status.INTERRUPTED}.get(
        code, Status.FAILED)
    print_json({**(details or {}), "ok": False, "status": status, "exit_code": code, "error": message,
                "error_type": error_type})


def _print_error(message: str, suffix: str = "") -> None:
    """`error: message` in red on stderr; the message is escaped (brackets in it are not rich markup)."""
    from rich.markup import escape  # rich only once there is something to print

    err.print(f"[bold red]error:[/] {escape(message)}{suffix}", highlight=False)


def main() -> None:
    # what backupctl writes (catalog, manifests, reports, logs, state) names studies and paths: for its own user
    # only, whatever umask the shell or unit had; the files meant for others are written with explicit modes
    os.umask(0o077)
    raise_on_sigterm()
    sys.exit(run())
