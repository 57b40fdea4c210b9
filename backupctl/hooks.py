"""Job hooks: commands run before and after a job's snapshot (borgmatic's and Kopia's before/after actions).

A hook is a string (run by /bin/sh, so pipes and redirections work) or a list (run as is, no shell). It
runs in its own process group with a timeout; on timeout the whole group is killed, so a hook that
started children leaves none behind. It gets the job's facts as environment variables:

    BACKUPCTL_JOB, BACKUPCTL_PHASE (before | after | on_error), BACKUPCTL_RUN_ID, BACKUPCTL_SOURCES
    (paths joined by ':'), and, when known, BACKUPCTL_SNAPSHOT_ID, BACKUPCTL_STATUS, BACKUPCTL_ERROR.

Its output is kept for the log (last lines only); secrets should reach hooks by file, as everywhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backupctl import process
from backupctl.config import Hooks
from backupctl.errors import HookFailed

log = logging.getLogger("backupctl.hooks")
OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class HookResult:
    command: str                 # for messages: the command as configured, shortened
    returncode: int | None       # None: killed on timeout
    seconds: float
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def hook_env(job: str, phase: str, *, run_id: int | None = None, sources: Sequence[Path] = (),
             snapshot_id: str | None = None, status: str | None = None, error: str | None = None,
             base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    facts = {"JOB": job, "PHASE": phase, "RUN_ID": "" if run_id is None else str(run_id),
             "SOURCES": os.pathsep.join(str(p) for p in sources), "SNAPSHOT_ID": snapshot_id,
             "STATUS": status, "ERROR": error}
    env.update({f"BACKUPCTL_{k}": v for k, v in facts.items() if v is not None})
    return env


def describe(command: str | Sequence[str]) -> str:
    text = command if isinstance(command, str) else " ".join(command)
    return text if len(text) <= 80 else text[:77] + "..."


def run_hook(command: str | Sequence[str], *, env: Mapping[str, str], timeout: float,
             cwd: Path | None = None) -> HookResult:
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    try:
        # a hook dies with backupctl (SIGKILL): it serves a run that is over
        done = process.run(argv, env=env, cwd=cwd, timeout=timeout, merge_stderr=True, text=False)
    except OSError as exc:
        return HookResult(describe(command), 127, 0.0, f"cannot run: {exc.strerror}")
    text = (done.stdout or b"").decode("utf-8", "replace")[-OUTPUT_TAIL:]
    return HookResult(describe(command), done.returncode, done.seconds, process.mask(text))


def run_hooks(commands: Sequence[str | Sequence[str]], *, phase: str, env: Mapping[str, str],
              timeout: float, cwd: Path | None = None, stop_on_failure: bool = True) -> list[HookResult]:
    """Run hooks in order. With `stop_on_failure` the first failing one raises HookFailed."""
    results: list[HookResult] = []
    for command in commands:
        result = run_hook(command, env=env, timeout=timeout, cwd=cwd)
        results.append(result)
        log.info("hook %s `%s`: %s in %.1fs", phase, result.command,
                 "ok" if result.ok else _what_failed(result, timeout), result.seconds)
        if not result.ok:
            log.info("hook %s `%s` output: %s", phase, result.command, result.output_tail[-1000:])
            if stop_on_failure:
                last = result.output_tail.strip().splitlines()[-1:] or [""]
                raise HookFailed(f"{phase} hook `{result.command}` {_what_failed(result, timeout)}"
                                 + (f": {last[0][:200]}" if last[0] else ""),
                                 hint="fix the hook or remove it from the job's [hooks]")
    return results


def _what_failed(result: HookResult, timeout: float) -> str:
    if result.returncode is None:
        return f"timed out after {timeout:g}s (killed)"
    return f"exited {result.returncode}"


class JobHooks:
    """A job's hooks around one backup run: `before` may abort the run, `after` and `on_error` report."""

    def __init__(self, job: str, commands: Hooks, *, run_id: int | None, sources: Sequence[Path] = (),
                 cwd: Path | None = None) -> None:
        self.job, self.commands, self.run_id, self.sources, self.cwd = job, commands, run_id, sources, cwd

    def _env(self, phase: str, **facts: str | None) -> dict[str, str]:
        return hook_env(self.job, phase, run_id=self.run_id, sources=self.sources, **facts)

    def before(self) -> None:
        """Raises HookFailed on the first failing hook: the run stops before reading any source."""
        run_hooks(self.commands.before, phase="before", env=self._env("before"),
                  timeout=self.commands.timeout_seconds, cwd=self.cwd)

    def after(self, snapshot_id: str | None, status: str) -> list[str]:
        """Runs every `after` hook; returns one line per failure (the snapshot is saved either way)."""
        results = run_hooks(self.commands.after, phase="after",
                            env=self._env("after", snapshot_id=snapshot_id, status=status),
                            timeout=self.commands.timeout_seconds, cwd=self.cwd, stop_on_failure=False)
        return [f"after hook `{r.command}` {_what_failed(r, self.commands.timeout_seconds)}"
                for r in results if not r.ok]

    def on_error(self, error: str) -> None:
        """Best effort: a failing on_error hook is logged, never hides the run's own error."""
        try:
            run_hooks(self.commands.on_error, phase="on_error",
                      env=self._env("on_error", status="failed", error=error),
                      timeout=self.commands.timeout_seconds, cwd=self.cwd, stop_on_failure=False)
        except Exception:  # noqa: BLE001 - reporting must not mask the original failure
            log.exception("on_error hooks of job %s", self.job)
