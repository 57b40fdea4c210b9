"""`kill -9` of `backupctl backup run` (or `drill run`) alone, not its group, at each phase of a run: every
child it started dies with it, the next run of the same command and `verify --level repo` pass without
`unlock`, the killed run is `interrupted` in the catalog, no partial file stays on the disk, Orthanc runs.

Each phase is reached by its own mark, never a timer: restic holding the start gate's FIFO while a manifest
worker hashes (the manifest is still being built); restic holding a source file open (restic reads); a
`.backupctl-partial` file on the disk (media sync); the first object in the bucket (S3 upload); the first
extension recorded in the catalog (S3 lock extension); restic `restore` running (drill restore); check
workers forked (drill checks); the Orthanc pid gone (Orthanc stopped for the copy). Sparse files keep a phase
busy for seconds without taking disk space; random bytes where the phase copies what restic stored.

backupctl runs under a small reaper (PR_SET_CHILD_SUBREAPER) that stands in for the init of a real host: this
machine's PID 1 does not reap orphans, and restic decides that a lock is stale by signalling its pid, which a
zombie still answers. The reaper also tells when the last descendant is gone: it exits then.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.config import Config, load_config
from backupctl.process import pid_running
from backupctl.repofiles import list_repository
from backupctl.s3.bucket import init_bucket
from backupctl.s3.client import connect
from backupctl.s3.server import EmbeddedS3
from backupctl.targets.media import TMP_SUFFIX, init_medium
from tests.drill_support import build_site
from tests.helpers import CONFIG_TEXT, cli, make_installation, wait_for
from tests.pacs.support import LivePacs
from tests.s3.conftest import Engine, _credentials_file, s3_target_toml, unique_bucket

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HEAD_BYTES = 1 << 30
INDEX_BULK_BYTES = 256 << 20
S3_NOISE_BYTES = 64 << 20       # random: several packs, each uploaded in parts
PART_BYTES = 5 << 20

REAPER = """\
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)          # PR_SET_CHILD_SUBREAPER: orphans below come to us
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
print(child.pid, flush=True)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
"""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _open_files(pid: int) -> list[str]:
    found = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            found.append(os.readlink(fd))
        except OSError:
            continue
    return found


def _restic(pid: int) -> int | None:
    return next((c for c in _children(pid) if _comm(c) == "restic"), None)


def _site(root: Path, bulk_bytes: int) -> Config:
    """Walked in this order: a sparse file the main process hashes while restic reaches the gate, small files
    whose first batch forks the manifest workers (so they are forked while restic waits at the gate, and
    would inherit the gate's FIFO), then a sparse file a worker hashes."""
    config = make_installation(root)
    archive = root / "archive"
    with open(archive / "0-head.img", "wb") as fh:
        fh.truncate(HEAD_BYTES)
    small = archive / "1-small"
    small.mkdir()
    for i in range(80):
        (small / f"note{i:03d}.txt").write_text(f"note {i}\n" * 50)
    (archive / "2-bulk").mkdir()
    with open(archive / "2-bulk" / "sparse.img", "wb") as fh:
        fh.truncate(bulk_bytes)
    (root / "tmp").mkdir()
    return config


def _at_the_gate_while_workers_hash(backupctl: int, gates: Path) -> bool:
    restic = _restic(backupctl)
    if restic is None or not any(f.startswith(str(gates)) and f.endswith("restic-waits-here")
                                 for f in _open_files(restic)):
        return False
    workers = [c for c in _children(backupctl) if c != restic and _comm(c).startswith("python")]
    return any(any(f.endswith("2-bulk/sparse.img") for f in _open_files(w)) for w in workers)


def _restic_reads(backupctl: int, gates: Path) -> bool:
    restic = _restic(backupctl)
    return restic is not None and any(f.endswith(".img") for f in _open_files(restic))


# phase -> (its mark, the bulk file's size: long enough for the workers to outlive the test's 5 s by far, if
# they did not die with backupctl; small where restic must first wait for the whole manifest)
PHASES: dict[str, tuple[Callable[[int, Path], bool], int]] = {
    "manifest build, restic at the gate": (_at_the_gate_while_workers_hash, 8 << 30),
    "restic reading": (_restic_reads, 256 << 20),
}


def _kill_at(log: Path, argv: list[str], env: dict[str, str], mark: Callable[[int], bool], what: str) -> int:
    """Start `argv` under the reaper, wait for `mark(pid)`, `kill -9` that process alone, then prove that
    every descendant it had is gone within 5 s. Returns the killed pid."""
    reaper = subprocess.Popen([sys.executable, "-c", REAPER, str(log), *argv], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert reaper.stdout is not None
        backupctl = int(reaper.stdout.readline())
        wait_for(lambda: mark(backupctl) or not pid_running(backupctl), timeout=120, interval=0.002, what=what)
        children = _descendants(backupctl)
        assert pid_running(backupctl), f"the command ended before {what}: {log.read_text()[-2000:]}"
        os.kill(backupctl, signal.SIGKILL)          # the process alone: its group gets nothing

        names = {c: _comm(c) for c in children}
        wait_for(lambda: not [c for c in children if pid_running(c)], timeout=5,
                 what=f"every child of the killed run to die: {names}")
        assert reaper.wait(timeout=5) == 0          # it exits once it has reaped the last descendant
    finally:
        if reaper.poll() is None:
            for pid in _descendants(reaper.pid):
                os.kill(pid, signal.SIGKILL)
            reaper.kill()
            reaper.wait()
    return backupctl


def _runs_of(config: Config, pid: int) -> dict[str, str]:
    """The status of each run (by kind) of process `pid` (opening the catalog marks the runs of dead
    processes)."""
    with open_catalog(config.catalog_path) as catalog:
        return {r["kind"]: r["status"] for r in catalog.query("SELECT * FROM runs WHERE pid=?", (pid,))}


def _argv(config: Config, *args: str) -> list[str]:
    return [sys.executable, "-m", "backupctl", "--config", str(config.path), *args]


@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_9_of_backup_run_leaves_no_child_and_blocks_nothing(tmp_path: Path, phase: str) -> None:
    mark, bulk_bytes = PHASES[phase]
    site = _site(tmp_path, bulk_bytes)
    gates = tmp_path / "tmp"
    env = {**os.environ, "TMPDIR": str(gates), "PYTHONPATH": str(ROOT)}
    argv = _argv(site, "backup", "run", "pacs", "--no-replicate")
    backupctl = _kill_at(tmp_path / "killed-run.log", argv, env, lambda pid: mark(pid, gates), phase)

    left = list(gates.glob(f"backupctl-gate-{backupctl}.*"))
    assert left, "the killed run's gate is there before the next run (else this test proves nothing)"
    for big in ("0-head.img", "2-bulk/sparse.img"):     # the next run need not read them again
        (tmp_path / "archive" / big).unlink()
    after = cli(site, "backup", "run", "pacs", "--no-replicate", env={"TMPDIR": str(gates)})
    assert after.returncode == 0, after.stderr
    assert f"took over the lock of dead pid {backupctl} (command backupctl" in after.stderr
    assert not list(gates.glob("backupctl-gate-*"))
    verify = cli(site, "verify", "--level", "repo", env={"TMPDIR": str(gates)})
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert _runs_of(site, backupctl) == {"backup": "interrupted"}


# media sync ----------------------------------------------------------------------------------------------


def _partials(disk: Path) -> list[Path]:
    return [Path(folder, n) for folder, _, names in os.walk(disk) for n in names if n.endswith(TMP_SUFFIX)]


def test_kill_9_during_media_sync_leaves_no_partial_file_after_the_next_run(tmp_path: Path) -> None:
    """The mark: a `.backupctl-partial` file on the disk. Random bytes make restic write packs that take the
    copy long enough for the mark to be seen while it lasts."""
    config = make_installation(tmp_path)
    for i in range(6):
        (tmp_path / "archive" / f"noise{i}.bin").write_bytes(os.urandom(8 << 20))
    cfg = config.target("offline")
    medium = init_medium(cfg.model_copy(update={"mount": config.resolve(cfg.mount)}), "offline", "DISK-A")
    with open_catalog(config.catalog_path) as catalog:
        media_rows.register_medium(catalog, "offline", medium.label, medium.media_id, medium.created)
    disk = tmp_path / "disk"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    backupctl = _kill_at(tmp_path / "killed-run.log", _argv(config, "backup", "run", "pacs"), env,
                         lambda _pid: bool(_partials(disk)), "a partial file on the disk")
    assert _partials(disk), "the killed sync left its partial files (else this test proves nothing)"

    after = cli(config, "backup", "run", "pacs")
    assert after.returncode == 0, after.stderr
    assert "removed" in after.stderr and "partial file(s) left by an interrupted sync" in after.stderr
    assert not _partials(disk)
    assert _runs_of(config, backupctl) == {"backup": "success", "replicate:offline": "interrupted"}
    verify = cli(config, "verify", "--level", "repo")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    replicas = cli(config, "verify", "--level", "replicas")
    assert replicas.returncode == 0, replicas.stderr + replicas.stdout


# restore drills ------------------------------------------------------------------------------------------


def _restic_restores(pid: int) -> bool:
    restic = _restic(pid)
    if restic is None:
        return False
    try:
        return b"restore" in Path(f"/proc/{restic}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def _checks_forked(pid: int) -> bool:
    return any(_comm(c).startswith("python") for c in _children(pid))


DRILL_PHASES: dict[str, Callable[[int], bool]] = {
    "drill restore (restic restores)": _restic_restores,
    "drill checks (workers forked)": _checks_forked,
}


@pytest.mark.parametrize("phase", list(DRILL_PHASES))
def test_kill_9_of_a_drill_leaves_no_child_and_blocks_nothing(tmp_path: Path, phase: str) -> None:
    site = build_site(tmp_path)
    config = site.define("killed", 'job = "pacs"\nscope = "all"\nrto_minutes = 30\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    drill = _kill_at(tmp_path / "killed-drill.log", _argv(config, "drill", "run", "killed"), env,
                     DRILL_PHASES[phase], phase)
    assert [p for p in site.scratch_root.iterdir() if f"-{drill}-" in p.name], \
        "the killed drill's scratch is there before the next drill (else this test proves nothing)"

    again = cli(config, "drill", "run", "killed")
    assert again.returncode == 0, again.stderr
    assert not [p for p in site.scratch_root.iterdir() if f"-{drill}-" in p.name]
    assert _runs_of(config, drill) == {"drill": "interrupted"}
    verify = cli(config, "verify", "--level", "repo")
    assert verify.returncode == 0, verify.stderr + verify.stdout


# S3 upload -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("moto")
    server = EmbeddedS3(log=folder / "moto.log")
    endpoint = server.start()
    try:
        yield Engine("moto", endpoint, _credentials_file(folder, "testing-writer", "testing-secret"))
    finally:
        server.stop()


def _s3_site(root: Path, moto: Engine, retention_days: int = 1) -> Config:
    """Job `pacs` replicated to bucket `vault` one object at a time, with packs of random bytes uploaded in
    parts (so the uploads outlast the mark by far)."""
    bucket = unique_bucket("kill")
    config = make_installation(root, config_text=CONFIG_TEXT + s3_target_toml(
        moto, bucket, concurrency=1, retention_days=retention_days, multipart_threshold_mib=5, part_size_mib=5))
    job = root / "jobs" / "pacs.toml"
    job.write_text(job.read_text().replace('targets = ["offline"]', 'targets = ["vault"]'))
    (root / "archive" / "noise.bin").write_bytes(os.urandom(S3_NOISE_BYTES))
    config = load_config(config.path)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    return config


def _keys(config: Config) -> set[str]:
    client = connect("vault", config.target("vault"), config.resolve).client
    listed = client.list_objects_v2(Bucket=config.target("vault").bucket, MaxKeys=1000)
    return {o["Key"] for o in listed.get("Contents", [])}


def _extended(config: Config) -> int:
    """Objects whose lock a run has moved later, as the run records them one by one."""
    try:
        with sqlite3.connect(f"file:{config.catalog_path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM s3_objects WHERE extended IS NOT NULL").fetchone()[0])
    except sqlite3.OperationalError:
        return 0       # busy: the run is writing


def _after_a_killed_s3_run(config: Config, backupctl: int) -> None:
    after = cli(config, "backup", "run", "pacs")
    assert after.returncode == 0, after.stderr
    assert _runs_of(config, backupctl) == {"backup": "success", "replicate:vault": "interrupted"}
    verify = cli(config, "verify", "--level", "repo")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert _keys(config) == {f.rel for f in list_repository(config.staging_repository)}
    audit = cli(config, "s3", "audit", "vault")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _multipart_uploads(config: Config, client: Any) -> list[dict]:
    return list(client.list_multipart_uploads(Bucket=config.target("vault").bucket).get("Uploads", []))


def _parts_to_go(config: Config, client: Any) -> bool:
    """A multipart upload with one part stored or more and at least one to go: a kill now lands in the
    middle of the file."""
    bucket = config.target("vault").bucket
    for upload in _multipart_uploads(config, client):
        size = (config.staging_repository / upload["Key"]).stat().st_size
        try:
            parts = len(client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        .get("Parts", []))
        except client.exceptions.NoSuchUpload:
            continue        # completed meanwhile
        if parts >= 1 and parts * PART_BYTES < size:
            return True
    return False


def test_kill_9_during_s3_upload_then_the_next_run_completes_the_copy(tmp_path: Path, moto: Engine) -> None:
    """The mark: a multipart upload half-way (a pack with parts stored and parts to go). An unfinished
    multipart upload holds no version, yet the provider keeps (and bills) its parts until it is aborted: the
    next run aborts it."""
    config = _s3_site(tmp_path, moto)
    client = connect("vault", config.target("vault"), config.resolve).client
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    backupctl = _kill_at(tmp_path / "killed-run.log", _argv(config, "backup", "run", "pacs"), env,
                         lambda _pid: _parts_to_go(config, client), "a multipart upload half-way")
    staged = list_repository(config.staging_repository)
    assert len(_keys(config)) < len(staged), "the bucket is part-filled (else this test proves nothing)"
    assert _multipart_uploads(config, client), "the killed run left its multipart upload (else this proves nothing)"
    _after_a_killed_s3_run(config, backupctl)
    assert _multipart_uploads(config, client) == []


def test_kill_9_during_s3_lock_extension_then_the_next_run_extends_the_rest(tmp_path: Path, moto: Engine) -> None:
    """A longer retention makes the next run extend the lock of every object already in the bucket. The mark:
    the first extension recorded in the catalog."""
    config = _s3_site(tmp_path, moto)
    first = cli(config, "backup", "run", "pacs")
    assert first.returncode == 0, first.stderr
    config.path.write_text(config.path.read_text().replace("retention_days = 1", "retention_days = 30"))
    config = load_config(config.path)
    stored = len(_keys(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    backupctl = _kill_at(tmp_path / "killed-run.log", _argv(config, "backup", "run", "pacs"), env,
                         lambda _pid: _extended(config) > 0, "the first lock extension")
    assert 0 < _extended(config) < stored, "some locks were extended, not all (else this test proves nothing)"
    _after_a_killed_s3_run(config, backupctl)
    assert _extended(config) == stored
    client = connect("vault", config.target("vault"), config.resolve).client
    required = datetime.now(UTC) + timedelta(days=29)
    for key in _keys(config):
        head = client.head_object(Bucket=config.target("vault").bucket, Key=key)
        assert head["ObjectLockRetainUntilDate"] > required, key


# Orthanc stopped for the copy ----------------------------------------------------------------------------


@pytest.mark.orthanc
@pytest.mark.parametrize("recovery", ["backup run", "pacs check"])
def test_kill_9_while_orthanc_is_stopped_for_the_copy_and_the_next_command_starts_it(tmp_path: Path,
                                                                                     recovery: str) -> None:
    """The mark: the Orthanc pid gone. A large extra `index*` file (copied while Orthanc is stopped, like its
    SQLite companions) keeps it stopped long enough to be seen so; Orthanc ignores it. The next run of the
    job, or `pacs check` of it, starts the Orthanc the killed run stopped."""
    config = make_installation(tmp_path)
    pacs = LivePacs(tmp_path / "pacs").setup()
    pacs.start()
    try:
        assert pacs.storescu(tmp_path / "archive").ok
        with open(pacs.storage / "index.bulk", "wb") as fh:
            fh.truncate(INDEX_BULK_BYTES)
        (tmp_path / "jobs" / "pacs.toml").write_text(pacs.job_toml())
        config = load_config(config.path)
        running = pacs.pid()
        assert running is not None
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        backupctl = _kill_at(tmp_path / "killed-run.log", _argv(config, "backup", "run", "pacs", "--no-replicate"),
                             env, lambda _pid: not pid_running(running), "Orthanc stopped for the copy")
        assert pacs.pid() is None, "the killed run left Orthanc stopped (else this test proves nothing)"

        (pacs.storage / "index.bulk").unlink()      # the next run need not copy it again
        if recovery == "pacs check":
            checked = cli(config, "pacs", "check", "pacs")
            assert checked.returncode == 0, checked.stderr
            assert "left stopped by an interrupted run" in checked.stderr
            assert pacs.pid() is not None
        after = cli(config, "backup", "run", "pacs", "--no-replicate")
        assert after.returncode == 0, after.stderr
        assert ("left stopped by an interrupted run" in after.stderr) == (recovery == "backup run")
        assert pacs.pid() is not None
        assert pacs.client().counts()["instances"] == len(list((tmp_path / "archive").rglob("*.dcm")))
        assert _runs_of(config, backupctl) == {"backup": "interrupted"}
        verify = cli(config, "verify", "--level", "repo")
        assert verify.returncode == 0, verify.stderr + verify.stdout
    finally:
        pacs.kill()
