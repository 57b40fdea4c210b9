"""The S3 Object Lock copy: a versioned bucket where every object is locked (WORM) until it is no longer needed.

Replication uploads what the bucket lacks, in upload order with a barrier before snapshots, each file as a
new locked version that is read back; then it makes locks outlive what they protect (see `_plan`).
The catalog records every version uploaded: audits and point-in-time recovery trust those version ids, not
whatever is current in the bucket (an attacker with the writer credential can add versions and delete
markers, but cannot remove or alter a locked version).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backupctl.catalog import Catalog, open_catalog
from backupctl.catalog import s3 as s3_rows
from backupctl.catalog.s3 import S3Object
from backupctl.config import Config, S3TargetConfig
from backupctl.errors import IntegrityError, TargetError
from backupctl.progress import Progress
from backupctl.repofiles import RepoFile
from backupctl.s3 import objects as s3obj
from backupctl.s3.bucket import check_bucket
from backupctl.s3.client import Bucket, connect
from backupctl.s3.listing import KeyVersions, list_versions
from backupctl.targets.base import Finding, SyncReport, Target

MIB = 1024 * 1024


@dataclass
class Plan:
    """What one replication run does, decided from one bucket listing and the catalog."""

    upload: list[RepoFile] = field(default_factory=list)          # not in the bucket as a recorded version
    extend: list[tuple[RepoFile, S3Object]] = field(default_factory=list)   # recorded, lock too short
    present: int = 0
    tampered: list[str] = field(default_factory=list)             # newer version / delete marker on top
    vanished: list[str] = field(default_factory=list)             # recorded version no longer listed


@dataclass
class Deadlines:
    """D = now + retention: the newest snapshot is protected until D, so everything it needs must be too.
    Data, index, keys and config get D + slack so a daily run need not extend every object every day;
    snapshot files get exactly D, so no snapshot ever outlives the lock of an object it refers to."""

    required: datetime
    slacked: datetime

    @classmethod
    def for_now(cls, cfg: S3TargetConfig, now: datetime | None = None) -> Deadlines:
        now = now or datetime.now(UTC)
        return cls(s3obj.lock_deadline(now, cfg.retention_days),
                   s3obj.lock_deadline(now, cfg.retention_days + cfg.slack_days))

    def lock_for(self, f: RepoFile) -> datetime:
        return self.required if f.kind == "snapshots" else self.slacked


class Prereads:
    """Reads and hashes the first files a run will upload while the bucket is being connected to, checked and
    listed: a file without a recorded version is uploaded (or adopted) whatever the bucket answers, so its
    bytes and digest need nothing from the server. One thread reads them in turn (hashing releases the GIL),
    so it takes the second core while the main thread imports boto3 and makes the client, and does not slow
    that down as several would. An uploader takes its file's read when it has started, and otherwise reads
    the file itself; either way it checks it against its name. What was not taken is dropped."""

    def __init__(self, staging: Path, unrecorded: list[RepoFile], count: int) -> None:
        ahead = unrecorded[:count]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="s3-read") if ahead else None
        self._reads: dict[str, Future[tuple[bytes | None, s3obj.Digest]]] = {
            f.rel: self._pool.submit(s3obj.read_for_upload, staging / f.rel) for f in ahead} if self._pool else {}

    def take(self, f: RepoFile) -> tuple[bytes | None, s3obj.Digest] | None:
        read = self._reads.pop(f.rel, None)
        if read is None or read.cancel():    # not started: reading it here is sooner than waiting in line
            return None
        return read.result()

    def __enter__(self) -> Prereads:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._reads.clear()


class S3Target(Target):
    kind = "s3"

    def __init__(self, name: str, cfg: S3TargetConfig, config: Config, catalog: Catalog | None = None) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.config = config
        self._catalog = catalog
        self._bucket: Bucket | None = None
        self.last_extended = 0
        self.last_fixed = 0

    # plumbing -------------------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.config.catalog_path)
        return self._catalog

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = connect(self.name, self.cfg, self.config.resolve)
        return self._bucket

    @property
    def location(self) -> str:
        return f"{self.cfg.bucket}/{self.cfg.prefix}".rstrip("/")

    def recorded(self) -> dict[str, S3Object]:
        return s3_rows.live_objects(self.catalog, self.name, self.location)

    # Target ---------------------------------------------------------------------------------------------

    def prepare(self, reading: bool = False) -> str:
        """Check the bucket; `reading` (audit, recovery) accepts versioning Suspended (see check_bucket)."""
        check_bucket(self.bucket, reading=reading)
        s3_rows.note_endpoint(self.catalog, self.name, self.location, self.bucket.endpoint)
        return self.location

    def list_files(self) -> dict[str, int]:
        return {rel: kv.current.size for rel, kv in list_versions(self.bucket).items() if kv.current}

    def sync(self, staging: Path, files: list[RepoFile], progress: Progress) -> SyncReport:
        started, began = time.monotonic(), datetime.now(UTC)
        self.last_extended = self.last_fixed = 0
        recorded = self.recorded()
        with Prereads(staging, [f for f in files if f.rel not in recorded and f.kind != "snapshots"],
                      self.cfg.concurrency) as prereads:
            location = self.prepare()
            deadlines = Deadlines.for_now(self.cfg)
            listing = list_versions(self.bucket)
            self._check_same_repository(staging, listing, recorded)
            plan = self._plan(files, listing, recorded, deadlines)
            report = SyncReport(self.name, location, skipped=plan.present)
            # only of the files this run uploads itself, and begun before it: a sync running beside this one
            # (unsupported, but possible) keeps its uploads of other files
            if aborted := s3obj.abort_stale_uploads(self.bucket, {f.rel for f in plan.upload}, began):
                report.notes.append(f"aborted {aborted} unfinished multipart upload(s) of an interrupted run")
            # data, index, keys, config first; snapshots only once all of that is uploaded and locked long enough
            for phase in (lambda f: f.kind != "snapshots", lambda f: f.kind == "snapshots"):
                uploads = [f for f in plan.upload if phase(f)]
                extends = [(f, o) for f, o in plan.extend if phase(f)]
                self._run_phase(staging, uploads, extends, listing, deadlines, progress, report, prereads)
        report.notes += self._notes(plan, deadlines)
        report.seconds = time.monotonic() - started
        return report

    def audit(self, expected: list[RepoFile], progress: Progress) -> list[Finding]:
        from backupctl.s3.audit import audit_target

        return audit_target(self, expected, progress).findings

    def local_repository(self, scratch: Path) -> Path:
        """A restic repository rebuilt under `scratch` from the versions the catalog recorded (never from
        whatever is current in the bucket, which an attacker may have overwritten). With no record at all
        (the backup host and its catalog were lost) it takes the current versions, each still checked
        against its name, falling back to older versions where the current one is damaged."""
        from backupctl.s3.recover import recover

        dest = scratch / f"s3-{self.name}"
        as_of = None if self.recorded() else datetime.now(UTC)
        outcome = recover(self, dest, as_of=as_of)
        if not outcome.ok:
            raise TargetError(f"the S3 copy {self.location} could not be rebuilt completely: "
                              f"{len(outcome.skipped)} files skipped (first: {outcome.skipped[0]})",
                              hint=f"run `backupctl s3 audit {self.name}` and `backupctl s3 recover --as-of`")
        return dest

    # planning --------------------------------------------------------------------------------------------

    def _check_same_repository(self, staging: Path, listing: dict[str, KeyVersions],
                               recorded: dict[str, S3Object]) -> None:
        """Never mix two restic repositories under one prefix."""
        if not (staging / "config").is_file():
            raise TargetError(f"{staging} is not a restic repository (no config file)",
                              hint="run `backupctl init`, or fix [staging] repository")
        digest = s3obj.digest_file(staging / "config")
        mine = recorded.get("config")
        theirs = listing.get("config")
        if mine is not None and mine.sha256 != digest.sha256:
            raise TargetError(f"{self.location} holds a different restic repository than staging",
                              hint="give this staging repository its own bucket or prefix")
        if mine is None and theirs is not None and theirs.current and theirs.current.etag != digest.md5:
            raise TargetError(f"{self.location} already holds another restic repository's config",
                              hint="give this staging repository its own bucket or prefix")

    def _plan(self, files: list[RepoFile], listing: dict[str, KeyVersions], recorded: dict[str, S3Object],
              deadlines: Deadlines) -> Plan:
        plan = Plan()
        for f in files:
            rec, kv = recorded.get(f.rel), listing.get(f.rel)
            held = kv.get(rec.version_id) if (rec and kv) else None
            if rec is None or held is None or held.size != f.size:
                if rec is not None:
                    plan.vanished.append(f.rel)
                plan.upload.append(f)
                continue
            plan.present += 1
            if kv is not None and kv.latest is not None and kv.latest.version_id != rec.version_id:
                plan.tampered.append(f.rel)
            if s3obj.parse_iso(rec.retain_until) < deadlines.required:
                plan.extend.append((f, rec))
        return plan

    # running ---------------------------------------------------------------------------------------------

    def _run_phase(self, staging: Path, uploads: list[RepoFile], extends: list[tuple[RepoFile, S3Object]],
                   listing: dict[str, KeyVersions], deadlines: Deadlines, progress: Progress,
                   report: SyncReport, prereads: Prereads) -> None:
        if not uploads and not extends:
            return
        work: list[tuple[Callable[[], S3Object], int, str]] = []
        for f in uploads:
            work.append((self._uploader(staging, f, listing.get(f.rel), deadlines, prereads), f.size, "upload"))
        for f, rec in extends:
            work.append((self._extender(f, rec, deadlines), 0, "extend"))
        total = sum(size for _, size, _ in work) or len(work)
        with progress.task(f"s3 {self.name}", total=total, unit="B" if uploads else "") as task, \
                ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix=f"s3-{self.name}") as pool:
            futures: dict[Future[S3Object], tuple[int, str]] = {
                pool.submit(fn): (size, what) for fn, size, what in work}
            try:
                self._collect(futures, task, report, bytes_total=bool(uploads))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _collect(self, futures: dict[Future[S3Object], tuple[int, str]], task, report: SyncReport,  # noqa: ANN001
                 bytes_total: bool) -> None:
        """Record each version as soon as its upload (or extension) is proven, while the others run: a kill
        then loses at most the ones in flight (the next run adopts them), and progress moves as files land.
        On the first failure, what has not started is cancelled; what finishes anyway is still recorded."""
        pending = set(futures)
        first_error: BaseException | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            proven: list[tuple[S3Object, str]] = []
            progressed = 0
            for fut in done:
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if first_error is None:
                        first_error = exc
                        for other in pending:
                            other.cancel()
                    continue
                size, what = futures[fut]
                proven.append((fut.result(), what))
                progressed += size if bytes_total else 1
            self._record(proven, report)
            task.advance(progressed)
        if first_error is not None:
            raise first_error

    def _record(self, proven: list[tuple[S3Object, str]], report: SyncReport) -> None:
        """One catalog transaction per kind for the versions proven since the last wake-up."""
        uploaded = [obj for obj, what in proven if what == "upload"]
        extended = [obj for obj, what in proven if what != "upload"]
        if uploaded:
            s3_rows.record_objects(self.catalog, self.name, self.location, uploaded)
            report.uploaded += len(uploaded)
            report.uploaded_bytes += sum(obj.size for obj in uploaded)
        if extended:
            s3_rows.record_retention(self.catalog, self.name, self.location, extended)
            self.last_extended += len(extended)
        fixed = sum(1 for obj, _ in proven if obj.lock_fixed)
        if fixed:
            self.last_fixed += fixed
            s3_rows.note_endpoint(self.catalog, self.name, self.location, self.bucket.endpoint,
                                  drops_lock_headers=True)

    def _uploader(self, staging: Path, f: RepoFile, kv: KeyVersions | None, deadlines: Deadlines,
                  prereads: Prereads) -> Callable[[], S3Object]:
        def run() -> S3Object:
            path = staging / f.rel
            data, digest = prereads.take(f) or s3obj.read_for_upload(path)
            if f.named_by_hash and digest.sha256 != f.name:
                raise IntegrityError(f"staging file {path} does not match its name (SHA-256 "
                                     f"{digest.sha256[:12]}…); not uploaded",
                                     hint="the staging repository is damaged: run `restic check`")
            until = deadlines.lock_for(f)
            current = kv.current if kv else None
            if current is not None and current.size == digest.size:
                # uploaded by a run that was killed before it could record it: adopt it if it is ours
                adopted = s3obj.adopt_existing(self.bucket, f.rel, current.version_id, digest, current.etag,
                                               self.cfg.lock_mode, until, deadlines.required)
                if adopted is not None:
                    return adopted
            return s3obj.upload_locked(self.bucket, f.rel, path, digest, self.cfg.lock_mode, until,
                                       deadlines.required,
                                       multipart_threshold=self.cfg.multipart_threshold_mib * MIB,
                                       part_size=self.cfg.part_size_mib * MIB, data=data)
        return run

    def _extender(self, f: RepoFile, rec: S3Object, deadlines: Deadlines) -> Callable[[], S3Object]:
        def run() -> S3Object:
            return s3obj.extend_lock(self.bucket, rec, self.cfg.lock_mode, deadlines.lock_for(f),
                                     deadlines.required)
        return run

    def _notes(self, plan: Plan, deadlines: Deadlines) -> list[str]:
        notes: list[str] = []
        if plan.extend:
            notes.append(f"extended the lock of {len(plan.extend)} older objects still needed by the newest "
                         f"snapshot to at least {deadlines.required.isoformat()}")
        if self.last_fixed:
            notes.append(f"the endpoint dropped the lock headers of {self.last_fixed} uploads; their lock was "
                         "set with PutObjectRetention and read back")
        if plan.tampered:
            notes.append(f"{len(plan.tampered)} keys have a newer version or a delete marker over the recorded "
                         f"version (first: {plan.tampered[0]}); run `backupctl s3 audit {self.name}`")
        if plan.vanished:
            notes.append(f"{len(plan.vanished)} recorded versions were no longer listed and were uploaded again "
                         f"(first: {plan.vanished[0]})")
        return notes
