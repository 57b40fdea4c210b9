"""A local Orthanc run like a service (for the demo and tests): started and stopped by small scripts, as a
service manager would, tracked by a PID file, with authentication, the Debian layout (index inside the
storage folder) and a DICOM port that accepts C-STORE from one named modality on 127.0.0.1.

Production Orthancs are not started by backupctl: a job's `[orthanc]` table names their systemd unit or
their stop/start commands. This class only gives the demo and the tests such a service to back up.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from backupctl import process
from backupctl.errors import OrthancStartError
from backupctl.pacs.orthanc import (
    Credentials,
    OrthancClient,
    find_dcmtk,
    find_orthanc,
    free_port,
    instance_config,
)
from backupctl.process import Completed, pid_running

START_SCRIPT = """#!/bin/sh
# like `systemctl start`: a no-op when it runs, else launch it in the background and return
pid=$(cat "{pidfile}" 2>/dev/null)
if [ -n "$pid" ] && [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; then exit 0; fi
"{binary}" "{config}" >>"{log}" 2>&1 &
echo $! > "{pidfile}"
"""

STOP_SCRIPT = """#!/bin/sh
# like `systemctl stop`: SIGTERM, then wait until the process is gone
pid=$(cat "{pidfile}" 2>/dev/null) || exit 0
kill -TERM "$pid" 2>/dev/null || exit 0
while [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat")" != Z ]; do sleep 0.05; done
"""


@dataclass
class ServicePacs:
    root: Path
    aet: str = "SERVICEPACS"
    modality: str = "MODALITY"                 # the AET allowed to C-STORE (from 127.0.0.1)
    any_modality: bool = False                 # tests: accept C-STORE from any AET
    credentials: Credentials = field(default_factory=Credentials.generate)
    http_port: int = 0
    dicom_port: int = 0

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def storage(self) -> Path:
        return self.root / "db"

    @property
    def pidfile(self) -> Path:
        return self.root / "orthanc.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    @property
    def start_script(self) -> Path:
        return self.root / "start.sh"

    @property
    def stop_script(self) -> Path:
        return self.root / "stop.sh"

    @property
    def credentials_file(self) -> Path:
        return self.root / "orthanc-credentials"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def setup(self) -> ServicePacs:
        """Write config (0600 credentials), scripts and a credentials file for backupctl."""
        self.http_port, self.dicom_port = free_port(), free_port()
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        cfg = instance_config(name=self.aet.lower(), storage=self.storage, index=self.storage,
                              http_port=self.http_port, dicom_port=self.dicom_port, dicom=True, aet=self.aet)
        cfg["SyncStorageArea"] = True          # a production setting
        cfg["DicomModalities"] = {"modality": {"AET": self.modality, "Host": "127.0.0.1", "Port": 104,
                                               "AllowFind": False, "AllowMove": False, "AllowGet": False}}
        cfg["DicomAlwaysAllowStore"] = self.any_modality
        cfg["DicomAlwaysAllowEcho"] = True
        _write(self.config_dir / "orthanc.json", json.dumps(cfg, indent=2), 0o644)
        users = {"RegisteredUsers": {self.credentials.username: self.credentials.password}}
        _write(self.config_dir / "credentials.json", json.dumps(users), 0o600)
        _write(self.credentials_file, f"{self.credentials.username}:{self.credentials.password}\n", 0o600)
        facts = {"pidfile": self.pidfile, "binary": find_orthanc(), "config": self.config_dir, "log": self.log_path}
        _write(self.start_script, START_SCRIPT.format(**facts), 0o755)
        _write(self.stop_script, STOP_SCRIPT.format(**facts), 0o755)
        return self

    def client(self, timeout: float = 30) -> OrthancClient:
        return OrthancClient(self.url, self.credentials, timeout=timeout)

    def pid(self) -> int | None:
        """The running Orthanc's PID (None when stopped; a zombie counts as stopped)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_running(pid) and _is_orthanc(pid) else None

    def start(self, timeout: float = 30) -> None:
        # like a service manager's start: the Orthanc it launches runs on by itself (the demo's and the tests'
        # PACS, stopped by `kill`); the script itself is short and dies with its caller
        done = process.run([str(self.start_script)], timeout=timeout, kill_grace=0)
        if not done.ok:
            raise OrthancStartError(f"{self.start_script} exited {done.returncode}: {done.tail()}")
        self.client().wait_ready(time.monotonic() + timeout, alive=lambda: self.pid() is not None)

    def kill(self, grace: float = 20) -> None:
        """By PID: SIGTERM, then SIGKILL after `grace` seconds; returns when it is gone."""
        pid = self.pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not pid_running(pid):
                    return
                time.sleep(0.05)        # polling with a deadline
        raise OrthancStartError(f"Orthanc {pid} did not die")

    def orthanc_toml(self, **overrides: object) -> str:
        """The `[orthanc]` table of a job backing this service up (REST shutdown, start script)."""
        values: dict[str, object] = {
            "config": str(self.config_dir), "storage_dir": str(self.storage), "url": self.url,
            "credentials_file": str(self.credentials_file), "start_command": [str(self.start_script)],
            "max_downtime_seconds": 60, "command_timeout_seconds": 30,
        }
        values.update(overrides)
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None)
        return f"[orthanc]\n{body}\n"

    def store_files(self, files: list[Path], associations: int = 4, timeout: float = 300) -> list[str]:
        """C-STORE `files` over several associations side by side (one association waits on each store's
        round trip; a PACS takes several at once). Returns the errors (empty when all were stored)."""
        from concurrent.futures import ThreadPoolExecutor

        chunks = [files[i::associations] for i in range(associations) if files[i::associations]]
        with ThreadPoolExecutor(max_workers=max(1, len(chunks)), thread_name_prefix="storescu") as pool:
            done = list(pool.map(lambda chunk: self.storescu(*chunk, timeout=timeout), chunks))
        return [f"storescu {'timed out' if r.timed_out else f'exited {r.returncode}'}: {r.tail(1, 200)}"
                for r in done if not r.ok]

    def storescu(self, *paths: Path, timeout: float = 120) -> Completed:
        """Store files (folders are scanned recursively) as the allowed modality would."""
        args = [str(find_dcmtk("storescu")), "-aec", self.aet, "-aet", self.modality, "-to", "5", "+sd", "+r"]
        return process.run([*args, "127.0.0.1", str(self.dicom_port), *map(str, paths)], timeout=timeout,
                           kill_grace=0)


def _write(path: Path, text: str, mode: int) -> None:
    """Created with its final mode: a credentials file is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(text)


def _is_orthanc(pid: int) -> bool:
    try:
        return "Orthanc" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


