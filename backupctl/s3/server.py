"""The embedded S3 server: moto's server mode on 127.0.0.1, in memory, for trying the tool and for tests.

It is a real HTTP S3 API with versioning and Object Lock, but it keeps everything in RAM and, unlike a
production S3, lets a COMPLIANCE lock be shortened (see `backupctl s3 probe`). Never keep backups in it.
It serves only the process that started it, so it gets SIGTERM when that process dies: its data lived in
that server's memory and is gone either way.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from backupctl import process
from backupctl.errors import EmbeddedServerError
from backupctl.process import Child

READY_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def require_moto() -> None:
    """moto is the demo extra's, not a production install's: say how to get it."""
    if importlib.util.find_spec("moto") is None:
        raise EmbeddedServerError("the embedded S3 server needs moto, which this installation does not have",
                                  hint="pip install 'backupctl[demo]' (make demo and make test install it)")


class EmbeddedS3:
    """moto_server as a child process. `start()` returns the endpoint once it answers; `stop()` ends it.

    Usable as a context manager. With `cert`/`key` it serves HTTPS (tests pass the CA as ca_bundle); `env`
    adds moto settings (environment variables) for the server process.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cert: Path | None = None,
                 key: Path | None = None, log: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.host, self.port = host, port
        self.cert, self.key, self.log = cert, key, log
        self.env = dict(env or {})
        self.proc: Child | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT) -> str:
        require_moto()
        wanted = self.port
        # a free port can be taken between probing and binding: then try another one
        for _attempt in range(1 if wanted else 3):
            self.port = wanted or free_port(self.host)
            self._spawn()
            if self._wait_ready(timeout):
                return self.endpoint
            self.stop()
        raise EmbeddedServerError(f"the embedded S3 server did not start on {self.host}:{self.port}",
                                  hint="is the port free and moto[server] installed?")

    def _spawn(self) -> None:
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        if self.cert and self.key:
            argv += ["-c", str(self.cert), "-k", str(self.key)]
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true", **self.env}
        out = open(self.log, "ab") if self.log else process.DEVNULL  # noqa: SIM115 - the child owns it
        try:
            self.proc = process.start(argv, stdout=out, stderr=process.STDOUT, env=env, text=False,
                                      on_parent_death=signal.SIGTERM)
        finally:
            if out is not process.DEVNULL:
                out.close()

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        context = ssl._create_unverified_context() if self.cert else None  # readiness only, no data
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.05)  # polling interval while waiting for the child to bind, with a deadline
        return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.stop(signal.SIGTERM, timeout)

    def __enter__(self) -> EmbeddedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
