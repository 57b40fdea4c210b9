"""A single-node Ceph RGW on 127.0.0.1: a production S3 with real Object Lock, for tests and probes.

One monitor, one OSD (memstore: all data in RAM; or bluestore on a sparse file) and radosgw, no systemd,
no mgr. Each daemon daemonizes itself and writes `<base>/run/<name>.pid`; `down()` stops exactly those
PIDs (checking that the process still runs with our ceph.conf), radosgw first and the monitor last.
The daemons outlive whoever started them on purpose (a bring-up costs seconds; the next one reuses them):
only the commands run here die with backupctl, not the daemons they leave running.
Bring-up takes a few seconds and ~120 MB RSS idle. Derived from the project's tried shell bring-up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from backupctl import process
from backupctl.errors import RgwError
from backupctl.s3.server import free_port

RGW_NAME = "client.rgw.localhost"
DAEMONS = (RGW_NAME, "osd.0", "mon.a")          # stop order
STOP_SECONDS = {RGW_NAME: 10.0, "osd.0": 120.0, "mon.a": 30.0}   # memstore writes its RAM out on TERM
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool")
USER = "backup-test"


@dataclass(frozen=True)
class RgwInfo:
    endpoint: str
    access_key: str
    secret_key: str


def rgw_available() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() or Path("/usr/bin", b).exists()
               for b in BINARIES)


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class RgwCluster:
    def __init__(self, base: Path, *, store: str = "memstore", memstore_bytes: str = "2G") -> None:
        self.base = base.absolute()
        self.conf = self.base / "ceph.conf"
        self.store = store
        self.memstore_bytes = memstore_bytes

    # process bookkeeping ------------------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        path = self.base / "run" / f"{name}.pid"
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        """The PID file names a live process started with our conf (a zombie has an empty cmdline)."""
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return f"-c {self.conf}" in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def _run(self, *argv: str, timeout: float = 120.0, log: str | None = None) -> str:
        env = {**os.environ, "CEPH_CONF": str(self.conf)}
        if log:
            with open(self.base / "log" / log, "ab") as stderr:
                # stdout stays in the file too: a daemon that keeps it would hold a pipe open
                done = process.run(argv, env=env, timeout=timeout, stdout=stderr, text=False)
        else:
            done = process.run(argv, env=env, timeout=timeout, text=False)
        if done.timed_out:
            raise RgwError(f"{argv[0]} did not finish in {timeout:.0f} s; see {self.base}/log")
        if done.returncode != 0:
            detail = done.tail() if not log else ""
            raise RgwError(f"{argv[0]} failed (exit {done.returncode}) {detail}".strip(),
                           hint=f"see {self.base}/log")
        return (done.stdout or b"").decode(errors="replace")

    # lifecycle ------------------------------------------------------------------------------------------

    @property
    def bootstrapped(self) -> bool:
        return (self.base / ".bootstrapped").exists()

    def up(self, timeout: float = 120.0) -> RgwInfo:
        """Bootstrap a new cluster in `base`, or start the daemons of an existing one; wait until S3 answers."""
        missing = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
        if missing:
            raise RgwError(f"Ceph RGW is not installed (missing {', '.join(missing)})",
                           hint="run scripts/install-system-deps.sh")
        if self.base.exists() and not self.bootstrapped:
            if any(self.alive(n) for n in DAEMONS):
                raise RgwError(f"{self.base} is half-bootstrapped but daemons run", hint="call down() first")
            shutil.rmtree(self.base)
        if self.bootstrapped and self.store == "memstore" and (self.base / ".osd-unclean").exists() \
                and not self.alive("osd.0"):
            # memstore keeps everything in RAM and saves it only on a clean stop: what was there is gone
            self.down()
            shutil.rmtree(self.base)
        if not self.bootstrapped:
            self._bootstrap()
        else:
            self._start_existing()
        info = self.info()
        self._wait_ready(info, timeout)
        (self.base / ".bootstrapped").touch()
        return info

    def info(self) -> RgwInfo:
        access, secret = (self.base / "s3-keys").read_text().split()
        return RgwInfo(f"http://127.0.0.1:{self._port('rgw')}", access, secret)

    def _port(self, which: str) -> int:
        return int((self.base / f"{which}.port").read_text())

    def _bootstrap(self) -> None:
        for sub in ("run", "log", "crash", "mon.a", "osd.0", "rgw"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        rgw_port, mon_port = free_port(), free_port()
        (self.base / "rgw.port").write_text(str(rgw_port))
        (self.base / "mon.port").write_text(str(mon_port))
        fsid = str(uuid.uuid4())
        self.conf.write_text(self._conf_text(fsid, rgw_port, mon_port))
        keyring = self.base / "keyring"
        caps = {
            "mon.": ["--cap", "mon", "allow *"],
            "client.admin": ["--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"],
            "osd.0": ["--cap", "mon", "allow profile osd", "--cap", "mgr", "allow profile osd",
                      "--cap", "osd", "allow *"],
            RGW_NAME: ["--cap", "mon", "allow rw", "--cap", "osd", "allow rwx", "--cap", "mgr", "allow rw"],
        }
        for i, (name, cap) in enumerate(caps.items()):
            create = ["--create-keyring"] if i == 0 else []
            self._run("ceph-authtool", str(keyring), *create, "--gen-key", "-n", name, *cap)
        keyring.chmod(0o600)
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]",
                  "--set-min-mon-release", "pacific", "--enable-all-features", str(self.base / "monmap"))
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(self.base / "monmap"),
                  "--keyring", str(keyring))
        self._run("ceph-mon", "-c", str(self.conf), "-i", "a")
        osd_uuid = str(uuid.uuid4())
        self._run("ceph", "-c", str(self.conf), "osd", "new", osd_uuid, "0")
        self._run("ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid,
                  log="osd-mkfs.log")
        self._start_osd()
        access = _random(string.ascii_uppercase + string.digits, 20)
        secret = _random(string.ascii_letters + string.digits, 40)
        # radosgw-admin also creates the default realm/zonegroup/zone and the rgw pools
        self._run("radosgw-admin", "-c", str(self.conf), "user", "create", f"--uid={USER}",
                  f"--display-name={USER}", f"--access-key={access}", f"--secret-key={secret}")
        keys = self.base / "s3-keys"
        keys.write_text(f"{access} {secret}\n")
        keys.chmod(0o600)
        self._run("radosgw", "-c", str(self.conf), "-n", RGW_NAME)

    def add_user(self, uid: str) -> RgwInfo:
        """Create another S3 user (tests of what one user may do in another's bucket); its new keys."""
        access = _random(string.ascii_uppercase + string.digits, 20)
        secret = _random(string.ascii_letters + string.digits, 40)
        self._run("radosgw-admin", "-c", str(self.conf), "user", "create", f"--uid={uid}",
                  f"--display-name={uid}", f"--access-key={access}", f"--secret-key={secret}")
        return RgwInfo(f"http://127.0.0.1:{self._port('rgw')}", access, secret)

    def _start_existing(self) -> None:
        if not self.alive("mon.a"):
            self._run("ceph-mon", "-c", str(self.conf), "-i", "a")
        if not self.alive("osd.0"):
            self._start_osd()
        if not self.alive(RGW_NAME):
            self._run("radosgw", "-c", str(self.conf), "-n", RGW_NAME)

    def _start_osd(self) -> None:
        (self.base / ".osd-unclean").touch()   # removed by down() only after a clean SIGTERM exit
        self._run("ceph-osd", "-c", str(self.conf), "-i", "0", log="osd.0.stderr")

    def _wait_ready(self, info: RgwInfo, timeout: float) -> None:
        """Ready = an authenticated ListBuckets succeeds: sigv4 + RGW + RADOS all work."""
        import boto3
        from botocore.config import Config as BotoConfig

        client = boto3.client("s3", endpoint_url=info.endpoint, aws_access_key_id=info.access_key,
                              aws_secret_access_key=info.secret_key, region_name="us-east-1",
                              config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive(RGW_NAME):
                raise RgwError(f"radosgw exited; see {self.base}/log/{RGW_NAME}.log")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means: not ready yet
                last = type(exc).__name__
            time.sleep(0.2)  # polling interval, bounded by the deadline
        raise RgwError(f"radosgw on {info.endpoint} not ready after {timeout:.0f} s ({last})",
                       hint=f"see {self.base}/log")

    def down(self) -> bool:
        """Stop our daemons (radosgw, osd, mon) by PID; True when all stopped on SIGTERM."""
        clean = True
        for name in DAEMONS:
            pid = self.pid(name)
            pidfile = self.base / "run" / f"{name}.pid"
            if pid is None or not self.alive(name):
                pidfile.unlink(missing_ok=True)
                continue
            grace = STOP_SECONDS[name]
            if name == RGW_NAME and not self.alive("osd.0"):
                grace = 3.0   # without the OSD radosgw cannot flush and would hang in shutdown
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive(name) and time.monotonic() < deadline:
                time.sleep(0.1)  # polling for the exit, bounded by the grace period
            if self.alive(name):
                os.kill(pid, signal.SIGKILL)
                clean = False
            elif name == "osd.0":
                (self.base / ".osd-unclean").unlink(missing_ok=True)
            pidfile.unlink(missing_ok=True)
        return clean

    def _conf_text(self, fsid: str, rgw_port: int, mon_port: int) -> str:
        b = self.base
        if self.store == "bluestore":
            osd = ("osd objectstore = bluestore\nbluestore block create = true\nbluestore block size = 20G\n"
                   "bluestore fsck on mount = false\nosd memory target = 1073741824")
        else:
            osd = (f"osd objectstore = memstore\nmemstore device bytes = {self.memstore_bytes}\n"
                   "osd fast shutdown = false")
        return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {b}/keyring
run dir = {b}/run
crash dir = {b}/crash
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 10
paxos propose interval = 0.1

[mon]
mon data = {b}/mon.$id
mon cluster log file = {b}/log/cluster.log
log file = {b}/log/$name.log
pid file = {b}/run/$name.pid

[osd]
osd data = {b}/osd.$id
log file = {b}/log/$name.log
pid file = {b}/run/$name.pid
{osd}

[{RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {b}/rgw
log file = {b}/log/$name.log
pid file = {b}/run/$name.pid
"""
