"""Cron text -> triggers: crontab weekday numbering, seconds, aliases; and how config reports bad ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backupctl.errors import ConfigError
from backupctl.health import expected_seconds
from backupctl.scheduler.triggers import cron_trigger, crontab_weekdays, longest_gap, next_fire_times

WEDNESDAY = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # 2025-01-01 is a Wednesday


@pytest.mark.parametrize(("field", "names"), [
    ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("5-7", "sun,fri,sat"),
    ("*/2", "sun,tue,thu,sat"), ("sat,sun", "sun,sat"), ("mon-fri", "mon,tue,wed,thu,fri"), ("*", "*"),
])
def test_crontab_weekdays_count_from_sunday(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


def test_sunday_job_runs_on_sunday_not_monday() -> None:
    fires = next_fire_times(cron_trigger("0 2 * * 0", "UTC"), 2, WEDNESDAY)
    assert [f.strftime("%a %H:%M") for f in fires] == ["Sun 02:00", "Sun 02:00"]


def test_timezone_is_honoured() -> None:
    fire = next_fire_times(cron_trigger("0 2 * * *", "America/New_York"), 1, WEDNESDAY)[0]
    assert fire.utcoffset() == timedelta(hours=-5) and fire.hour == 2


def test_six_fields_put_seconds_first_and_aliases_work() -> None:
    fires = next_fire_times(cron_trigger("*/5 * * * * *", "UTC"), 3, WEDNESDAY)
    assert [(b - a).total_seconds() for a, b in zip(fires, fires[1:], strict=False)] == [5, 5]
    assert next_fire_times(cron_trigger("@weekly", "UTC"), 1, WEDNESDAY)[0].strftime("%a %H:%M") == "Sun 00:00"


def test_weekday_job_may_go_three_days_without_a_backup() -> None:
    assert longest_gap(cron_trigger("30 1 * * 1-5", "UTC"), WEDNESDAY) == timedelta(days=3)
    assert expected_seconds("30 1 * * *", "UTC", None, WEDNESDAY) == 86400
    assert expected_seconds("30 1 * * *", "UTC", 2, WEDNESDAY) == 7200  # expected_interval_hours wins


@pytest.mark.parametrize("bad", ["0 2 * *", "0 25 * * *", "0 2 * * 8", "0 2 * * 5-1", "every day"])
def test_config_refuses_bad_cron_naming_file_and_field(installation, bad: str) -> None:
    installation.write_job("nightly", f'sources = ["archive"]\nschedule = "{bad}"\n')
    with pytest.raises(ConfigError) as err:
        installation.config()
    assert "nightly.toml" in err.value.message and "schedule" in err.value.message


def test_config_refuses_unknown_timezone(installation) -> None:
    installation.write_job("nightly", 'sources = ["archive"]\nschedule = "0 2 * * *"\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="nightly.toml"):
        installation.config()


def test_metrics_listen_must_be_loopback(installation) -> None:
    installation.add_settings('[scheduler]\nmetrics_listen = "0.0.0.0:9898"')
    with pytest.raises(ConfigError, match="loopback"):
        installation.config()


def test_email_needs_smtp(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\n[notify]\nemail_to = ["ops@hospital.example"]\n')
    with pytest.raises(ConfigError, match=r"pacs.toml: notify.email_to: needs an \[smtp\] section"):
        installation.config()
    installation.add_settings('[smtp]\nhost = "127.0.0.1"\nsender = "backupctl@hospital.example"')
    assert installation.config().settings.smtp.port == 587


def test_daemon_refuses_to_start_on_invalid_config(installation) -> None:
    installation.write_job("pacs", 'sources = ["archive"]\nschedul = "0 2 * * *"\n')
    result = installation.cli("scheduler", "run")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "pacs.toml: schedul: is not a known setting" in line
