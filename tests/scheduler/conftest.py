"""Fixtures for the scheduler tests: a ready installation (copied from one initialised per session), a real
HTTP receiver on 127.0.0.1 for webhooks and pings, and a real daemon subprocess. Waiting is always polling
with a deadline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backupctl.actions.init import initialize
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive

SMALL = ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1, instances_per_series=2, rows=16,
                    columns=16, seed=3)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@dataclass
class Installation:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "backupctl.toml"

    def config(self) -> Config:
        return load_config(self.config_file)

    def add_settings(self, text: str) -> None:
        with self.config_file.open("a") as fh:
            fh.write("\n" + text + "\n")

    def write_job(self, name: str, text: str) -> Path:
        path = self.root / "jobs" / f"{name}.toml"
        path.write_text(text)
        return path

    def secret(self, name: str, value: str) -> Path:
        path = self.root / "secrets" / name
        path.write_text(value)
        path.chmod(0o600)
        return path

    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "backupctl", "--config", str(self.config_file), *args],
                              capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def installation_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sched-template")
    write_archive(root / "archive", SMALL)
    initialize(root)
    return root


@pytest.fixture
def installation(installation_template: Path, tmp_path: Path) -> Installation:
    root = tmp_path / "inst"
    shutil.copytree(installation_template, root, symlinks=True)
    return Installation(root)


# a real HTTP receiver -----------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    base: str
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)   # responses to give, in order; then 200
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def matching(self, prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.requests.append(Request("POST", self.path, body, dict(self.headers)))
                status = state.statuses.pop(0) if state.statuses else 200
            if state.delay:
                time.sleep(state.delay)  # simulating a slow server, not synchronising
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# the daemon ---------------------------------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def logged(self, text: str) -> bool:
        return any(text in e.get("msg", "") for e in self.events())

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[Installation], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(inst: Installation) -> DaemonProcess:
        log_path = tmp_path / f"daemon-{len(started)}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(inst.config_file),
                                     "scheduler", "run", "--log-format", "json"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        daemon = DaemonProcess(proc, log_path)
        started.append(daemon)
        wait_for(lambda: daemon.logged("scheduler started") or proc.poll() is not None, 60, "the daemon to start")
        assert proc.poll() is None, daemon.log()
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.kill()
