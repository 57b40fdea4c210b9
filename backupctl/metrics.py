"""Prometheus metrics in the text exposition format, computed from the catalog at each write or scrape.

Deriving them from the catalog (not from counters in the daemon's memory) keeps them right across restarts
and includes manual runs. Written atomically to a textfile for node_exporter's textfile collector, and
optionally served by the daemon on a loopback port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backupctl.catalog import open_catalog
from backupctl.catalog import scheduler as sched_rows
from backupctl.config import Config
from backupctl.fsutil import atomic_write_bytes
from backupctl.health import Freshness, check_freshness, job_freshness, parse_time, replica_freshness
from backupctl.verify.status import study_coverage_now

log = logging.getLogger("backupctl.metrics")
PREFIX = "backupctl"


def _ts(iso: str | None) -> float | None:
    value = parse_time(iso)
    return value.timestamp() if value else None


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _add(metric: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        metric.add_metric(labels, float(value))


def _job_metrics(jobs: list[Freshness], failures: dict[tuple[str, str], int]) -> list[Metric]:
    last_success = _gauge("job_last_success_timestamp_seconds", "When the job's last successful backup finished.",
                          ["job"])
    last_run = _gauge("job_last_run_timestamp_seconds", "When the job's last backup run ended.", ["job"])
    ok = _gauge("job_last_run_success", "1 if the job's last backup run succeeded, else 0.", ["job"])
    duration = _gauge("job_last_success_duration_seconds", "Duration of the last successful backup.", ["job"])
    added = _gauge("job_last_success_bytes_added", "New bytes stored by the last successful backup.", ["job"])
    size = _gauge("job_last_success_bytes", "Bytes processed by the last successful backup.", ["job"])
    files = _gauge("job_last_success_files", "Files in the last successful backup.", ["job"])
    expected = _gauge("job_expected_interval_seconds", "Expected interval between successful backups.", ["job"])
    stale = _gauge("job_stale", "1 if the last success is older than the allowed age (or never happened).",
                   ["job"])
    failed = CounterMetricFamily(f"{PREFIX}_job_failures", "Failed backup runs recorded in the catalog.",
                                 labels=["job"])
    for j in jobs:
        _add(last_success, [j.name], _ts(j.last_success))
        _add(last_run, [j.name], _ts(j.last_run))
        if j.last_status:
            _add(ok, [j.name], 1 if j.last_status == "success" else 0)
        _add(duration, [j.name], j.figures.get("seconds"))
        _add(added, [j.name], j.figures.get("bytes_added"))
        _add(size, [j.name], j.figures.get("bytes"))
        _add(files, [j.name], j.figures.get("files"))
        _add(expected, [j.name], j.expected_seconds)
        if j.state != "-":
            _add(stale, [j.name], 1 if j.state in ("stale", "never") else 0)
        _add(failed, [j.name], failures.get(("backup", j.name), 0))
    return [last_success, last_run, ok, duration, added, size, files, expected, stale, failed]


def _replica_metrics(replicas: list[Freshness]) -> list[Metric]:
    last = _gauge("replica_last_success_timestamp_seconds", "When the target last received a complete copy.",
                  ["target"])
    stale = _gauge("replica_stale", "1 if the target's copy is older than allowed.", ["target"])
    for r in replicas:
        _add(last, [r.name], _ts(r.last_success))
        if r.state != "-":
            _add(stale, [r.name], 1 if r.state in ("stale", "never") else 0)
    return [last, stale]


def _check_metrics(what: str, rows: list[Freshness], label: str, rto: dict[str, float]) -> list[Metric]:
    last = _gauge(f"{what}_last_run_timestamp_seconds", f"When the last {what} ended.", [label])
    ok = _gauge(f"{what}_last_success", f"1 if the last {what} succeeded, else 0.", [label])
    last_ok = _gauge(f"{what}_last_success_timestamp_seconds", f"When the last successful {what} ended.", [label])
    metrics: list[Metric] = [last, ok, last_ok]
    seconds = _gauge(f"{what}_last_duration_seconds", f"Duration of the last successful {what}.", [label])
    for r in rows:
        _add(last, [r.name], _ts(r.last_run))
        _add(ok, [r.name], 1 if r.last_status == "success" else 0)
        _add(last_ok, [r.name], _ts(r.last_success))
        _add(seconds, [r.name], r.figures.get("seconds"))
    metrics.append(seconds)
    if what == "drill":
        target = _gauge("drill_rto_target_seconds", "The drill's recovery time objective.", [label])
        measured = _gauge("drill_rto_seconds", "Measured recovery time of the last successful drill.", [label])
        for r in rows:
            _add(measured, [r.name], r.figures.get("seconds"))
        for name, value in rto.items():
            _add(target, [name], value)
        metrics += [measured, target]
    return metrics


def catalog_metrics(config: Config) -> list[Metric]:
    """Every metric the catalog holds for this configuration."""
    now = datetime.now(UTC)
    with open_catalog(config.catalog_path) as catalog:
        jobs = job_freshness(config, catalog, now)
        replicas = replica_freshness(config, catalog, now)
        verify = check_freshness(config, catalog, "verify", now)
        drills = check_freshness(config, catalog, "drill", now)
        failures = sched_rows.failure_counts(catalog, "backup")
        scheduled_failures = sched_rows.execution_failure_counts(catalog)
        coverage = study_coverage_now(config, catalog)
        suspects = _incident_metrics(config, catalog)
    rto = {name: d.rto_minutes * 60 for name, d in config.drills.items()}
    schedule_failed = CounterMetricFamily(f"{PREFIX}_schedule_failures", "Scheduled executions that failed, "
                                          "were partial, interrupted or missed.", labels=["schedule"])
    for schedule, count in sorted(scheduled_failures.items()):
        schedule_failed.add_metric([schedule], count)
    return [*_job_metrics(jobs, failures), schedule_failed, *_replica_metrics(replicas),
            *_check_metrics("verify", verify, "check", {}), *_check_metrics("drill", drills, "drill", rto),
            *_coverage_metrics(coverage), *suspects]


def _coverage_metrics(coverage: dict[str, Any]) -> list[Metric]:
    """The studies' coverage: the oldest age since a sound verification, against the bound."""
    oldest = _gauge("coverage_oldest_unverified_days", "Days the least recently verified study of the newest "
                    "snapshots went without a sound verification (drill or verify restore).", ["what"])
    ok = _gauge("coverage_ok", "1 when every study was verified within the bound and none failed its last "
                "verification, else 0.", ["what"])
    bound = _gauge("coverage_bound_days", "[verify] max_unverified_days.", ["what"])
    _add(oldest, ["studies"], coverage["oldest_unverified_days"])
    _add(ok, ["studies"], 1 if coverage["ok"] else 0)
    _add(bound, ["studies"], coverage["bound_days"])
    return [oldest, ok, bound]


def _incident_metrics(config: Config, catalog: Any) -> list[Metric]:
    from backupctl.incident.freeze import frozen_state
    from backupctl.incident.state import open_suspects

    suspect = _gauge("job_suspect_snapshots", "Open suspect snapshots of the job (ransomware-like changes; "
                     "see docs/incident.md).", ["job"])
    open_rows = open_suspects(catalog)
    for job in sorted(config.jobs):
        suspect.add_metric([job], sum(1 for r in open_rows if r["job"] == job))
    frozen = _gauge("incident_frozen", "1 while an incident is frozen (legal holds set, pruning and expiry "
                    "paused).", [])
    frozen.add_metric([], 1 if frozen_state(config) is not None else 0)
    return [suspect, frozen]


def scheduler_metrics(info: dict[str, Any]) -> list[Metric]:
    """What only the running daemon knows: that it is up, its config state, the next run of each schedule."""
    up = _gauge("scheduler_up", "1 while the scheduler daemon runs.", [])
    up.add_metric([], 1)
    heartbeat = _gauge("scheduler_heartbeat_timestamp_seconds", "Last time the daemon wrote its metrics.", [])
    heartbeat.add_metric([], time.time())
    config_ok = _gauge("scheduler_config_ok", "0 if the last reload was refused (old schedule kept).", [])
    config_ok.add_metric([], 0 if info.get("reload_error") else 1)
    next_run = _gauge("schedule_next_run_timestamp_seconds", "Next planned run of each schedule.",
                      ["schedule"])
    for schedule_id, when in sorted(info.get("next_runs", {}).items()):
        _add(next_run, [schedule_id], when)
    return [up, heartbeat, config_ok, next_run]


class CatalogCollector(Collector):
    """A prometheus_client collector reading the catalog at each scrape. `config` is a callable so the daemon's
    reload swaps what it describes; `extra` adds the daemon's own figures."""

    def __init__(self, config: Callable[[], Config], extra: Callable[[], list[Metric]] | None = None) -> None:
        self._config, self._extra = config, extra

    def collect(self) -> Iterable[Metric]:
        yield from catalog_metrics(self._config())
        if self._extra is not None:
            yield from self._extra()


def registry_for(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(config: Config, extra: list[Metric] | None = None) -> bytes:
    return generate_latest(registry_for(CatalogCollector(lambda: config, (lambda: extra) if extra else None)))


def textfile_path(config: Config) -> Path | None:
    path = config.settings.scheduler.metrics_textfile
    return config.resolve(path) if path is not None else None


def write_textfile(path: Path, data: bytes) -> None:
    """Atomically (temp file + rename): node_exporter never reads half a file."""
    atomic_write_bytes(path, data, mode=0o644)


def serve(listen: str, collector: Collector) -> Any:
    """Serve /metrics on a loopback HOST:PORT (validated by the config); returns the server to shut down."""
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry_for(collector))
    return server
