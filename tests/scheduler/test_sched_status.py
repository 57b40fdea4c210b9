"""`status`, `schedule list` and the chain of steps, on real backups (no daemon needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.errors import StepUnavailable
from backupctl.progress import NullProgress
from backupctl.scheduler import kinds
from backupctl.scheduler.kinds import StepResult, register_step, run_chain


def test_status_marks_an_overdue_job_stale_and_check_fails(installation, wait_for) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nexpected_interval_hours = 0.0002\n')  # 0.72 s
    installation.write_job("nightly", 'sources = ["archive"]\nschedule = "0 2 * * *"\n')
    outcome = run_backup(installation.config(), "pacs", NullProgress(), replicate=False)
    wait_for(lambda: json.loads(installation.cli("status", "--json").stdout)["jobs"][1]["state"] == "stale", 30,
             "the job to become stale")
    report = json.loads(installation.cli("status", "--json").stdout)
    by_name = {j["name"]: j for j in report["jobs"]}
    assert by_name["pacs"]["state"] == "stale" and by_name["pacs"]["figures"]["snapshot_id"] == outcome.snapshot_id
    assert by_name["nightly"]["state"] == "never" and by_name["nightly"]["expected_seconds"] == 86400
    assert report["ok"] is False and "the scheduler daemon is not running" in report["problems"]
    text = installation.cli("status")
    assert text.returncode == 0 and "stale" in text.stdout and "not running" in text.stdout
    assert installation.cli("status", "--check").returncode == 1


def test_status_is_fresh_after_a_backup(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nexpected_interval_hours = 24\n')
    run_backup(installation.config(), "pacs", NullProgress(), replicate=False)
    result = installation.cli("status", "--json", "--check")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"] and report["jobs"][0]["state"] == "ok"
    assert 0 <= report["jobs"][0]["age_seconds"] < 300


def test_metrics_command_prints_parseable_exposition(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nschedule = "0 2 * * *"\n')
    run_backup(installation.config(), "pacs", NullProgress(), replicate=False)
    result = installation.cli("metrics")
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(result.stdout) for s in f.samples}
    with open_catalog(installation.config().catalog_path) as catalog:
        run = run_rows.last_run(catalog, "pacs")
    assert samples[("backupctl_job_last_success_files", (("job", "pacs"),))] == run["files"]
    assert samples[("backupctl_job_last_success_bytes_added", (("job", "pacs"),))] == run["bytes_added"]
    assert samples[("backupctl_job_expected_interval_seconds", (("job", "pacs"),))] == 86400
    out = installation.root / "prom" / "backupctl.prom"
    assert installation.cli("metrics", "--textfile", str(out)).returncode == 0
    assert out.read_text() == result.stdout


def test_schedule_list_without_daemon_computes_next_run(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nschedule = "30 1 * * 0"\ntimezone = "Europe/Paris"\n')
    installation.write_job("manual", 'sources = ["archive"]\n')
    rows = {r["id"]: r for r in json.loads(installation.cli("schedule", "list", "--json").stdout)}
    nxt = datetime.fromisoformat(rows["backup:pacs"]["next_run"])
    assert nxt > datetime.now(UTC) and nxt.astimezone().strftime("%a") in ("Sat", "Sun")
    assert rows["backup:pacs"]["next_run_source"] == "cron (not yet loaded)"
    assert rows["backup:manual"]["schedule"] is None and rows["backup:manual"]["next_run"] is None


@pytest.fixture
def restore_steps():
    saved = dict(kinds._REGISTERED)
    yield
    kinds._REGISTERED.clear()
    kinds._REGISTERED.update(saved)


def test_chain_stops_at_a_failed_backup(installation, restore_steps) -> None:
    installation.write_job("broken", 'sources = ["missing"]\n')
    calls = []
    register_step("verify", lambda config, name, progress: calls.append(name) or StepResult("verify", "success"))
    result = run_chain(installation.config(), "backup", "broken", NullProgress())
    assert result.status == "failed" and [s.step for s in result.steps] == ["backup"]
    assert "does not exist" in result.error and calls == []


def test_chain_runs_a_plugged_verify_step_and_reports_its_failure(installation, restore_steps) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    register_step("verify", lambda config, name, progress: StepResult("verify", "failed", "pack 1f2e altered"))
    result = run_chain(installation.config(), "backup", "pacs", NullProgress())
    assert [(s.step, s.status) for s in result.steps] == [("backup", "success"), ("replicate", "skipped"),
                                                          ("verify", "failed")]
    assert result.status == "failed" and "pack 1f2e altered" in result.error


def test_missing_capability_is_skipped_never_success(installation, monkeypatch: pytest.MonkeyPatch) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    installation.root.joinpath("restore_drills", "weekly.toml").write_text('job = "pacs"\n')
    def unavailable(config, name, progress):
        raise StepUnavailable("drill")

    monkeypatch.setitem(kinds.BUILTIN, "drill", unavailable)
    result = run_chain(installation.config(), "drill", "weekly", NullProgress())
    assert result.steps[0].status == "skipped" and result.status == "failed"


def test_scheduled_drill_runs_the_real_drill_and_status_shows_it(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n')
    installation.root.joinpath("restore_drills", "weekly.toml").write_text(
        'job = "pacs"\ndepth = "hash"\nschedule = "0 4 * * 0"\n')
    assert run_chain(installation.config(), "backup", "pacs", NullProgress()).status == "success"
    result = run_chain(installation.config(), "drill", "weekly", NullProgress())
    assert result.status == "success" and result.steps[0].figures["rto_met"] is True
    report = json.loads(installation.cli("status", "--json").stdout)
    [drill] = report["drills"]
    assert drill["name"] == "weekly" and drill["state"] == "ok" and drill["expected_seconds"] == 7 * 86400
    assert drill["figures"]["rto_seconds"] == 3600 and drill["figures"]["seconds"] > 0
    assert [v["last_status"] for v in report["verify"]] == ["success"]  # the chain's verify step ran
