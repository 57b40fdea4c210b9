"""Job hooks around a real backup run (restic on a small archive)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config, load_config
from backupctl.errors import ConfigError, HookFailed
from backupctl.hooks import hook_env, run_hook
from tests.helpers import assert_one_line_error, cli, make_installation, wait_for

DUMP_ENV = ("python3 -c 'import json,os; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith(\"BACKUPCTL_\")}))' >> OUT")


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hooks")
    make_installation(root)
    return root


def _job(root: Path, name: str, **phases: object) -> Config:
    """A job `name` over the installation's archive, with these hooks; the loaded config."""
    lines = [f'name = "{name}"', f'sources = ["{root / "archive"}"]', "", "[hooks]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in phases.items()]
    (root / "jobs" / f"{name}.toml").write_text("\n".join(lines) + "\n")
    return load_config(root / "backupctl.toml")


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_after_hook_gets_the_snapshot_and_before_hook_runs_first(install: Path, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    config = _job(install, "ok",
                  before=[f"echo before >> {log}"],
                  after=[DUMP_ENV.replace("OUT", str(tmp_path / "after.json")),
                         ["/bin/sh", "-c", f"echo after >> {log}"]])
    outcome = run_backup(config, "ok", replicate=False)
    assert log.read_text().split() == ["before", "after"]
    env = _records(tmp_path / "after.json")[0]
    assert env["BACKUPCTL_JOB"] == "ok" and env["BACKUPCTL_PHASE"] == "after"
    assert env["BACKUPCTL_SNAPSHOT_ID"] == outcome.snapshot_id and env["BACKUPCTL_STATUS"] == "success"
    assert env["BACKUPCTL_RUN_ID"] == str(outcome.run_id)
    assert str(install / "archive") in env["BACKUPCTL_SOURCES"]


def test_failing_before_hook_aborts_the_run_and_on_error_hears_why(install: Path, tmp_path: Path) -> None:
    config = _job(install, "before-fails",
                  before=["echo 'pg_dump: connection refused' >&2; exit 4"],
                  on_error=[DUMP_ENV.replace("OUT", str(tmp_path / "err.json"))])
    with pytest.raises(HookFailed) as exc:
        run_backup(config, "before-fails", replicate=False)
    assert "exited 4" in exc.value.one_line() and "connection refused" in exc.value.one_line()
    with open_catalog(config.catalog_path) as catalog:
        assert snapshot_rows.list_snapshots(catalog, "before-fails") == []
        assert run_rows.list_runs(catalog, "before-fails")[0]["status"] == "failed"
    env = _records(tmp_path / "err.json")[0]
    assert env["BACKUPCTL_PHASE"] == "on_error" and "exited 4" in env["BACKUPCTL_ERROR"]
    assert_one_line_error(cli(config, "backup", "run", "before-fails", "--no-replicate"), 1, "before hook")


def test_failing_after_hook_keeps_the_snapshot_and_exits_partial(install: Path) -> None:
    config = _job(install, "after-fails", after=["exit 9"])
    outcome = run_backup(config, "after-fails", replicate=False)
    assert outcome.status == "partial" and outcome.hook_errors == ["after hook `exit 9` exited 9"]
    with open_catalog(config.catalog_path) as catalog:
        snaps = snapshot_rows.list_snapshots(catalog, "after-fails")
        assert [s["status"] for s in snaps] == ["complete"]
        assert run_rows.list_runs(catalog, "after-fails")[0]["status"] == "partial"
    result = cli(config, "backup", "run", "after-fails", "--no-replicate")
    assert_one_line_error(result, 3, "is saved", "exit 9")


def test_hook_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    result = run_hook(f"sleep 60 & echo $! > {pidfile}; sleep 60", env=hook_env("j", "before"), timeout=0.5)
    assert result.returncode is None and not result.ok and result.seconds < 30
    child = int(pidfile.read_text())
    # the background child was in the hook's process group: killed too (gone, or a zombie awaiting init)
    wait_for(lambda: _gone(child), timeout=10, what="the hook's child to die")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_hooks_are_validated_with_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make_installation(tmp_path, job_extra="[hooks]\nbefor = ['true']\n")
    result = cli(tmp_path / "backupctl.toml", "backup", "run", "pacs")
    assert_one_line_error(result, 2, "hooks.befor", "not a known setting")
