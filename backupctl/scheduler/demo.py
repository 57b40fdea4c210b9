"""The `scheduler` key of `backupctl demo --json`: the real daemon runs a job on a schedule, records it,
fires its webhook to a receiver on 127.0.0.1 and writes metrics that parse; all figures are measured."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from backupctl import process
from backupctl.catalog import open_catalog
from backupctl.catalog import scheduler as sched_rows
from backupctl.metrics import textfile_path
from backupctl.secrets import write_private_file

DEMO_JOB = "every-2s"
DEADLINE_SECONDS = 60


class _Receiver:
    """A webhook receiver on a free loopback port, collecting JSON bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    received.append(json.loads(body))
                except json.JSONDecodeError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/demo-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _poll(predicate: Any, deadline: float) -> Any:
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # polling interval of a deadline-bounded wait
    return None


def step_scheduler(ctx: Any) -> dict[str, Any]:
    """Needs `ctx.config` and `ctx.archive` from the backup step (a demo.DemoContext)."""
    from prometheus_client.parser import text_string_to_metric_families

    config = ctx.config
    receiver = _Receiver()
    secret = config.base / "secrets" / "demo-webhook"
    job_file = config.resolve(config.settings.paths.jobs) / f"{DEMO_JOB}.toml"
    log_path = ctx.workdir / "scheduler-demo.log"
    try:
        if not secret.exists():
            write_private_file(secret, receiver.url.encode())
        else:
            secret.write_text(receiver.url)
        job_file.write_text(f'sources = ["{ctx.archive}"]\nschedule = "*/2 * * * * *"\n\n[notify]\n'
                            f'webhook_url_file = "secrets/demo-webhook"\nwebhook_events = ["success", "failure"]\n')
        started = time.monotonic()
        with log_path.open("w") as log:
            # the demo's daemon stops as from systemd (SIGTERM) if the demo dies
            proc = process.start([sys.executable, "-m", "backupctl", "--config", str(config.path), "scheduler",
                                  "run", "--log-format", "json"], stdout=log, stderr=process.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"}, on_parent_death=signal.SIGTERM)
        try:
            hook = _poll(lambda: [b for b in receiver.bodies if b.get("name") == DEMO_JOB], time.monotonic()
                         + DEADLINE_SECONDS)
            first_run_seconds = time.monotonic() - started
        finally:
            stop_started = time.monotonic()
            proc.stop(signal.SIGTERM, DEADLINE_SECONDS, group=False)
            exit_code = proc.returncode
            stop_seconds = time.monotonic() - stop_started
        with open_catalog(config.catalog_path) as catalog:
            executions = sched_rows.list_executions(catalog, f"backup:{DEMO_JOB}")
        path = textfile_path(config)
        families = list(text_string_to_metric_families(path.read_text())) if path and path.exists() else []
        last_success = next((s.value for f in families for s in f.samples
                             if s.name == "backupctl_job_last_success_timestamp_seconds"
                             and s.labels.get("job") == DEMO_JOB), None)
        secret_logged = "demo-token" in log_path.read_text(errors="replace")
    finally:
        job_file.unlink(missing_ok=True)  # later steps see the demo's own jobs only
        receiver.close()
    succeeded = [e for e in executions if e["status"] == "success"]
    webhook = hook[0] if hook else {}
    return {
        "ok": bool(hook) and webhook.get("status") == "success" and bool(succeeded) and exit_code == 0
        and last_success is not None and not secret_logged,
        "schedule": "*/2 * * * * *", "first_run_seconds": round(first_run_seconds, 3),
        # every 2 s against a ~2 s backup: some executions are skipped (one run per job at a time) or
        # interrupted by the demo's SIGTERM; the breakdown says which
        "executions": dict(Counter(e["status"] for e in executions)), "succeeded": len(succeeded),
        "run_ids": succeeded[0]["run_ids"] if succeeded else [],
        "webhook": {"delivered": bool(hook), "event": webhook.get("event"), "status": webhook.get("status")},
        "metrics": {"families": len(families), "last_success_timestamp": last_success},
        "stop_seconds": round(stop_seconds, 3), "exit_code": exit_code, "secret_in_log": secret_logged,
    }
