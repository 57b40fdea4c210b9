"""`config check` and every command that loads the config: sources that would swallow backupctl's own state,
empty values, negative durations, oversized files, folders that hold the config itself, names with typos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backupctl.config import collect_config, load_config
from backupctl.errors import ConfigError, SourceOverlap
from backupctl.manifest import is_excluded
from backupctl.signing import ensure_key
from tests.helpers import assert_one_line_error, cli

BASE_TOML = """\
[catalog]
path = "var/catalog.sqlite"

[staging]
repository = "var/staging-repo"
password_file = "secrets/restic-password"

[targets.offline]
type = "media"
mount = "disk"
labels = ["DISK-A"]
"""


def write_site(root: Path, job: str = 'sources = ["archive"]\n', config: str = BASE_TOML) -> Path:
    """A config folder without a repository: `config check` reads files only."""
    for folder in ("archive", "disk", "jobs", "restore_drills", "var/staging-repo", "secrets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    password = root / "secrets" / "restic-password"
    if not password.exists():   # config check reads every secret file the config names (mode, owner)
        password.write_text("not used here\n")
        password.chmod(0o600)
        ensure_key(root / "secrets" / "signing.key")   # every command's audit record is signed
    (root / "backupctl.toml").write_text(config)
    (root / "jobs" / "pacs.toml").write_text(job)
    return root / "backupctl.toml"


def errors_of(path: Path) -> list[str]:
    return collect_config(path)[1]


# sources that swallow the product's own state ------------------------------------------------------------


@pytest.mark.parametrize(("source", "what", "protected"), [
    ("var/staging-repo/data", "inside the staging repository", "var/staging-repo"),
    ("var", "inside the state folder", "var"),
    ("var/catalog.sqlite", "inside the catalog", "var/catalog.sqlite"),
    ("var/restic-cache", "inside the restic cache", "var/restic-cache"),
    ("secrets", "inside the secrets folder", "secrets"),
    ("disk/backupctl", "inside the mount of media target offline", "disk"),
    (".", "contains the", ""),                        # the config folder holds all of them
])
def test_a_source_overlapping_backupctl_state_is_refused(tmp_path: Path, source: str, what: str,
                                                         protected: str) -> None:
    config = write_site(tmp_path, f'sources = ["{source}"]\n')
    errors = errors_of(config)
    assert len(errors) == 1, errors
    assert "jobs/pacs.toml: sources:" in errors[0] and what in errors[0], errors[0]
    assert str(tmp_path / protected).rstrip("/.") in errors[0]   # both paths named


def test_a_source_holding_the_secrets_folder_is_refused_with_both_paths(tmp_path: Path) -> None:
    site = tmp_path / "site"
    config = write_site(site, config=BASE_TOML.replace('"secrets/restic-password"',
                                                       f'"{tmp_path}/keys/restic-password"'))
    (site / "jobs" / "pacs.toml").write_text(f'sources = ["{tmp_path}"]\n')
    result = cli(config, "config", "check")
    assert result.returncode == 2
    line = next(x for x in result.stderr.splitlines() if "sources" in x)
    assert f"{tmp_path} contains" in line, line
    assert str(site / "var") in line or str(tmp_path / "keys") in line, line


def test_symlinks_are_resolved_before_comparing(tmp_path: Path) -> None:
    config = write_site(tmp_path / "site")
    (tmp_path / "innocent").symlink_to(tmp_path / "site" / "secrets")
    (tmp_path / "site" / "jobs" / "pacs.toml").write_text(f'sources = ["{tmp_path / "innocent"}"]\n')
    (error,) = errors_of(config)
    assert "innocent lies inside the secrets folder" in error and str(tmp_path / "site" / "secrets") in error


def test_backup_run_refuses_an_overlapping_source_in_one_line(tmp_path: Path) -> None:
    config = write_site(tmp_path, 'sources = ["secrets"]\n')
    result = cli(config, "backup", "run", "pacs")
    assert_one_line_error(result, 2, "lies inside the secrets folder", str(tmp_path / "secrets"))
    assert not (tmp_path / "var" / "catalog.sqlite").exists()   # refused before anything was recorded


def test_backup_run_checks_again_when_a_symlink_moved_after_loading(tmp_path: Path) -> None:
    from backupctl.actions.backup import run_backup

    config_file = write_site(tmp_path / "site")
    link = tmp_path / "archive-link"
    link.symlink_to(tmp_path / "site" / "archive")
    (tmp_path / "site" / "jobs" / "pacs.toml").write_text(f'sources = ["{link}"]\n')
    config = load_config(config_file)
    link.unlink()
    link.symlink_to(tmp_path / "site" / "secrets")   # e.g. a long-running scheduler loaded the config earlier
    with pytest.raises(SourceOverlap, match="lies inside the secrets folder"):
        run_backup(config, "pacs", replicate=False)


def test_a_system_root_source_gets_the_safe_excludes_and_says_so(tmp_path: Path) -> None:
    config_file = write_site(tmp_path, 'sources = ["/"]\nexcludes = ["*.tmp"]\n')
    (tmp_path / "jobs" / "other.toml").write_text('sources = ["archive"]\n')
    config, errors = collect_config(config_file)
    assert errors == [] and config is not None
    shown = config.safe_excludes["pacs"]
    assert shown == ["/proc", "/sys", "/dev", "/run", "/tmp"]   # this test's site lies in /tmp
    excludes = config.jobs["pacs"].excludes
    assert excludes[0] == "*.tmp"
    for path in ("/proc", "/sys", "/dev", "/run", "/tmp", tmp_path / "secrets", tmp_path / "var"):
        assert is_excluded(f"{path}/x", excludes), path   # restic's own exclude semantics
    assert not is_excluded("/etc/hostname", excludes)
    result = cli(config_file, "config", "check")
    assert result.returncode == 0, result.stderr
    assert "job pacs: a system root is a source; backupctl excludes /proc, /sys" in result.stdout
    data = json.loads(cli(config_file, "config", "check", "--json").stdout)
    assert data["ok"] and data["safe_excludes"]["pacs"] == shown


def test_the_state_excludes_keep_only_the_jobs_manifest_chain(tmp_path: Path) -> None:
    from backupctl.config import _all_but

    patterns = [*_all_but(tmp_path / "var", "manifests"), str(tmp_path / "var" / "manifests" / "other")]
    for name in ("m", "manifest", "manifestsX", "zzz", "catalog.sqlite", "Manifests", "manifests/other"):
        assert is_excluded(str(tmp_path / "var" / name / "x"), patterns), name
    assert not is_excluded(str(tmp_path / "var" / "manifests" / "pacs" / "x"), patterns)


def test_a_backup_of_a_system_root_keeps_its_manifest_and_none_of_the_state(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a real restic backup of a whole tree holding the installation: the test's folder stands in for /srv
    # (backing up the real /srv of the test machine would read whatever it holds)
    from backupctl import config as config_module
    from backupctl.actions.backup import run_backup
    from backupctl.actions.init import initialize
    from backupctl.dicom.synth import ArchiveSpec, write_archive
    from backupctl.repository import staging_restic

    root = Path(os.path.realpath(tmp_path / "srv"))
    monkeypatch.setattr(config_module, "SYSTEM_ROOTS", (*config_module.SYSTEM_ROOTS, str(root)))
    write_archive(root / "archive", ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                instances_per_series=2, rows=16, columns=16, seed=1))
    site = root / "backupctl"
    initialize(site, BASE_TOML)
    (site / "jobs" / "pacs.toml").write_text(f'sources = ["{root}"]\n')
    config = load_config(site / "backupctl.toml")
    outcome = run_backup(config, "pacs", replicate=False)
    assert outcome.manifest and "error" not in outcome.manifest and outcome.manifest["dicom"] == 2
    assert outcome.safe_excludes == [f"{site / 'var'} (all but manifests/pacs)", str(site / "secrets"),
                                     str(site / "disk")]
    paths = [node.path for node in staging_restic(config).ls(outcome.snapshot_id)]
    assert sum(p.endswith(".dcm") for p in paths) == 2
    assert any("/.backupctl-manifest/" in p for p in paths)
    assert str(site / "backupctl.toml") in paths
    state_kept = {p for p in paths if p.startswith(f"{site / 'var'}/")}
    assert state_kept and all(p == f"{site / 'var' / 'manifests'}" or
                              p.startswith(f"{site / 'var' / 'manifests' / 'pacs'}") for p in state_kept), state_kept
    assert not any(p.startswith(f"{site / 'secrets'}/") for p in paths)


def test_a_plain_folder_beside_the_state_is_accepted_without_excludes(tmp_path: Path) -> None:
    config, errors = collect_config(write_site(tmp_path))
    assert errors == [] and config is not None and config.safe_excludes == {}


# values that are never right -----------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "text", "fragment"), [
    ("config", BASE_TOML.replace('path = "var/catalog.sqlite"', 'path = ""'), "catalog.path: expected a non-empty"),
    ("config", BASE_TOML + '[paths]\njobs = ""\n', "paths.jobs: expected a non-empty"),
    ("config", BASE_TOML + '[paths]\njobs = "."\n', "paths.jobs: expected a folder of its own"),
    ("config", BASE_TOML + '[paths]\njobs = "x"\ndrills = "x"\n', "paths.drills: expected a folder other"),
    ("config", BASE_TOML.replace('repository = "var/staging-repo"',
                                 'repository = "var/staging-repo"\nlock_wait_seconds = -5'),
     "staging.lock_wait_seconds: Input should be greater than or equal to 0"),
    ("config", BASE_TOML + '[scheduler]\nstop_grace_seconds = -1\n', "scheduler.stop_grace_seconds"),
    ("config", BASE_TOML + '[scheduler]\nmisfire_grace_seconds = inf\n', "scheduler.misfire_grace_seconds"),
    ("config", BASE_TOML.replace('labels = ["DISK-A"]', 'labels = ["DISK-A"]\nrotation_days = -7'),
     "targets.offline.rotation_days"),
    ("job", 'sources = [""]\n', "pacs.toml: sources: expected a list without empty entries"),
    ("job", 'sources = ["archive"]\nname = ""\n', "pacs.toml: name: expected a non-empty"),
    ("job", 'sources = ["archive"]\nexpected_interval_hours = -1\n', "expected_interval_hours"),
    ("job", 'sources = ["archive"]\n[hooks]\ntimeout_seconds = -3\n', "hooks.timeout_seconds"),
])
def test_config_check_refuses(tmp_path: Path, where: str, text: str, fragment: str) -> None:
    config = write_site(tmp_path, **({"config": text} if where == "config" else {"job": text}))
    result = cli(config, "config", "check")
    assert result.returncode == 2, result.stdout
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_jobs_folder_never_reads_the_config_as_a_job(tmp_path: Path) -> None:
    config = write_site(tmp_path, config=BASE_TOML + '[paths]\njobs = "."\n')
    errors = errors_of(config)
    assert errors == [f"{config}: paths.jobs: expected a folder of its own, not the folder of backupctl.toml"]


def test_empty_strings_with_a_meaning_still_pass(tmp_path: Path) -> None:
    config = write_site(tmp_path, config=BASE_TOML + '[scheduler]\nmetrics_textfile = ""\nmetrics_listen = ""\n'
                        '[targets.vault]\ntype = "s3"\nbucket = "pacs-vault"\nprefix = ""\n')
    loaded, errors = collect_config(config)
    assert errors == [] and loaded is not None
    assert loaded.settings.scheduler.metrics_textfile is None


def test_a_config_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    config = write_site(tmp_path)
    with config.open("a") as fh:
        fh.write("# padding\n" * (1024 * 1024 // 10 + 1))
    with pytest.raises(ConfigError, match="over 1 MiB is refused"):
        load_config(config)
    (tmp_path / "backupctl.toml").write_text(BASE_TOML)
    (tmp_path / "jobs" / "pacs.toml").write_text('sources = ["archive"]\n' + "#\n" * (600 * 1024))
    assert any("pacs.toml" in e and "over 1 MiB" in e for e in errors_of(config))


# names with typos ----------------------------------------------------------------------------------------


def test_typos_of_job_target_and_drill_names_get_did_you_mean(tmp_path: Path) -> None:
    config = write_site(tmp_path, 'sources = ["archive"]\ntargets = ["ofline"]\n')
    (tmp_path / "restore_drills" / "weekly.toml").write_text('job = "paks"\ncopy_from = "ofline"\n')
    errors = errors_of(config)
    assert any("'ofline' is not a target of backupctl.toml (did you mean offline?)" in e for e in errors), errors
    assert any("job: 'paks' is not a job in jobs/ (did you mean pacs?)" in e for e in errors), errors
    assert any("copy_from" in e and "(did you mean offline?)" in e for e in errors), errors
    (tmp_path / "jobs" / "pacs.toml").write_text('sources = ["archive"]\n')
    (tmp_path / "restore_drills" / "weekly.toml").unlink()
    result = cli(config, "backup", "run", "pcas")
    assert_one_line_error(result, 2, "no job named 'pcas' (did you mean pacs?)")
    result = cli(config, "media", "init", "offlin", "--label", "DISK-A")
    assert_one_line_error(result, 2, "no target named 'offlin' (did you mean offline?)")


def test_an_unrelated_name_gets_no_suggestion(tmp_path: Path) -> None:
    result = cli(write_site(tmp_path), "backup", "run", "zzzz")
    assert_one_line_error(result, 2, "no job named 'zzzz' (jobs: pacs)")
    assert "did you mean" not in result.stderr


def test_environment_is_not_needed(tmp_path: Path) -> None:
    # the checks read files only: no repository, no password, no restic
    assert not os.path.exists(tmp_path / "var" / "staging-repo" / "config")
    assert errors_of(write_site(tmp_path)) == []


def test_a_misspelt_setting_gets_did_you_mean_at_its_own_level(tmp_path: Path) -> None:
    config = write_site(tmp_path, 'sources = ["archive"]\nschedul = "0 2 * * *"\n[retention]\nkeep_dayly = 3\n'
                        '[orthanc]\nsystemd_unit = "orthanc"\nstorage_dri = "/x"\n')
    errors = errors_of(config)
    assert any(e.endswith("pacs.toml: schedul: is not a known setting (did you mean schedule?)") for e in errors)
    assert any("retention.keep_dayly: is not a known setting (did you mean keep_daily?)" in e for e in errors)
    assert any("orthanc.storage_dri: is not a known setting (did you mean storage_dir?)" in e for e in errors)
    site = BASE_TOML.replace('labels = ["DISK-A"]', 'labels = ["DISK-A"]\nrotaton_days = 3') + "[scheduler]\nzzz = 1\n"
    (tmp_path / "backupctl.toml").write_text(site)
    errors = errors_of(config)
    assert any("targets.offline.rotaton_days: is not a known setting (did you mean rotation_days?)" in e
               for e in errors), errors
    assert any("scheduler.zzz: is not a known setting (check its spelling)" in e for e in errors), errors


def test_a_source_holding_a_secret_file_named_in_the_config_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "elsewhere"
    keys.mkdir()
    config = write_site(tmp_path / "site", f'sources = ["{keys}"]\n',
                        BASE_TOML + f'[audit]\nclient_cert = "{keys}/atna-client.pem"\n')
    (error,) = errors_of(config)
    assert f"{keys} contains the secret file {keys}/atna-client.pem" in error
