"""Logging for the daemon and its job processes: text lines or JSON lines, each carrying the job, the
scheduled execution and, where known, the catalog run ids.

Context travels two ways: `log_context(job=..., execution=...)` for the current thread/task (contextvars),
and the environment (`BACKUPCTL_LOG_CONTEXT`, JSON) for a child process the daemon starts, so the daemon's and
the child's lines of one execution share its id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, TextIO

CONTEXT_ENV = "BACKUPCTL_LOG_CONTEXT"
FORMAT_ENV = "BACKUPCTL_LOG_FORMAT"
_context: ContextVar[dict[str, Any]] = ContextVar("backupctl_log_context", default={})  # noqa: B039 - never mutated
# attributes every LogRecord has; anything else on a record came from `extra=` and is a structured field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


def inherited_context() -> dict[str, Any]:
    """The context a parent process passed in the environment (empty when there is none)."""
    try:
        data = json.loads(os.environ.get(CONTEXT_ENV, "{}"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def child_env(fmt: str) -> dict[str, str]:
    """Environment entries that make a child process log like this one, with this context."""
    return {CONTEXT_ENV: json.dumps(current_context(), default=str), FORMAT_ENV: fmt}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {**inherited_context(), **_context.get()}
    fields.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
    return fields


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's API
        # local time with its offset: a line read months later, or on another host, is still unambiguous
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def setup_logging(fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Replace the root handlers: one stream handler (stderr, for journald) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # APScheduler's own lines ("Running job", "skipped: maximum number of running instances", "missed by")
    # repeat ours, which carry the job and execution ids; keep its errors (e.g. a job it cannot restore)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


# the log of runs started by hand (`<state>/log/backupctl.log`): what stderr showed, kept after the terminal closed
RUN_LOG_NAME = "backupctl.log"
RUN_LOGGER = "backupctl.run"
RUN_LOG_MAX_BYTES = 5 * 1024 * 1024
RUN_LOG_BACKUPS = 5


def run_log_path(state_dir: Path) -> Path:
    return state_dir / "log" / RUN_LOG_NAME


def attach_run_log(state_dir: Path, level: int = logging.INFO) -> Path | None:
    """Also write the `backupctl` loggers' records to `<state>/log/backupctl.log`, rotated by size. Once per
    process; None when the folder cannot be written (a read-only copy of the state must not stop a command)."""
    path = run_log_path(state_dir)
    logger = logging.getLogger("backupctl")
    if any(isinstance(h, RotatingFileHandler) and Path(h.baseFilename) == path.absolute() for h in logger.handlers):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = RotatingFileHandler(path, maxBytes=RUN_LOG_MAX_BYTES, backupCount=RUN_LOG_BACKUPS,
                                      encoding="utf-8")
        os.chmod(path, 0o600)   # run lines name studies and paths: for the backup user only
    except OSError:
        return None
    handler.setFormatter(TextFormatter())
    handler.setLevel(level)
    logger.addHandler(handler)
    # the CLI edge's own lines (command, exit code, error) go to this file only: stderr already shows the error
    edge = logging.getLogger(RUN_LOGGER)
    edge.propagate = False
    edge.setLevel(logging.INFO)
    edge.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return path
