"""Talking to Orthanc: a small REST client, and a controller for throw-away instances.

The client is stdlib only (`http.client`, one keep-alive connection per thread) because the calls are few
and simple; what matters is that it checks what Orthanc answers (`"Status": "Failure"` comes with HTTP
200) and never shows credentials (URLs are printed without their user-info part).

`OrthancProcess` runs a private Orthanc for drills, the demo and tests: free ports, its own config and
folders, authentication on with generated credentials (written to a 0600 file, never logged), storage
cache 0 (so MD5 checks read the disk), DICOM server off unless asked. It waits for `/system` with a
deadline, and its `stop()` (REST shutdown, then SIGTERM, then SIGKILL) always leaves no process behind.

Facts of Orthanc 1.10.1 this relies on: it holds a POSIX lock on its SQLite `index` from start to exit (so
`index_lock_holder` tells whether an Orthanc still owns a folder, without ever opening the index); the HTTP
server can be limited to localhost (`RemoteAccessAllowed: false`) but the DICOM port listens on all
interfaces, hence DICOM off by default and called-AET checks on.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl import process
from backupctl.errors import (
    OrthancError,
    OrthancHttpError,
    OrthancNotInstalled,
    OrthancStartError,
    OrthancUnreachable,
    SecretError,
)
from backupctl.process import Child
from backupctl.secrets import read_secret

log = logging.getLogger("backupctl.pacs")

ORTHANC_ENV = "BACKUPCTL_ORTHANC"          # path of the Orthanc binary, when not on PATH or in /usr/sbin
DEFAULT_BINARIES = ("Orthanc", "/usr/sbin/Orthanc", "/usr/local/sbin/Orthanc", "/usr/local/bin/Orthanc")


# binaries, ports, locks --------------------------------------------------------------------------------


def find_orthanc() -> Path:
    """The Orthanc executable, or OrthancNotInstalled naming how to get one."""
    explicit = os.environ.get(ORTHANC_ENV)
    candidates = (explicit,) if explicit else DEFAULT_BINARIES
    for name in candidates:
        found = shutil.which(name)
        if found:
            return Path(found)
    where = f"{ORTHANC_ENV}={explicit}" if explicit else "PATH, /usr/sbin, /usr/local"
    raise OrthancNotInstalled(f"Orthanc is not installed (looked in {where})",
                              hint="apt-get install orthanc, or run scripts/install-system-deps.sh")


def find_dcmtk(tool: str) -> Path:
    found = shutil.which(tool)
    if not found:
        raise OrthancNotInstalled(f"dcmtk's {tool} is not installed", hint="apt-get install dcmtk")
    return Path(found)


def free_port() -> int:
    """A TCP port nothing listens on now, on any interface (Orthanc's DICOM port binds all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


_FLOCK = "hhqqi4x"                         # struct flock on Linux: type, whence, start, len, pid (+pad)


def index_lock_holder(index_file: Path) -> int | None:
    """PID of the process holding a POSIX lock on an SQLite file (Orthanc's index), or None.

    Only asks the kernel (F_GETLK); it never opens the database, which would disturb a live Orthanc.
    Returns None when the file does not exist.
    """
    try:
        fd = os.open(index_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


# credentials -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"

    @staticmethod
    def generate(username: str = "backupctl") -> Credentials:
        return Credentials(username, secrets.token_urlsafe(24))


def parse_credentials(text: str, where: str) -> Credentials:
    """`user:password` on one line, or JSON `{"username": ..., "password": ...}`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
            return Credentials(str(data["username"]), str(data["password"]))
        except (ValueError, KeyError, TypeError):
            raise SecretError(f"{where}: expected JSON with 'username' and 'password'") from None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SecretError(f"{where}: expected one line 'username:password'")
    return Credentials(user, password)


def read_credentials(file: Path | None = None, env: str | None = None) -> Credentials | None:
    """Credentials from a 0600 file or an environment variable; None when neither is configured."""
    if file is not None:
        return parse_credentials(read_secret(file, "credentials file"), str(file))
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise SecretError(f"environment variable {env} is not set",
                              hint="export it as 'username:password'")
        return parse_credentials(value, f"${env}")
    return None


def redact_url(url: str) -> str:
    """The URL without user-info, query or fragment: safe for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def split_url(url: str) -> tuple[str, Credentials | None]:
    """A URL given as http://user:pass@host:port/ becomes (clean URL, credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OrthancError(f"not an http(s) URL: {redact_url(url)}", hint="e.g. http://127.0.0.1:8042")
    creds = None
    if parts.username is not None:
        creds = Credentials(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return redact_url(url), creds


# REST client -------------------------------------------------------------------------------------------


class OrthancClient:
    """A thread-safe client of one Orthanc REST API; each thread keeps its own keep-alive connection."""

    def __init__(self, url: str, credentials: Credentials | None = None, *, timeout: float = 60.0,
                 verify_tls: bool = True) -> None:
        clean, from_url = split_url(url)
        self.url = clean.rstrip("/")
        self.credentials = credentials or from_url
        self.timeout = timeout
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context() if verify_tls else ssl._create_unverified_context()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"OrthancClient({self.url!r})"

    # transport

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None, *,
                content_type: str = "application/json", timeout: float | None = None) -> tuple[int, bytes]:
        """Send one request; returns (status, body). Raises OrthancUnreachable on transport failures."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.credentials:
            headers["Authorization"] = self.credentials.header()
        # a kept-alive connection the server closed fails on first use: retry once on a fresh one
        for attempt in (1, 2):
            conn = self._connection(timeout or self.timeout)
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                return resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise OrthancUnreachable(f"Orthanc at {self.url} closed the connection ({exc})") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                reason = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else str(exc)
                raise OrthancUnreachable(f"no answer from Orthanc at {self.url}: {reason}",
                                         hint="is it running, and is the URL right?") from None
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> Any:
        """A request whose answer must be 2xx JSON (or empty); raises OrthancHttpError otherwise."""
        status, data = self.request(method, path, body, **kw)
        if status == 401:
            raise OrthancHttpError(f"Orthanc at {self.url} refused the credentials (HTTP 401)",
                                   hint="check the credentials file", status=status)
        if status >= 300:
            raise OrthancHttpError(f"Orthanc {method} {path}: HTTP {status}: {_orthanc_message(data)}",
                                   status=status)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, payload: Any = None, **kw: Any) -> Any:
        body = b"" if payload is None else json.dumps(payload).encode()
        return self.call("POST", path, body, **kw)

    def close(self) -> None:
        self._drop_connection()

    # the API backupctl uses

    def system(self, timeout: float | None = None) -> dict[str, Any]:
        return self.get("/system", timeout=timeout)

    def statistics(self) -> dict[str, Any]:
        return self.get("/statistics")

    def counts(self) -> dict[str, int]:
        s = self.statistics()
        return {"patients": int(s["CountPatients"]), "studies": int(s["CountStudies"]),
                "series": int(s["CountSeries"]), "instances": int(s["CountInstances"])}

    def find(self, level: str, query: dict[str, str] | None = None, *, expand: bool = False) -> list[Any]:
        return self.post("/tools/find", {"Level": level, "Query": query or {}, "Expand": expand})

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        return self.get(f"/studies/{study_id}/instances")

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """POST /instances; returns Orthanc's answer. A `"Status": "Failure"` (sent with HTTP 200) raises."""
        answer = self.call("POST", "/instances", dicom, content_type="application/dicom")
        if not isinstance(answer, dict):
            raise OrthancHttpError(f"Orthanc POST /instances: unexpected answer {str(answer)[:80]!r}")
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancHttpError(f"Orthanc did not store the instance (Status {answer.get('Status')!r})")
        return answer

    def verify_md5(self, instance_id: str) -> str | None:
        """None when the stored file matches the MD5 in the index, else what is wrong."""
        status, data = self.request("POST", f"/instances/{instance_id}/attachments/dicom/verify-md5", b"")
        if status == 200:
            return None
        return _orthanc_message(data) or f"HTTP {status}"

    def download(self, instance_id: str) -> bytes:
        status, data = self.request("GET", f"/instances/{instance_id}/file")
        if status != 200:
            raise OrthancHttpError(f"Orthanc GET /instances/{instance_id}/file: HTTP {status}", status=status)
        return data

    def shutdown(self) -> None:
        self.post("/tools/shutdown", timeout=10)

    def wait_ready(self, deadline: float, *, alive: Callable[[], bool] | None = None,
                   interval: float = 0.05) -> dict[str, Any]:
        """Poll `/system` until it answers (or `alive()` turns false, or the monotonic deadline passes)."""
        last = "no answer"
        while True:
            if alive is not None and not alive():
                raise OrthancStartError(f"Orthanc at {self.url} exited while starting")
            try:
                return self.system(timeout=max(0.2, min(2.0, deadline - time.monotonic())))
            except OrthancHttpError as exc:
                if exc.status == 401:
                    raise
                last = exc.message
            except OrthancUnreachable as exc:
                last = exc.message
            if time.monotonic() >= deadline:
                raise OrthancStartError(f"Orthanc at {self.url} not ready in time ({last})")
            time.sleep(interval)   # polling interval, not synchronisation: the deadline bounds the wait

    def answers(self, timeout: float = 1.0) -> bool:
        """True when anything answers HTTP at the URL (even 401)."""
        try:
            self.request("GET", "/system", timeout=timeout)
        except OrthancUnreachable:
            return False
        return True


def _orthanc_message(data: bytes) -> str:
    try:
        err = json.loads(data)
        if isinstance(err, dict):
            return str(err.get("Details") or err.get("Message") or err.get("OrthancError") or "")[:300]
    except ValueError:
        pass
    return data[:200].decode("utf-8", "replace").strip()


# throw-away instances ----------------------------------------------------------------------------------


def instance_config(*, name: str, storage: Path, index: Path, http_port: int, dicom_port: int,
                    dicom: bool, aet: str, dicom_clients: tuple[str, ...] = ()) -> dict[str, Any]:
    """Orthanc settings of a private instance (credentials go in a separate 0600 file).

    DICOM, when on, answers only the AETs of `dicom_clients` connecting from 127.0.0.1, and only C-ECHO,
    C-FIND: the port listens on every interface, and a drill's PACS holds patient data."""
    modalities = {f"client{i}": {"AET": client, "Host": "127.0.0.1", "Port": 104, "AllowStore": False,
                                 "AllowMove": False, "AllowGet": False, "AllowStorageCommitment": False}
                  for i, client in enumerate(dicom_clients)}
    return {
        "Name": name,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(index),
        "StorageCompression": False,
        "MaximumStorageCacheSize": 0,          # reads hit the disk: MD5 checks see what is really there
        "Plugins": [],
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,          # HTTP answers localhost only
        "AuthenticationEnabled": True,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "DicomServerEnabled": dicom,           # 1.10.1 binds DICOM on all interfaces: off unless needed
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "DicomCheckCalledAet": True,
        "DicomModalities": modalities,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
        "SyncStorageArea": False,              # a throw-away copy: speed over power-loss safety
        "OverwriteInstances": False,
    }


_live: weakref.WeakSet[OrthancProcess] = weakref.WeakSet()


class OrthancProcess:
    """A private Orthanc under `root` (config/, storage/, index/, orthanc.log). Use as a context manager.

    `storage` and `index` may point elsewhere (e.g. a restored Orthanc's folders). `stop()` is idempotent
    and always reaps the process; `__exit__` calls it whatever happened.
    """

    START_ATTEMPTS = 3                     # a free port can be taken between probing and binding

    def __init__(self, root: Path, *, storage: Path | None = None, index: Path | None = None,
                 dicom: bool = False, aet: str = "BACKUPCTL", dicom_clients: tuple[str, ...] = (),
                 name: str = "backupctl",
                 start_timeout: float = 30.0, binary: Path | None = None, disposable: bool = False) -> None:
        self.root = root
        self.storage = storage or root / "storage"
        self.index = index or root / "index"
        self.dicom = dicom
        self.aet = aet
        self.dicom_clients = dicom_clients
        self.name = name
        self.start_timeout = start_timeout
        self.binary = binary
        self.disposable = disposable
        self.credentials = Credentials.generate()
        self.http_port = 0
        self.dicom_port = 0
        self.proc: Child | None = None
        self.client: OrthancClient | None = None
        self.start_seconds = 0.0
        self.stop_seconds = 0.0

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def api(self) -> OrthancClient:
        if self.client is None:
            raise OrthancError("Orthanc is not started")
        return self.client

    def __enter__(self) -> OrthancProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> OrthancProcess:
        binary = self.binary or find_orthanc()
        for folder in (self.root, self.storage, self.index):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OrthancStartError(f"cannot create {folder} for Orthanc: {exc.strerror}") from None
        began = time.monotonic()
        for attempt in range(1, self.START_ATTEMPTS + 1):
            self._write_config()
            try:
                self._launch(binary)
                break
            except OrthancStartError:
                self.stop(grace=3.0)
                if attempt == self.START_ATTEMPTS or not self._port_clash():
                    raise
                log.info("Orthanc port taken between probe and bind; retrying on other ports")
        self.start_seconds = time.monotonic() - began
        return self

    def _write_config(self) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port() if self.dicom else 0
        while self.dicom and self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        from backupctl.fsutil import atomic_write_text

        cfg = instance_config(name=self.name, storage=self.storage.absolute(), index=self.index.absolute(),
                              http_port=self.http_port, dicom_port=self.dicom_port or 4242,
                              dicom=self.dicom, aet=self.aet, dicom_clients=self.dicom_clients)
        users = {"RegisteredUsers": {self.credentials.username: self.credentials.password}}
        atomic_write_text(self.config_dir / "orthanc.json", json.dumps(cfg, indent=2), mode=0o644)
        atomic_write_text(self.config_dir / "credentials.json", json.dumps(users), mode=0o600)
        self.client = OrthancClient(self.url, self.credentials, timeout=120)

    def _launch(self, binary: Path) -> None:
        with open(self.log_path, "ab") as logfile:
            try:
                # own session: a Ctrl+C at the terminal reaches backupctl, which then stops Orthanc in order.
                # A private Orthanc serves only the backupctl that started it, so it dies with it: at once when
                # its folders are thrown away anyway, else by SIGTERM, on which Orthanc closes its index cleanly
                self.proc = process.start([str(binary), str(self.config_dir)], cwd=self.root, stdout=logfile,
                                          stderr=process.STDOUT, text=False,
                                          on_parent_death=signal.SIGKILL if self.disposable else signal.SIGTERM)
            except OSError as exc:
                raise OrthancStartError(f"cannot run {binary}: {exc.strerror}") from None
        _live.add(self)
        try:
            self.api().wait_ready(time.monotonic() + self.start_timeout, alive=self.running)
        except OrthancStartError as exc:
            tail = self.log_tail()
            raise OrthancStartError(f"{exc.message}{': ' + tail if tail else ''}",
                                    hint=f"see {self.log_path}") from None

    def _port_clash(self) -> bool:
        text = self.log_tail(20)
        return "bind" in text.lower() or "address already in use" in text.lower()

    def log_tail(self, lines: int = 3) -> str:
        """The last error-ish lines of Orthanc's log, for messages (Orthanc never logs credentials)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        errors = [ln for ln in text if ln[:1] in ("E", "F")] or text
        return " | ".join(ln.strip() for ln in errors[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """REST shutdown, then SIGTERM, then SIGKILL; returns when the process is reaped.

        A `disposable` instance (its folders are deleted right after: drills, the demo's fresh PACS) is
        killed at once: Orthanc 1.10 needs 3-4 s to shut down cleanly, for a state nobody keeps."""
        proc = self.proc
        if proc is None:
            return
        began = time.monotonic()
        try:
            if self.disposable:
                proc.stop(signal.SIGKILL, 0)
            if proc.poll() is None and self.client is not None:
                try:
                    self.client.shutdown()
                    proc.wait(grace)
                except OrthancError:
                    pass  # no REST API to ask (still starting, or hung): signals below
            proc.stop(signal.SIGTERM, grace)
        finally:
            if proc.poll() is None:           # interrupted meanwhile: SIGKILL cannot be ignored
                proc.stop(signal.SIGKILL, 0)
            if self.client is not None:
                self.client.close()
            self.stop_seconds = time.monotonic() - began
            self.proc = None
            _live.discard(self)


def stop_all_live() -> None:
    """Interpreter exit: no private Orthanc outlives backupctl."""
    for inst in list(_live):
        with contextlib.suppress(Exception):
            inst.stop(grace=5.0)


atexit.register(stop_all_live)
