"""Job hooks around a real backup run (restic on a small archive)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.errors import ConfigError, HookFailed
from backupctl.hooks import hook_env, run_hook
from tests.helpers import assert_one_line_error, cli, make_installation

DUMP_ENV = ("python3 -c 'import json,os; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith(\"BACKUPCTL_\")}))' >> OUT")


def _hooks(**phases: object) -> str:
    lines = ["[hooks]"] + [f"{k} = {json.dumps(v)}" for k, v in phases.items()]
    return "\n".join(lines) + "\n"


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_after_hook_gets_the_snapshot_and_before_hook_runs_first(tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    config = make_installation(tmp_path, job_extra=_hooks(
        before=[f"echo before >> {log}"],
        after=[DUMP_ENV.replace("OUT", str(tmp_path / "after.json")), ["/bin/sh", "-c", f"echo after >> {log}"]]))
    outcome = run_backup(config, "pacs", replicate=False)
    assert log.read_text().split() == ["before", "after"]
    env = _records(tmp_path / "after.json")[0]
    assert env["BACKUPCTL_JOB"] == "pacs" and env["BACKUPCTL_PHASE"] == "after"
    assert env["BACKUPCTL_SNAPSHOT_ID"] == outcome.snapshot_id and env["BACKUPCTL_STATUS"] == "success"
    assert env["BACKUPCTL_RUN_ID"] == str(outcome.run_id)
    assert str(tmp_path / "archive") in env["BACKUPCTL_SOURCES"]


def test_failing_before_hook_aborts_the_run_and_on_error_hears_why(tmp_path: Path) -> None:
    config = make_installation(tmp_path, job_extra=_hooks(
        before=["echo 'pg_dump: connection refused' >&2; exit 4"],
        on_error=[DUMP_ENV.replace("OUT", str(tmp_path / "err.json"))]))
    with pytest.raises(HookFailed) as exc:
        run_backup(config, "pacs", replicate=False)
    assert "exited 4" in exc.value.one_line() and "connection refused" in exc.value.one_line()
    with open_catalog(config.catalog_path) as catalog:
        assert snapshot_rows.list_snapshots(catalog, "pacs") == []
        assert run_rows.list_runs(catalog, "pacs")[0]["status"] == "failed"
    env = _records(tmp_path / "err.json")[0]
    assert env["BACKUPCTL_PHASE"] == "on_error" and "exited 4" in env["BACKUPCTL_ERROR"]
    assert_one_line_error(cli(config, "backup", "run", "pacs", "--no-replicate"), 1, "before hook")


def test_failing_after_hook_keeps_the_snapshot_and_exits_partial(tmp_path: Path) -> None:
    config = make_installation(tmp_path, job_extra=_hooks(after=["exit 9"]))
    outcome = run_backup(config, "pacs", replicate=False)
    assert outcome.status == "partial" and outcome.hook_errors == ["after hook `exit 9` exited 9"]
    with open_catalog(config.catalog_path) as catalog:
        snaps = snapshot_rows.list_snapshots(catalog, "pacs")
        assert [s["status"] for s in snaps] == ["complete"]
        assert run_rows.list_runs(catalog, "pacs")[0]["status"] == "partial"
    assert_one_line_error(cli(config, "backup", "run", "pacs", "--no-replicate"), 3, "is saved", "exit 9")


def test_hook_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "child-survived"
    result = run_hook(f"(sleep 2; touch {marker}) & sleep 30", env=hook_env("j", "before"), timeout=0.5)
    assert result.returncode is None and not result.ok
    # the background child was in the hook's process group: it is gone, so the marker never appears
    pgid_alive = any(_cmd(p).startswith("sleep 2") for p in os.listdir("/proc") if p.isdigit())
    assert not pgid_alive


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_hooks_are_validated_with_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_installation(tmp_path, job_extra="[hooks]\nbefor = ['true']\n")
    result = cli(tmp_path / "backupctl.toml", "backup", "run", "pacs")
    assert_one_line_error(result, 2, "hooks.befor", "not a known setting")
