"""Sending DICOM files to an Orthanc over REST: concurrent, retried, every answer's `Status` checked.

Used by `restore --to-pacs URL` and by the `pacs` drill. REST uploads are stored byte-identical (unlike
C-STORE, which rewrites the file meta header), so what Orthanc holds can be compared with what was sent.

Retry policy: transport errors, HTTP 5xx and `"Status": "Failure"` are retried with exponential back-off
(Orthanc busy, restarting, disk briefly full); HTTP 4xx is not (the file is bad, or the credentials are
refused: retrying would not help, and a 401 stops the whole upload at once).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.errors import OrthancError, OrthancHttpError
from backupctl.pacs.orthanc import OrthancClient
from backupctl.progress import NullProgress, Progress

log = logging.getLogger("backupctl.pacs.ingest")

DICM_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble (Orthanc's storage files are too)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(DICM_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def iter_dicom_files(root: Path) -> Iterator[Path]:
    """Every DICOM file under `root`, in a stable order."""
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            path = Path(dirpath) / name
            if is_dicom_file(path):
                yield path


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts after the preamble and file meta group (0 for a bare dataset)."""
    if len(data) < 132 or data[DICM_OFFSET:132] != b"DICM":
        return 0
    # group 0002 is always explicit VR little endian and starts with (0002,0000) UL group length
    if data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL":
        return 144 + int.from_bytes(data[140:144], "little")
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fh = io.BytesIO(data)
    read_preamble(fh, force=False)
    _read_file_meta_info(fh)
    return fh.tell()


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of the dataset without its file meta header: equal for a file and for the copy a PACS
    holds even when the PACS rewrote the meta header (as C-STORE does)."""
    return hashlib.sha256(memoryview(data)[dataset_offset(data):]).hexdigest()


@dataclass
class Rejected:
    path: Path
    reason: str


@dataclass
class IngestReport:
    sent: int = 0                 # files Orthanc accepted (stored now, or already stored)
    stored: int = 0
    already: int = 0
    bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    rejected: list[Rejected] = field(default_factory=list)
    instance_ids: dict[Path, str] = field(default_factory=dict)   # file -> Orthanc instance id

    @property
    def ok(self) -> bool:
        return not self.rejected


def _upload_one(client: OrthancClient, path: Path, retries: int, backoff: float) -> tuple[dict, int, int]:
    """(Orthanc's answer, bytes, retries used); raises the last error once retries are spent."""
    data = path.read_bytes()
    attempt = 0
    while True:
        try:
            return client.upload(data), len(data), attempt
        except OrthancHttpError as exc:
            if exc.status == 401 or (400 <= exc.status < 500):
                raise
            error: OrthancError = exc
        except OrthancError as exc:      # unreachable, closed connection, Status Failure
            error = exc
        if attempt >= retries:
            raise error
        attempt += 1
        time.sleep(backoff * 2 ** (attempt - 1))   # back-off between retries, not synchronisation


def send_files(client: OrthancClient, files: Iterable[Path], *, total: int | None = None, concurrency: int = 4,
               retries: int = 3, backoff: float = 0.2, progress: Progress | None = None) -> IngestReport:
    """Upload `files` with `concurrency` workers. Bad files are reported in `rejected`; refused
    credentials (HTTP 401) stop everything at once."""
    progress = progress or NullProgress()
    report = IngestReport()
    lock = threading.Lock()
    began = time.monotonic()
    with progress.task("send to PACS", total=total, unit="files") as task, \
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pacs-send") as pool:
        pending: dict[Future, Path] = {}

        def collect(done: set[Future]) -> None:
            for fut in done:
                path = pending.pop(fut)
                try:
                    answer, size, used = fut.result()
                except OrthancHttpError as exc:
                    if exc.status == 401:
                        raise
                    _reject(report, lock, path, exc.message)
                except (OrthancError, OSError) as exc:
                    _reject(report, lock, path, getattr(exc, "message", None) or str(exc))
                else:
                    with lock:
                        report.sent += 1
                        report.bytes += size
                        report.retries += used
                        report.stored += answer.get("Status") == "Success"
                        report.already += answer.get("Status") == "AlreadyStored"
                        report.instance_ids[path] = answer["ID"]
                task.advance()

        try:
            for path in files:
                pending[pool.submit(_upload_one, client, path, retries, backoff)] = path
                if len(pending) >= concurrency * 4:      # bounded queue: memory stays flat
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    report.seconds = time.monotonic() - began
    return report


def _reject(report: IngestReport, lock: threading.Lock, path: Path, reason: str) -> None:
    log.info("PACS refused %s: %s", path, reason)
    with lock:
        report.rejected.append(Rejected(path, reason))
