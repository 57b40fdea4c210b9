"""A private PostgreSQL 15 server for the tests and the demo: Orthanc's index on PostgreSQL (Debian's
`orthanc-postgresql` plugin), the setting of most production Orthancs.

Started in its own data folder, on a free 127.0.0.1 port, as the unprivileged `postgres` user (PostgreSQL
refuses to run as root). Production servers are not started by backupctl.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl import process
from backupctl.errors import OrthancNotInstalled, OrthancStartError
from backupctl.pacs.orthanc import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INDEX_PLUGIN_GLOB = "libOrthancPostgreSQLIndex.so*"


def find_index_plugin() -> Path:
    found = sorted(Path("/usr/lib/orthanc").glob(INDEX_PLUGIN_GLOB))
    if not found:
        raise OrthancNotInstalled("Orthanc's PostgreSQL plugin is not installed",
                                  hint="apt-get install orthanc-postgresql")
    return found[-1]


@dataclass
class PostgresServer:
    user: str = "postgres"
    database: str = "orthanc"
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    root: Path | None = None

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _as_user(self, *argv: str | os.PathLike[str], timeout: float = 60) -> process.Completed:
        done = process.run(["runuser", "-u", self.user, "--", *map(str, argv)], timeout=timeout, kill_grace=2,
                           secrets=[self.password])
        if not done.ok:
            raise OrthancStartError(f"{Path(str(argv[0])).name} failed: {done.tail(3, 300)}")
        return done

    def start(self) -> PostgresServer:
        if not (PG_BIN / "pg_ctl").exists():
            raise OrthancNotInstalled("PostgreSQL 15 is not installed", hint="apt-get install postgresql")
        owner = pwd.getpwnam(self.user)
        # outside root's private temporary folders: the server's user must reach its data folder
        self.root = Path(tempfile.mkdtemp(prefix="backupctl-pg-"))
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        pwfile = self.root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._as_user(PG_BIN / "initdb", "-D", self.data, "-U", self.user, "--pwfile", pwfile,
                      "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", timeout=120)
        pwfile.unlink()
        self.port = free_port()
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_user(PG_BIN / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.root / "postgres.log",
                      "-w", "-t", "60", "start", timeout=90)
        self.psql(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def psql(self, sql: str, *, database: str | None = None) -> str:
        done = self._as_user(PG_BIN / "psql", "-h", self.root, "-p", str(self.port), "-d",
                             database or self.database, "-AtX", "-v", "ON_ERROR_STOP=1", "-c", sql)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self._as_user(PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", timeout=60)
            except OrthancStartError:
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def orthanc_settings(self) -> dict[str, Any]:
        """The `Plugins` and `PostgreSQL` settings of an Orthanc whose index lives here (storage on disk)."""
        return {"Plugins": [str(find_index_plugin())],
                "PostgreSQL": {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1",
                               "Port": self.port, "Database": self.database, "Username": self.user,
                               "Password": self.password, "Lock": False}}
