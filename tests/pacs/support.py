"""The production-like Orthanc of the tests (`ServicePacs`, started/stopped by scripts, tracked by PID), and
a thread that keeps storing into it with storescu."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from backupctl.catalog.db import utcnow
from backupctl.pacs.service import ServicePacs


@dataclass
class LivePacs(ServicePacs):
    aet: str = "LIVEPACS"
    any_modality: bool = True

    def job_toml(self, **overrides: object) -> str:
        return f'name = "pacs"\n\n{self.orthanc_toml(**overrides)}'


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
