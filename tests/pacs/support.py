"""A production-like Orthanc for tests: started and stopped by shell scripts (as a service manager would),
tracked by PID, with authentication, a DICOM port for storescu/findscu and the Debian layout (index inside
the storage folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.catalog.db import utcnow
from backupctl.pacs.orthanc import Credentials, OrthancClient, find_orthanc, free_port, instance_config, pid_alive
from tests.helpers import wait_for

START_SCRIPT = """#!/bin/sh
# like `systemctl start`: a no-op when it runs, else launch in the background and return
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
class LivePacs:
    root: Path
    aet: str = "LIVEPACS"
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

    def setup(self) -> LivePacs:
        self.http_port, self.dicom_port = free_port(), free_port()
        self.storage.mkdir(parents=True)
        self.config_dir.mkdir(parents=True)
        cfg = instance_config(name="live", storage=self.storage, index=self.storage, http_port=self.http_port,
                              dicom_port=self.dicom_port, dicom=True, aet=self.aet)
        cfg["SyncStorageArea"] = True      # a production setting
        cfg["DicomAlwaysAllowStore"] = True  # modalities store into it with storescu
        cfg["DicomAlwaysAllowEcho"] = True
        (self.config_dir / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        creds = {"RegisteredUsers": {self.credentials.username: self.credentials.password}}
        (self.config_dir / "credentials.json").write_text(json.dumps(creds))
        os.chmod(self.config_dir / "credentials.json", 0o600)
        self.credentials_file.write_text(f"{self.credentials.username}:{self.credentials.password}\n")
        os.chmod(self.credentials_file, 0o600)
        facts = {"pidfile": self.pidfile, "binary": find_orthanc(), "config": self.config_dir,
                 "log": self.root / "orthanc.log"}
        for path, text in ((self.start_script, START_SCRIPT), (self.stop_script, STOP_SCRIPT)):
            path.write_text(text.format(**facts))
            path.chmod(0o755)
        return self

    def client(self) -> OrthancClient:
        return OrthancClient(self.url, self.credentials, timeout=30)

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and not _zombie(pid) and _is_orthanc(pid) else None

    def start(self) -> None:
        subprocess.run([str(self.start_script)], check=True, timeout=30)
        self.wait_ready()

    def wait_ready(self) -> None:
        self.client().wait_ready(time.monotonic() + 30)

    def kill(self) -> None:
        """Teardown by PID: TERM, then KILL; returns when the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(pid) or _zombie(pid), timeout=20, what="Orthanc to stop")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid) or _zombie(pid), timeout=10, what="Orthanc to die")

    def job_toml(self, **overrides: object) -> str:
        values: dict[str, object] = {
            "config": str(self.config_dir), "storage_dir": str(self.storage), "url": self.url,
            "credentials_file": str(self.credentials_file), "start_command": [str(self.start_script)],
            "max_downtime_seconds": 60, "command_timeout_seconds": 30,
        }
        values.update(overrides)
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None)
        return f'name = "pacs"\n\n[orthanc]\n{body}\n'

    def storescu(self, *paths: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        args = ["storescu", "-aec", self.aet, "-aet", "TESTSCU", "-to", "5", "+sd", "+r"]
        return subprocess.run([*args, "127.0.0.1", str(self.dicom_port), *map(str, paths)],
                              capture_output=True, text=True, timeout=timeout)


def _is_orthanc(pid: int) -> bool:
    try:
        return "Orthanc" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class StoringLoop:
    """Keeps storing instances with storescu (one file per association) in a thread; records what Orthanc
    acknowledged, with the wall-clock time of the acknowledgement."""

    def __init__(self, pacs: LivePacs, files: list[tuple[Path, str]]) -> None:
        self.pacs, self.files = pacs, files
        self.acked: list[tuple[str, str]] = []       # (SOP Instance UID, UTC time after storescu returned 0)
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            path, uid = self.files[i % len(self.files)]   # round and round: later rounds re-store
            if self.pacs.storescu(path, timeout=30).returncode == 0:
                self.acked.append((uid, utcnow()))
                i += 1
            else:
                self.refused += 1
                self._stop.wait(0.05)   # PACS down for the copy: retry the same file

    def __enter__(self) -> StoringLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
