"""`backupctl man`: a roff man page (section 1) generated from the command tree, so it never drifts from
the CLI. `make man` writes it to man/backupctl.1; read it with `man -l man/backupctl.1`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from backupctl import __version__


def _roff(text: str) -> str:
    """Plain text made safe for roff: backslashes, leading dots and quotes, no rich markup."""
    text = re.sub(r"\[/?[a-z ]+\]", "", text)
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in (" ".join(part.split()) for part in text.split("\n\n")))


def _commands(group: Any, ctx: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub_ctx = type(ctx)(command, info_name=name, parent=ctx)
        if hasattr(command, "list_commands"):
            found += _commands(command, sub_ctx, (*path, name))
        else:
            found.append(((*path, name), command, sub_ctx))
    return found


def _option_lines(command: Any, ctx: Any) -> list[str]:
    lines = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:   # arguments and hidden options
            if getattr(param, "param_type_name", "") == "argument":
                lines += [".TP", f"\\fI{_roff(param.human_readable_name)}\\fR", _roff(_argument_help(param))]
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text or "")]
    return lines


def _argument_help(param: Any) -> str:
    return getattr(param, "help", None) or "(argument)"


def render(click_group: Any, ctx_class: Any) -> str:
    """The man page of `click_group` (the root command of the CLI), as roff text."""
    ctx = ctx_class(click_group, info_name="backupctl")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    out = [f'.TH BACKUPCTL 1 "{day}" "backupctl {__version__}" "User Commands"',
           ".SH NAME", "backupctl \\- " + _roff((click_group.help or "").split("\n")[0]),
           ".SH SYNOPSIS", "\\fBbackupctl\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
           ".SH DESCRIPTION", _roff(click_group.help or ""),
           ".SH GLOBAL OPTIONS", *_option_lines(click_group, ctx),
           ".SH COMMANDS"]
    for path, command, sub_ctx in _commands(click_group, ctx):
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        out += [f".SS {_roff(' '.join(path))}", f"\\fBbackupctl {_roff(' '.join(path))}\\fR {_roff(usage)}",
                ".PP", _roff(command.help or command.short_help or ""), *_option_lines(command, sub_ctx)]
    out += [".SH EXIT STATUS",
            "0 success; 1 a failed run; 2 bad input (configuration, arguments, wrong password, wrong disk); "
            "3 partial (a snapshot was saved but some files could not be read); 130 interrupted.",
            ".SH ENVIRONMENT", ".TP", "\\fBBACKUPCTL_CONFIG\\fR", "The configuration file (as \\fB\\-\\-config\\fR).",
            ".SH FILES", ".TP", "\\fIbackupctl.toml\\fR, \\fIjobs/*.toml\\fR, \\fIrestore_drills/*.toml\\fR",
            "The configuration; `backupctl init` writes commented samples.", ".TP",
            "\\fI<state>/log/backupctl.log\\fR", "The log of manual runs (rotated).",
            ".SH SEE ALSO", "\\fBrestic\\fR(1), the README of backupctl."]
    return "\n".join(out) + "\n"
