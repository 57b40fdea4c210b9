"""Bad input and failures: one clear line, the documented exit code, no traceback, nothing half-written."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from tests.helpers import assert_one_line_error, cli, make_installation


def test_wrong_password(installation: Config) -> None:
    password = installation.base / "secrets" / "restic-password"
    password.write_text("not the password\n")
    result = cli(installation, "backup", "run", "pacs", "--no-replicate")
    assert_one_line_error(result, 2, "wrong password")
    with open_catalog(installation.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
        assert run["status"] == "failed" and "wrong password" in run["error"]
        assert snapshot_rows.list_snapshots(catalog) == []


def test_password_file_readable_by_others_is_refused(installation: Config) -> None:
    os.chmod(installation.base / "secrets" / "restic-password", 0o644)
    result = cli(installation, "backup", "run", "pacs")
    assert_one_line_error(result, 2, "readable by group or others", "chmod 600")


def test_missing_repository(installation: Config) -> None:
    shutil.rmtree(installation.staging_repository)
    result = cli(installation, "backup", "run", "pacs", "--no-replicate")
    assert_one_line_error(result, 1, "no restic repository at", "backupctl init")


def test_missing_source_fails_before_anything_is_recorded(installation: Config, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "archive")
    result = cli(installation, "backup", "run", "pacs")
    assert_one_line_error(result, 2, "does not exist", "archive")
    with open_catalog(installation.catalog_path) as catalog:
        assert run_rows.list_runs(catalog) == []


def test_invalid_job_file_names_file_field_and_expectation(installation: Config) -> None:
    (installation.base / "jobs" / "broken.toml").write_text('sources = ["/x"]\n[retention]\nkeep_daily = "many"\n')
    result = cli(installation, "backup", "run", "pacs")
    assert_one_line_error(result, 2, "broken.toml", "retention.keep_daily", "integer")
    check = cli(installation, "config", "check")
    assert check.returncode == 2 and "broken.toml: retention.keep_daily" in check.stderr


@pytest.mark.parametrize(("text", "fragments"), [
    ('sources = ["/x"]\nschedule = "every day"\n', ("schedule", "cron")),
    ('sources = ["/x"]\ntargets = ["nowhere"]\n', ("targets", "'nowhere' is not a target")),
    ('sources = ["/x"]\nsorces = 1\n', ("sorces", "not a known setting")),
    ('sources = [\n', ("not valid TOML",)),
    ('name = "pacs"\nsources = ["/x"]\n', ("name", "already used")),
])
def test_config_errors(installation: Config, text: str, fragments: tuple[str, ...]) -> None:
    (installation.base / "jobs" / "zz.toml").write_text(text)
    result = cli(installation, "config", "check")
    assert result.returncode == 2
    assert all(f in result.stderr for f in fragments), result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_passes_on_a_good_config(installation: Config) -> None:
    result = cli(installation, "config", "check")
    assert result.returncode == 0 and "1 job(s)" in result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    result = cli(tmp_path / "nope.toml", "snapshots")
    assert_one_line_error(result, 2, "nope.toml", "file not found", "backupctl init")


def test_unknown_job(installation: Config) -> None:
    assert_one_line_error(cli(installation, "backup", "run", "nosuchjob"), 2, "no job named 'nosuchjob'")


@pytest.fixture
def world_readable_installation() -> Config:
    """An installation an unprivileged user can use (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="backupctl-unpriv-"))
    os.chmod(root, 0o755)
    config = make_installation(root)
    yield config
    shutil.rmtree(root, ignore_errors=True)


def test_unreadable_file_gives_partial_snapshot_exit_3(world_readable_installation: Config) -> None:
    config = world_readable_installation
    root = config.base
    victim = sorted((root / "archive").rglob("*.dcm"))[0]
    user = None
    if os.geteuid() == 0:
        # root reads everything regardless of mode bits: run the backup as an unprivileged user instead
        user = 65534
        subprocess.run(["chown", "-R", f"{user}:{user}", str(root)], check=True)
        os.chown(victim, 0, 0)
    os.chmod(victim, 0)
    result = cli(config, "backup", "run", "pacs", "--no-replicate", user=user)
    assert_one_line_error(result, 3, "could not be read", victim.name[:20])
    with open_catalog(config.catalog_path) as catalog:
        (run,) = run_rows.list_runs(catalog, "pacs")
        (snap,) = snapshot_rows.list_snapshots(catalog, "pacs")
    assert run["status"] == "partial" and snap["status"] == "partial" and snap["files"] == 11
    assert stat.S_IMODE(victim.stat().st_mode) == 0


@pytest.mark.parametrize("args", [["bogus"], ["snapshots", "--nope"], ["backup", "run"], ["runs", "-n", "many"]])
def test_bad_arguments_are_one_line_errors(installation: Config, args: list[str]) -> None:
    assert_one_line_error(cli(installation, *args), 2, "--help")
