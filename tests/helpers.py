"""Shared test helpers: a throw-away installation and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from backupctl.actions.init import initialize
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive

SMALL_SPEC = ArchiveSpec(patients=2, studies_per_patient=2, series_per_study=1, instances_per_series=3,
                         rows=32, columns=32, seed=3)

CONFIG_TEXT = """\
[catalog]
path = "var/catalog.sqlite"

[staging]
repository = "var/staging-repo"
password_file = "secrets/restic-password"

[targets.offline]
type = "media"
mount = "disk"
labels = ["DISK-A", "DISK-B"]
rotation_days = 7
allow_unmounted = true
"""


def make_installation(root: Path, spec: ArchiveSpec = SMALL_SPEC, config_text: str = CONFIG_TEXT,
                      job_extra: str = "") -> Config:
    """An initialised config in `root` with job `pacs` over a synthetic archive in `root/archive`."""
    archive = root / "archive"
    write_archive(archive, spec)
    (root / "disk").mkdir(parents=True, exist_ok=True)
    initialize(root, config_text)
    (root / "jobs" / "pacs.toml").write_text(
        f'name = "pacs"\nsources = ["{archive}"]\ntargets = ["offline"]\nschedule = "0 2 * * *"\n{job_extra}')
    return load_config(root / "backupctl.toml")


def cli(config: Config | Path | None, *args: str, check: bool = False, timeout: float = 120,
        env: dict[str, str] | None = None, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `backupctl` as a user would, in its own process."""
    argv = [sys.executable, "-m", "backupctl"]
    if config is not None:
        argv += ["--config", str(config.path if isinstance(config, Config) else config)]
    argv += list(args)
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"backupctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def wait_for(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.01,
             what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
