"""The measurements, one small function each, registered by name.

A is always backupctl as an operator runs it (the CLI in a new process, start-up included) unless the
measurement is about a library function; B is the tool it drives, or the hardware bar, on the same data
in the same run. Targets are those of issue 8.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.config import Config, load_config
from backupctl.dicom.parse import decode_pixels, header_facts
from backupctl.manifest import HEAD_BYTES, BuildStats, build_manifest
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository, sha256_file
from backupctl.secrets import write_private_file
from backupctl.signing import SigningKey, generate_key
from backupctl.targets.media import init_medium
from benchmarks.context import Context
from benchmarks.harness import (
    BenchError,
    Completed,
    Result,
    Run,
    Side,
    Target,
    interleave,
    measurement,
    remove_tree,
    run_command,
    time_call,
)
from benchmarks.workload import (
    CONFIG_TEXT,
    JOB,
    MEDIA_LABEL,
    MEDIA_TARGET,
    Installation,
    RawRepo,
    change_files,
    fresh_installation,
    fresh_raw_repo,
)

BENCH_ROOT = Path(__file__).resolve().parent.parent   # where `python -m benchmarks...` finds the package
INCREMENTAL_FRACTION = 0.001              # 0.1 % of the files change between two backups


def not_on_main(module: str, branch: str) -> str | None:
    """Why a measurement cannot run yet: its feature's module is not on main."""
    if importlib.util.find_spec(module) is None:
        return f"{module} (branch {branch}) is not on main yet"
    return None


def tree_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(root) for n in names)


# the two sides of a backup ------------------------------------------------------------------------------


def backupctl_backup(inst: Installation) -> Completed:
    return run_command(inst.cli("backup", "run", JOB, "--no-replicate", "--json"), env=inst.env())


def restic_backup(repo: RawRepo, source: Path) -> Completed:
    return run_command(repo.argv("backup", "--json", str(source)), env=repo.env())


def restic_snapshot_id(done: Completed) -> str:
    """The snapshot id from `restic backup --json` (its last line is the summary)."""
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{") and '"summary"' in line:
            return json.loads(line)["snapshot_id"]
    raise RuntimeError("restic backup printed no summary")


@dataclass(frozen=True)
class BackedUp:
    """An installation and a raw repository, each holding a full snapshot of the run's source."""

    inst: Installation
    repo: RawRepo
    snapshot_a: str
    snapshot_b: str


def backed_up(ctx: Context) -> BackedUp:
    """Left by `backup_full`; built here (untimed) when that measurement did not run."""

    def make() -> BackedUp:
        inst = fresh_installation(ctx.template, ctx.workdir / "full-a", ctx.source.root)
        repo = fresh_raw_repo(ctx.template, ctx.workdir / "full-b")
        return BackedUp(inst, repo, json.loads(backupctl_backup(inst).stdout)["snapshot_id"],
                        restic_snapshot_id(restic_backup(repo, ctx.source.root)))

    return ctx.fixture("backed_up", make)


# backup ------------------------------------------------------------------------------------------------


@measurement("backup_full", about="`backupctl backup run` vs raw `restic backup`, each to a fresh repository")
def backup_full(ctx: Context) -> Result:
    pair: dict[str, object] = {}
    outputs: dict[str, str] = {}
    manifest_seconds: list[float] = []
    waited_seconds: list[float] = []

    def fresh(i: int) -> None:
        pair["inst"] = fresh_installation(ctx.template, ctx.workdir / "full-a", ctx.source.root)
        pair["repo"] = fresh_raw_repo(ctx.template, ctx.workdir / "full-b")

    def a(i: int) -> Run:
        done = backupctl_backup(pair["inst"])  # type: ignore[arg-type]
        outputs["a"] = done.stdout
        manifest = json.loads(done.stdout).get("manifest") or {}
        manifest_seconds.append(float(manifest.get("seconds") or 0.0))
        waited_seconds.append(float(manifest.get("restic_waited_seconds") or 0.0))
        return done.run

    def b(i: int) -> Run:
        done = restic_backup(pair["repo"], ctx.source.root)  # type: ignore[arg-type]
        outputs["b"] = done.stdout
        return done.run

    runs_a, runs_b = interleave(ctx.repeats, a, b, before=fresh, inputs=[ctx.source.root])
    inst: Installation = pair["inst"]  # type: ignore[assignment]
    repo: RawRepo = pair["repo"]  # type: ignore[assignment]
    summary = json.loads(outputs["a"])
    ctx.offer("backed_up", BackedUp(inst, repo, summary["snapshot_id"],
                                    restic_snapshot_id(Completed(runs_b[-1], outputs["b"]))))
    stored = tree_bytes(inst.config.staging_repository / "data")
    side_b = Side("restic backup", runs_b, bytes=ctx.source.bytes, files=len(ctx.source.files))
    with_manifest = any(manifest_seconds)
    result = Result(
        "full backup" + (" (with the manifest step)" if with_manifest else ""), "time",
        Side("backupctl backup run", runs_a, bytes=ctx.source.bytes, files=len(ctx.source.files)), side_b,
        target=Target("<=", 1.15 if with_manifest else 1.05),
        figures={"stored_bytes": stored, "stored_fraction": round(stored / ctx.source.bytes, 3)})
    if with_manifest:
        result.figures["manifest_build_median_s"] = round(statistics.median(manifest_seconds), 3)
        result.figures["restic_waited_median_s"] = round(statistics.median(waited_seconds), 3)
        # the manifest is built while restic starts, and restic waits at its start gate for the rest: A minus
        # that wait is the backup without the manifest build (its check after restic stays counted)
        without = [Run(r.seconds - w, r.cpu_seconds) for r, w in zip(runs_a, waited_seconds, strict=True)]
        result.derived["without_manifest"] = Result(
            "full backup without the manifest build (derived: A minus the time restic waited for the manifest)",
            "time", Side("backupctl backup run - wait for the manifest", without), side_b,
            target=Target("<=", 1.05))
    return result


def _incremental(ctx: Context, fraction: float | None, title: str) -> Result:
    pair = backed_up(ctx)
    changed: list[int] = []

    def change(i: int) -> None:
        if fraction is not None:
            changed.append(len(change_files(ctx.source, fraction, round_no=1000 + len(changed))))

    runs_a, runs_b = interleave(ctx.repeats, lambda i: backupctl_backup(pair.inst).run,
                                lambda i: restic_backup(pair.repo, ctx.source.root).run, before=change,
                                inputs=[ctx.source.root])
    figures = {"files_changed_per_round": changed[0]} if changed else {}
    return Result(title, "time", Side("backupctl backup run", runs_a), Side("restic backup", runs_b),
                  target=Target("<=", 1.10), figures=figures)


@measurement("backup_incremental_changed", about="incremental backup with 0.1% of the files changed")
def backup_incremental_changed(ctx: Context) -> Result:
    return _incremental(ctx, INCREMENTAL_FRACTION, "incremental backup, 0.1% of files changed")


@measurement("backup_incremental_unchanged", about="incremental backup with no file changed")
def backup_incremental_unchanged(ctx: Context) -> Result:
    return _incremental(ctx, None, "incremental backup, nothing changed")


@measurement("suspect_detection", about="incremental backup (0.1% changed) with suspect detection vs without")
def suspect_detection(ctx: Context) -> Result:
    """What ransomware detection (issue 18) adds to an incremental backup: two installations over the same
    source, one with `[suspect] enabled = false`, each backed up once untimed, then the same changes timed."""

    def make() -> tuple[Installation, Installation]:
        on = fresh_installation(ctx.template, ctx.workdir / "suspect-on", ctx.source.root)
        off = fresh_installation(ctx.template, ctx.workdir / "suspect-off", ctx.source.root)
        config = off.root / "backupctl.toml"
        config.write_text(config.read_text() + "\n[suspect]\nenabled = false\n")
        backupctl_backup(on)
        backupctl_backup(off)
        return on, off

    on, off = make()
    changed: list[int] = []

    def change(i: int) -> None:
        changed.append(len(change_files(ctx.source, INCREMENTAL_FRACTION, round_no=2000 + len(changed))))

    runs_a, runs_b = interleave(ctx.repeats, lambda i: backupctl_backup(on).run, lambda i: backupctl_backup(off).run,
                                before=change, inputs=[ctx.source.root])
    return Result("incremental backup (0.1% changed), suspect detection on vs off", "time",
                  Side("detection on", runs_a), Side("detection off", runs_b), target=Target("<=", 1.05),
                  figures={"files_changed_per_round": changed[0]})


# hashing ------------------------------------------------------------------------------------------------


@measurement("hash_repofiles", about="backupctl's SHA-256 of a file (media sync and audit) vs `openssl dgst -sha256`")
def hash_repofiles(ctx: Context) -> Result:
    files = ctx.source.files
    listing = b"\0".join(str(f).encode() for f in files) + b"\0"

    def a(i: int):
        return time_call(lambda: [sha256_file(f) for f in files])

    def b(i: int):
        return run_command(["xargs", "-0", "openssl", "dgst", "-sha256"], stdin=listing).run

    runs_a, runs_b = interleave(ctx.repeats, a, b, inputs=[ctx.source.root])
    return Result("SHA-256 of archive files", "throughput",
                  Side("repofiles.sha256_file", runs_a, bytes=ctx.source.bytes, files=len(files)),
                  Side("openssl dgst -sha256", runs_b, bytes=ctx.source.bytes, files=len(files)),
                  target=Target(">=", 0.8), per_core=True)


def signing_key(ctx: Context) -> SigningKey:
    return ctx.fixture("signing_key", lambda: generate_key(ctx.scratch("signing") / "signing.key"))


@measurement("manifest_hashing",
             about="manifest build (SHA-256 + DICOM facts, all cores) vs `openssl dgst -sha256` + a bare pydicom loop")
def manifest_hashing(ctx: Context) -> Result:
    import pydicom

    key = signing_key(ctx)
    files = ctx.source.files
    listing = b"\0".join(str(f).encode() for f in files) + b"\0"
    stats: list[BuildStats] = []

    def a(i: int) -> Run:
        # no previous manifest: every file is read, hashed and parsed, as in a first backup
        return time_call(lambda: stats.append(build_manifest(JOB, [ctx.source.root], key)[1]))

    def b(i: int) -> Run:
        # the bare tools doing the same work: openssl hashes every file, pydicom parses every header
        hashed = run_command(["xargs", "-0", "openssl", "dgst", "-sha256"], stdin=listing).run
        parsed = time_call(lambda: [pydicom.dcmread(f, stop_before_pixels=True) for f in files])
        return Run(hashed.seconds + parsed.seconds, hashed.cpu_seconds + parsed.cpu_seconds)

    runs_a, runs_b = interleave(ctx.repeats, a, b, inputs=[ctx.source.root])
    if stats[-1].hashed != len(files) or stats[-1].dicom != len(files):
        raise BenchError(f"the manifest hashed {stats[-1].hashed} and parsed {stats[-1].dicom} of {len(files)} files")
    return Result("manifest hashing (SHA-256 + DICOM header facts)", "throughput",
                  Side(f"build_manifest, {stats[-1].workers} workers", runs_a, bytes=ctx.source.bytes,
                       files=len(files)),
                  Side("openssl dgst -sha256, then pydicom.dcmread(stop_before_pixels=True)", runs_b,
                       bytes=ctx.source.bytes, files=len(files)),
                  target=Target(">=", 0.8), per_core=True,
                  notes=["A hashes and parses each file from one read; B is the bare tools doing the same two jobs "
                         "one after the other on one core (hashing alone: see hash_repofiles)"])


def read_head(path: Path) -> tuple[bytes, int]:
    with open(path, "rb", buffering=0) as fh:
        head = fh.read(HEAD_BYTES)
        return head, os.fstat(fh.fileno()).st_size


@measurement("dicom_facts", about="DICOM header facts vs a bare pydicom dcmread(stop_before_pixels=True) loop")
def dicom_facts(ctx: Context) -> Result:
    import pydicom

    files = ctx.source.files

    def facts_loop() -> None:
        for path in files:
            head, size = read_head(path)
            header_facts(head, path, whole_file=size <= len(head))

    def bare_loop() -> None:
        for path in files:
            pydicom.dcmread(path, stop_before_pixels=True)

    for path in files[:20]:  # pydicom builds its dictionaries on first use: not part of either loop
        header_facts(*read_head(path)[:1], path, whole_file=False)
        pydicom.dcmread(path, stop_before_pixels=True)
    runs_a, runs_b = interleave(ctx.repeats, lambda i: time_call(facts_loop), lambda i: time_call(bare_loop),
                                inputs=[ctx.source.root])
    return Result("DICOM header facts, one process", "throughput",
                  Side("dicom.parse.header_facts", runs_a, files=len(files)),
                  Side("pydicom.dcmread(stop_before_pixels=True)", runs_b, files=len(files)),
                  target=Target(">=", 0.8), per_core=True,
                  notes=["both in this process, one core; A reads the first 64 KiB of each file (what the manifest "
                         "reads for hashing anyway) and parses the header from memory"])


DECODE_ROUNDS = 20        # each file of a syntax is decoded this many times per timed run


def _decode_inputs() -> dict[str, list[bytes]]:
    """pydicom's own test files (real modality output, in its wheel) that both sides decode, by transfer
    syntax name."""
    import io
    from importlib.resources import files as package_files

    import pydicom

    found: dict[str, list[bytes]] = {}
    for path in sorted(Path(str(package_files("pydicom.data") / "test_files")).glob("*.dcm")):
        data = path.read_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            _ = ds.pixel_array
            if not decode_pixels(pydicom.dcmread(io.BytesIO(data))).decoded:
                continue
        except Exception:  # noqa: BLE001 - a test file pydicom cannot decode is simply not an input
            continue
        found.setdefault(ds.file_meta.TransferSyntaxUID.name, []).append(data)
    return found


def _add_runs(total: list[Run], more: list[Run]) -> list[Run]:
    """Round by round sums: the whole loop over every syntax, as if timed in one go."""
    if not total:
        return list(more)
    return [Run(x.seconds + y.seconds, x.cpu_seconds + y.cpu_seconds) for x, y in zip(total, more, strict=True)]


@measurement("dicom_decode", about="pixel decode as drills run it vs a bare pydicom pixel_array loop, per syntax")
def dicom_decode(ctx: Context) -> Result:
    import io

    import pydicom

    from backupctl.dicom.parse import silence_for_process

    silence_for_process()          # as in the drill's workers: pydicom's warnings off for the process
    inputs = _decode_inputs()

    def pair(datas: list[bytes]) -> tuple[list[Run], list[Run]]:
        def ours(rounds: int = DECODE_ROUNDS) -> None:
            for _ in range(rounds):
                for data in datas:
                    decode_pixels(pydicom.dcmread(io.BytesIO(data)))

        def bare(rounds: int = DECODE_ROUNDS) -> None:
            for _ in range(rounds):
                for data in datas:
                    _ = pydicom.dcmread(io.BytesIO(data)).pixel_array

        ours(1), bare(1)           # codec libraries load on first use: not part of either loop
        return interleave(ctx.repeats, lambda i: time_call(ours), lambda i: time_call(bare))

    derived = {}
    all_a: list[Run] = []
    all_b: list[Run] = []
    for name, datas in sorted(inputs.items()):
        runs_a, runs_b = pair(datas)
        n = len(datas) * DECODE_ROUNDS
        derived[name] = Result(f"decode, {name}", "throughput", Side("decode_pixels", runs_a, files=n),
                               Side("Dataset.pixel_array", runs_b, files=n), target=Target(">=", 0.8),
                               per_core=True)
        all_a, all_b = _add_runs(all_a, runs_a), _add_runs(all_b, runs_b)
    files = sum(len(d) for d in inputs.values()) * DECODE_ROUNDS
    return Result("DICOM pixel decode, every syntax, one process", "throughput",
                  Side("dicom.parse.decode_pixels", all_a, files=files),
                  Side("pydicom Dataset.pixel_array", all_b, files=files), target=Target(">=", 0.8),
                  per_core=True, derived=derived,
                  notes=["both read each file with dcmread first; A decodes in the stored colour space (what the "
                         "check needs), B as pydicom does by default (YCbCr converted to RGB)",
                         "inputs: pydicom's test files that both decode, " + ", ".join(
                             f"{name} {len(d)}" for name, d in sorted(inputs.items()))])


# replication --------------------------------------------------------------------------------------------


def copy_then_sync(src: Path, dest: Path, cp_only: list[float]) -> Run:
    """`cp -r`, then `sync` of the copied files: a copy on a disk about to be unplugged is only done once it
    is on the disk, and media sync fsyncs every file. `cp -r` alone is kept in `cp_only`."""
    copied = run_command(["cp", "-r", str(src), str(dest)]).run
    cp_only.append(copied.seconds)
    synced = run_command(["find", str(dest), "-type", "f", "-exec", "sync", "--", "{}", "+"]).run
    return Run(copied.seconds + synced.seconds, copied.cpu_seconds + synced.cpu_seconds)


@measurement("replicate_media", about="`backupctl media sync` to a blank disk vs `cp -r` (+ sync) of the repository")
def replicate_media(ctx: Context) -> Result:
    inst = backed_up(ctx).inst
    staging = inst.config.staging_repository
    copy_dest = ctx.workdir / "cp-copy"
    cfg = inst.config.target(MEDIA_TARGET).model_copy(update={"mount": inst.media_mount})
    repo_bytes = sum(f.size for f in list_repository(staging))
    cp_only: list[float] = []

    def blank_disks(i: int) -> None:
        shutil.rmtree(copy_dest, ignore_errors=True)
        shutil.rmtree(inst.media_mount, ignore_errors=True)
        inst.media_mount.mkdir()
        medium = init_medium(cfg, MEDIA_TARGET, MEDIA_LABEL)  # type: ignore[arg-type]
        with open_catalog(inst.config.catalog_path) as catalog:
            media_rows.register_medium(catalog, MEDIA_TARGET, medium.label, medium.media_id, medium.created)

    runs_a, runs_b = interleave(
        ctx.repeats, lambda i: run_command(inst.cli("media", "sync", MEDIA_TARGET, "--json"), env=inst.env()).run,
        lambda i: copy_then_sync(staging, copy_dest, cp_only), before=blank_disks, inputs=[staging])
    shutil.rmtree(copy_dest, ignore_errors=True)
    cp_median = statistics.median(cp_only)
    return Result("replication to offline media", "throughput",
                  Side("backupctl media sync", runs_a, bytes=repo_bytes),
                  Side("cp -r, then sync", runs_b, bytes=repo_bytes), target=Target(">=", 0.9),
                  figures={"cp_r_alone_median_s": round(cp_median, 3),
                           "ratio_vs_cp_r_alone": round(cp_median / statistics.median(r.seconds for r in runs_a), 3)},
                  notes=["media sync checks every file against its SHA-256 name and fsyncs it, so the bar is "
                         "`cp -r` followed by `sync` of the copied files; `cp -r` alone only fills the page cache"])


S3_TARGET, S3_PLAIN = "vault", "plain"
S3_TARGET_TOML = """
[targets.{name}]
type = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
retention_days = 1
concurrency = 4

[targets.{name}.credentials]
source = "file"
file = "{credentials}"
"""


def s3_requires() -> str | None:
    return (not_on_main("backupctl.targets.s3", "s3") or not_on_main("benchmarks.s3_replication", "s3"))


def configure_s3(inst: Installation, endpoint: str, credentials: Path, round_no: int) -> Config:
    """Point the installation's S3 target (and a second one, for the plain loop) at new locked buckets."""
    from backupctl.s3.bucket import init_bucket
    from backupctl.targets import make_target

    tables = "".join(S3_TARGET_TOML.format(name=name, endpoint=endpoint, bucket=f"bench-{name}-{round_no}",
                                           credentials=credentials) for name in (S3_TARGET, S3_PLAIN))
    inst.config_path.write_text(CONFIG_TEXT + tables)
    config = load_config(inst.config_path)
    for name in (S3_TARGET, S3_PLAIN):
        init_bucket(make_target(config, name).bucket)  # type: ignore[attr-defined]
    return config


def reset_moto(endpoint: str) -> None:
    """Drop every bucket: moto keeps objects in RAM, and each round uploads the whole repository twice."""
    request = urllib.request.Request(endpoint + "/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


@measurement("replicate_s3", about="`backupctl replicate` to S3 Object Lock vs a plain 4-thread boto3 upload loop",
             requires=s3_requires)
def replicate_s3(ctx: Context) -> Result:
    from backupctl.s3.server import EmbeddedS3
    from backupctl.targets import make_target
    from benchmarks.plain_s3_upload import plain_client, plain_upload
    from benchmarks.s3_replication import MOTO_IN_MEMORY, count_requests

    inst = backed_up(ctx).inst
    staging = inst.config.staging_repository
    files = list_repository(staging)
    rels = [f.rel for f in files]
    repo_bytes = sum(f.size for f in files)
    work = ctx.scratch("s3")
    credentials = work / "s3-credentials"
    write_private_file(credentials, b"[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n")
    # the plain loop finds its keys the way boto3 does, and no ~/.aws/config of this machine
    plain_env = {**inst.env(), "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                 "AWS_CONFIG_FILE": str(work / "no-aws-config")}
    current: dict[str, Config] = {}
    with EmbeddedS3(log=work / "moto.log", env=MOTO_IN_MEMORY) as server:

        def fresh_buckets(i: int) -> None:
            reset_moto(server.endpoint)
            current["config"] = configure_s3(inst, server.endpoint, credentials, i)

        def plain(i: int) -> Run:
            bucket = current["config"].target(S3_PLAIN).bucket  # type: ignore[union-attr]
            return run_command([sys.executable, "-m", "benchmarks.plain_s3_upload", "--endpoint", server.endpoint,
                                "--bucket", bucket, "--root", str(staging)],
                               env=plain_env, cwd=str(BENCH_ROOT), stdin="\n".join(rels).encode()).run

        def plain_in_process(i: int) -> float:
            """For reference: the same loop inside this process, its client made beforehand (no start-up)."""
            reset_moto(server.endpoint)
            client = plain_client(server.endpoint, aws_access_key_id="bench", aws_secret_access_key="bench")
            client.create_bucket(Bucket=f"bench-in-process-{i}", ObjectLockEnabledForBucket=True)
            return time_call(lambda: plain_upload(client, f"bench-in-process-{i}", staging, rels)).seconds

        in_process = [plain_in_process(i) for i in range(ctx.repeats)]
        runs_a, runs_b = interleave(
            ctx.repeats, lambda i: run_command(inst.cli("replicate", "--target", S3_TARGET, "--json"),
                                               env=inst.env()).run, plain, before=fresh_buckets,
            inputs=[staging])
        # a second replication with nothing new: how many requests does "nothing to do" cost?
        with open_catalog(inst.config.catalog_path) as catalog:
            target = make_target(current["config"], S3_TARGET, catalog)  # type: ignore[call-arg]
            counts = count_requests(target.bucket.client)  # type: ignore[attr-defined]
            again = target.sync(staging, files, NullProgress())
        reset_moto(server.endpoint)
    inst.config_path.write_text(CONFIG_TEXT)
    a_median = statistics.median(r.seconds for r in runs_a)
    return Result("replication to S3 Object Lock (embedded moto server)", "throughput",
                  Side("backupctl replicate --target (S3)", runs_a, bytes=repo_bytes, files=len(files)),
                  Side("boto3, 4 threads, same lock and checksum headers (a program)", runs_b, bytes=repo_bytes,
                       files=len(files)),
                  target=Target(">=", 0.9),
                  figures={"nothing_new_uploaded": again.uploaded, "nothing_new_requests": dict(counts),
                           "plain_in_process_median_s": round(statistics.median(in_process), 3),
                           "ratio_vs_plain_in_process": round(statistics.median(in_process) / a_median, 3)},
                  notes=["A also checks each file against its name, reads each lock back (HeadObject) and records "
                         "every version in the catalog; moto holds every object in memory (MOTO_IN_MEMORY), so "
                         "this is CPU, not network or disk",
                         "B is a program of its own (python -m benchmarks.plain_s3_upload: boto3's default client, "
                         "start-up included, as A's); plain_in_process is the same loop inside the runner with its "
                         "client made beforehand"])


# restore ------------------------------------------------------------------------------------------------


@measurement("restore", about="`backupctl restore` of a whole snapshot vs raw `restic restore`")
def restore(ctx: Context) -> Result:
    pair = backed_up(ctx)
    to_a, to_b = ctx.workdir / "restore-a", ctx.workdir / "restore-b"

    def empty(i: int) -> None:
        shutil.rmtree(to_a, ignore_errors=True)
        shutil.rmtree(to_b, ignore_errors=True)

    runs_a, runs_b = interleave(
        ctx.repeats,
        lambda i: run_command(pair.inst.cli("restore", pair.snapshot_a, "--to", str(to_a), "--json"),
                              env=pair.inst.env()).run,
        lambda i: run_command(pair.repo.argv("restore", pair.snapshot_b, "--target", str(to_b)),
                              env=pair.repo.env()).run,
        before=empty, inputs=[pair.inst.config.staging_repository, pair.repo.repository])
    restored = tree_bytes(to_a)
    empty(0)
    return Result("restore of a whole snapshot", "time",
                  Side("backupctl restore", runs_a, bytes=restored), Side("restic restore", runs_b, bytes=restored),
                  target=Target("<=", 1.2))


DRILL_TOML = """\
job = "{job}"
snapshot = "{snapshot}"
copy_from = "staging"
scope = "all"
depth = "{depth}"
rto_minutes = 60
"""


@measurement("restore_drill", about="restore drill of a whole snapshot vs raw `restic restore`, and its phases",
             requires=lambda: not_on_main("backupctl.actions.drill", "drills"))
def restore_drill(ctx: Context) -> Result:
    return _drill_vs_restore(ctx, "dicom", notes=[
        "the drill restores, and hashes every file against the signed manifest and parses every DICOM file "
        "fully, mostly while restic restores (the rest in its 'verify' phase); raw restic only restores"])


@measurement("restore_drill_hash", about="restore drill at depth hash (no DICOM parse) vs raw `restic restore`",
             requires=lambda: not_on_main("backupctl.actions.drill", "drills"))
def restore_drill_hash(ctx: Context) -> Result:
    return _drill_vs_restore(ctx, "hash", notes=[
        "depth hash: every file hashed against the signed manifest, no DICOM parse (the drill's cheapest "
        "depth; what the full parse costs is the difference to restore_drill)"])


def _drill_vs_restore(ctx: Context, depth: str, notes: list[str]) -> Result:
    pair = backed_up(ctx)
    inst = pair.inst
    drills = inst.config.resolve(inst.config.settings.paths.drills)
    drills.mkdir(parents=True, exist_ok=True)
    name = f"bench-{depth}"
    (drills / f"{name}.toml").write_text(DRILL_TOML.format(job=JOB, snapshot=pair.snapshot_a, depth=depth))
    to_b = ctx.workdir / "drill-restic-restore"
    phases: list[dict[str, float]] = []

    def drill(i: int) -> Run:
        done = run_command(inst.cli("drill", "run", name, "--json"), env=inst.env())
        phases.append({p["name"]: p["seconds"] for p in json.loads(done.stdout)["phases"] if p["status"] == "ok"})
        return done.run

    runs_a, runs_b = interleave(
        ctx.repeats, drill,
        lambda i: run_command(pair.repo.argv("restore", pair.snapshot_b, "--target", str(to_b)),
                              env=pair.repo.env()).run,
        before=lambda i: remove_tree(to_b), inputs=[inst.config.staging_repository, pair.repo.repository])
    remove_tree(to_b)
    side_b = Side("restic restore", runs_b, bytes=ctx.source.bytes, files=len(ctx.source.files))
    names = [n for n in phases[0] if all(n in p for p in phases)]
    result = Result(f"restore drill of a whole snapshot (scope all, depth {depth})", "time",
                    Side("backupctl drill run", runs_a, bytes=ctx.source.bytes, files=len(ctx.source.files)),
                    side_b, target=Target("<=", 1.2),
                    figures={f"phase_{n}_median_s": round(statistics.median(p[n] for p in phases), 3)
                             for n in names},
                    notes=notes)
    if "restore" in names:
        restore_only = [Run(p["restore"], 0.0) for p in phases]
        result.derived["restore_phase"] = Result(
            "the drill's restore phase (its own timing; restic with the checks it overlaps) vs raw restic restore",
            "time",
            Side("drill restore phase", restore_only), side_b, target=Target("<=", 1.2))
    return result
