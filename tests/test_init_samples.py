"""`backupctl init` writes a complete commented config, a sample job and drill that pass `config check` as
written; the repository's own example jobs/ and restore_drills/ load and check with a site config."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from backupctl.actions.init import default_config_text, initialize, template_text
from backupctl.config import (
    Drill,
    Job,
    MediaTargetConfig,
    S3Credentials,
    S3TargetConfig,
    Settings,
    collect_config,
)
from tests.helpers import cli

REPO = Path(__file__).resolve().parent.parent
# a commented key or table of the samples: `# key = value` or `# [table]`, with an optional trailing comment
COMMENTED = re.compile(r"^# (\[[A-Za-z0-9_.]+\](?:\s+#.*)?|[a-z_]+ = \S.*)$")


def uncommented(text: str) -> str:
    """The sample with every commented key and table made active (prose comments stay comments)."""
    lines = []
    for line in text.splitlines():
        m = COMMENTED.match(line)
        known_later = "allow_unmounted" in line and "allow_unmounted" not in MediaTargetConfig.model_fields
        lines.append(m.group(1) if m and not known_later else line)
    return "\n".join(lines) + "\n"


def test_init_writes_a_commented_config_sample_job_and_drill_that_pass_config_check(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = cli(None, "init", str(site), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["jobs"] == ["pacs"] and data["drills"] == ["pacs-weekly"]
    assert str(site / "jobs" / "pacs.toml") in data["created"]
    assert str(site / "restore_drills" / "pacs-weekly.toml") in data["created"]
    text = (site / "backupctl.toml").read_text()
    for section in ("[catalog]", "[staging]", "[paths]", "[signing]", "[verify]", "# [targets.offline]",
                    "# [targets.vault]", "# [scheduler]", "# [notify]", "# [smtp]", "# [report]", "# [audit]"):
        assert section in text, section
    check = cli(site / "backupctl.toml", "config", "check")
    assert check.returncode == 0, check.stderr
    assert "1 job(s), 1 drill(s), 0 target(s)" in check.stdout


def test_init_is_idempotent_and_never_touches_an_operators_files(tmp_path: Path) -> None:
    site = tmp_path / "site"
    cli(None, "init", str(site), check=True)
    job = site / "jobs" / "pacs.toml"
    job.write_text('sources = ["/srv/mine"]\n')
    (site / "restore_drills" / "pacs-weekly.toml").unlink()
    again = json.loads(cli(None, "init", str(site), "--json", check=True).stdout)
    assert again["created"] == []
    assert job.read_text() == 'sources = ["/srv/mine"]\n'
    assert not (site / "restore_drills" / "pacs-weekly.toml").exists()   # the jobs folder was not empty


def test_a_jobs_folder_with_definitions_gets_no_samples(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "archive.toml").write_text('sources = ["/srv/archive"]\n')
    config, created = initialize(tmp_path, samples=True)
    assert sorted(config.jobs) == ["archive"] and config.drills == {}
    assert not any("pacs" in c for c in created)


def test_initialize_for_other_callers_writes_no_samples(tmp_path: Path) -> None:
    config, _ = initialize(tmp_path)
    assert config.jobs == {} and config.drills == {}


# keys that exclude another one (a file or a variable): shown as "or KEY = ..." in a comment
ALTERNATIVES = {"webhook_url_env", "ping_url_env", "password_env"}


def _assert_every_field_present(model: type[BaseModel], data: dict[str, Any], where: str) -> None:
    text = default_config_text()
    missing = {f for f in set(model.model_fields) - set(data)
               if not (f in ALTERNATIVES and re.search(rf"# or {f} = \S", text))}
    assert not missing, f"{where}: the sample lacks {sorted(missing)}"


def test_the_sample_config_shows_every_key_and_every_commented_key_is_valid() -> None:
    data = tomllib.loads(uncommented(default_config_text()))
    settings = Settings.model_validate(data)   # every commented key, made active, is a valid setting
    assert settings.smtp is not None and settings.notify.email_to
    _assert_every_field_present(Settings, data, "backupctl.toml")
    for section in ("catalog", "staging", "paths", "signing", "verify", "scheduler", "notify", "smtp", "audit",
                    "report", "suspect"):
        _assert_every_field_present(type(getattr(settings, section)), data[section], f"[{section}]")
    _assert_every_field_present(type(settings.audit.rules), data["audit"]["rules"], "[audit.rules]")
    offline, vault = data["targets"]["offline"], data["targets"]["vault"]
    _assert_every_field_present(MediaTargetConfig, offline, "[targets.offline]")
    _assert_every_field_present(S3TargetConfig, vault, "[targets.vault]")
    _assert_every_field_present(S3Credentials, vault["credentials"], "[targets.vault.credentials]")


def test_the_sample_job_and_drill_are_valid_with_their_commented_keys_too() -> None:
    job = Job.model_validate({"name": "pacs", **tomllib.loads(template_text("job-pacs.toml"))})
    assert job.sources and job.targets == [] and job.schedule is None
    active = tomllib.loads(uncommented(template_text("job-pacs.toml")))
    full = Job.model_validate({"name": "pacs", **active})
    assert full.targets == ["offline", "vault"] and full.schedule and full.hooks.before
    drill = Drill.model_validate({"name": "pacs-weekly", **tomllib.loads(template_text("drill-pacs-weekly.toml"))})
    assert drill.job == "pacs" and drill.copy_from == "staging"
    Drill.model_validate({"name": "pacs-weekly", **tomllib.loads(uncommented(template_text("drill-pacs-weekly.toml")))})


def test_the_repositorys_example_jobs_and_drills_check_with_a_site_config(tmp_path: Path) -> None:
    site = uncommented(default_config_text()).replace('jobs = "jobs"', f'jobs = "{REPO / "jobs"}"')
    site = site.replace('drills = "restore_drills"', f'drills = "{REPO / "restore_drills"}"')
    (tmp_path / "backupctl.toml").write_text(site)
    config, errors = collect_config(tmp_path / "backupctl.toml")
    assert errors == []
    assert config is not None
    assert sorted(config.jobs) == ["orthanc-live", "orthanc-postgresql", "pacs"]
    assert config.jobs["orthanc-live"].orthanc is not None
    assert config.jobs["orthanc-postgresql"].hooks.before
    assert {d.job for d in config.drills.values()} == {"pacs"}
    assert all(job.schedule and set(job.targets) == {"offline", "vault"} for job in config.jobs.values())
    # the examples in examples/ fit the same site: their S3 targets in place of the sample's
    s3 = tomllib.loads((REPO / "examples" / "s3-minio-rgw.toml").read_text())
    assert Settings.model_validate({**tomllib.loads(site), "targets": s3["targets"]}).targets["worm"]
