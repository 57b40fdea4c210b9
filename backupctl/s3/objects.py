"""Locked uploads that are read back, and retention extension of existing versions.

The server's acknowledgement is never trusted: after each PUT we compare the ETag with our MD5, any SHA-256
the server reports with ours, and read the lock back with HeadObject. Where the server dropped the lock
headers (Ceph RGW on multipart uploads, for instance) the lock is set afterwards with PutObjectRetention,
and the caller records that the endpoint needs it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions as bex

from backupctl.catalog.db import utcnow
from backupctl.catalog.s3 import S3Object
from backupctl.errors import IntegrityError, S3BucketNotLocked, S3LockNotHonoured
from backupctl.repofiles import HASH_CHUNK
from backupctl.s3.client import Bucket, error_code

log = logging.getLogger("backupctl.s3")

MODE_STRENGTH = {None: 0, "GOVERNANCE": 1, "COMPLIANCE": 2}


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str     # hex
    md5: str        # hex

    @property
    def sha256_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()

    @property
    def md5_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.md5)).decode()


@dataclass(frozen=True)
class Lock:
    mode: str | None
    until: datetime | None

    def holds(self, mode: str, until: datetime) -> bool:
        """At least as strong a mode and at least as late a date as required."""
        return (MODE_STRENGTH.get(self.mode, 0) >= MODE_STRENGTH[mode]
                and self.until is not None and self.until >= until)


def digest_file(path: Path) -> Digest:
    """SHA-256 and MD5 in one read."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb", buffering=0) as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digest(size, sha.hexdigest(), md5.hexdigest())


def digest_bytes(data: bytes) -> Digest:
    return Digest(len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest())


# files up to this size are read once: the bytes hashed are the bytes sent (restic packs are ~16-128 MiB)
IN_MEMORY_LIMIT = 256 * 1024 * 1024


def read_for_upload(path: Path) -> tuple[bytes | None, Digest]:
    """The file's bytes (None when too big to hold) and their digest."""
    if path.stat().st_size <= IN_MEMORY_LIMIT:
        data = path.read_bytes()
        return data, digest_bytes(data)
    return None, digest_file(path)


def lock_deadline(now: datetime, days: float) -> datetime:
    """now + days, rounded up to a whole second (servers keep seconds; rounding up never shortens)."""
    t = now + timedelta(days=days)
    return datetime.fromtimestamp(math.ceil(t.timestamp()), UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def stronger_mode(a: str | None, b: str) -> str:
    return a if a is not None and MODE_STRENGTH.get(a, 0) > MODE_STRENGTH[b] else b


def read_lock(bucket: Bucket, key: str, version_id: str) -> tuple[Lock, dict[str, Any]]:
    with bucket.call(f"HeadObject {key}"):
        try:
            head = bucket.client.head_object(Bucket=bucket.name, Key=key, VersionId=version_id,
                                             ChecksumMode="ENABLED")
        except bex.ClientError as exc:
            # the embedded server (moto) answers a HEAD of a version with a bare 400 once versioning is
            # suspended, where AWS answers; a GET of the version carries the same headers
            if error_code(exc) not in ("400", "BadRequest"):
                raise
            head = bucket.client.get_object(Bucket=bucket.name, Key=key, VersionId=version_id,
                                            ChecksumMode="ENABLED")
            head.pop("Body").close()
    until = head.get("ObjectLockRetainUntilDate")
    return Lock(head.get("ObjectLockMode"), until.astimezone(UTC) if until else None), head


def set_retention(bucket: Bucket, key: str, version_id: str, mode: str, until: datetime) -> Lock:
    """PutObjectRetention on one version, then read it back. Never shortens: callers pass a later date."""
    with bucket.call(f"PutObjectRetention {key}"):
        bucket.client.put_object_retention(Bucket=bucket.name, Key=key, VersionId=version_id,
                                           Retention={"Mode": mode, "RetainUntilDate": until})
    lock, _ = read_lock(bucket, key, version_id)
    if not lock.holds(mode, until):
        raise S3LockNotHonoured(
            f"{bucket.endpoint} accepted PutObjectRetention on {key} but reports {lock.mode} "
            f"until {lock.until}",
            hint="the endpoint does not enforce Object Lock; run `backupctl s3 probe`")
    return lock


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _check_stored(bucket: Bucket, key: str, digest: Digest, etag: str, head: dict[str, Any]) -> None:
    if int(head.get("ContentLength", -1)) != digest.size:
        raise IntegrityError(f"{bucket.endpoint} stored {head.get('ContentLength')} bytes for {key}, "
                             f"{digest.size} were sent",
                             hint="retry the replication; a new version is uploaded")
    if etag != _etag(head.get("ETag")):
        raise IntegrityError(f"{key}: the version read back has another ETag than the upload answered")
    reported = head.get("ChecksumSHA256")
    if reported and "-" not in reported and reported != digest.sha256_b64:
        raise IntegrityError(f"{bucket.endpoint} reports another SHA-256 for {key} than was sent",
                             hint="retry the replication; a new version is uploaded")


def _put_single(bucket: Bucket, key: str, path: Path, digest: Digest, mode: str, until: datetime,
                data: bytes | None) -> dict:
    with contextlib.ExitStack() as stack, bucket.call(f"PutObject {key}"):
        body = data if data is not None else stack.enter_context(open(path, "rb"))
        return bucket.client.put_object(
            Bucket=bucket.name, Key=key, Body=body, ContentLength=digest.size,
            ContentMD5=digest.md5_b64, ChecksumAlgorithm="SHA256", ChecksumSHA256=digest.sha256_b64,
            ObjectLockMode=mode, ObjectLockRetainUntilDate=until)


def _put_multipart(bucket: Bucket, key: str, path: Path, part_size: int, mode: str,
                   until: datetime) -> tuple[dict, str]:
    """Multipart upload with a Content-MD5 per part; returns the answer and the expected multipart ETag."""
    client = bucket.client
    with bucket.call(f"CreateMultipartUpload {key}"):
        upload_id = client.create_multipart_upload(Bucket=bucket.name, Key=key, ObjectLockMode=mode,
                                                   ObjectLockRetainUntilDate=until)["UploadId"]
    parts, md5s = [], []
    try:
        with open(path, "rb") as fh:
            for number in range(1, 10_001):
                chunk = fh.read(part_size)
                if not chunk and number > 1:
                    break
                md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                with bucket.call(f"UploadPart {key}"):
                    answer = client.upload_part(Bucket=bucket.name, Key=key, UploadId=upload_id,
                                                PartNumber=number, Body=chunk,
                                                ContentMD5=base64.b64encode(md5).decode())
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                md5s.append(md5)
        with bucket.call(f"CompleteMultipartUpload {key}"):
            done = client.complete_multipart_upload(Bucket=bucket.name, Key=key, UploadId=upload_id,
                                                    MultipartUpload={"Parts": parts})
    except BaseException:
        # an unfinished upload holds no version; if the abort fails too, a lifecycle rule cleans it
        with contextlib.suppress(bex.BotoCoreError, bex.ClientError):
            client.abort_multipart_upload(Bucket=bucket.name, Key=key, UploadId=upload_id)
        raise
    expected = f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"
    return done, expected


def abort_stale_uploads(bucket: Bucket, rels: set[str], before: datetime) -> int:
    """Abort the unfinished multipart uploads of `rels` begun before `before`: those of a run killed
    mid-file (`_put_multipart` aborts its own on any error it lives through). They hold no version, yet the
    provider keeps and bills their parts until they are aborted. Returns how many were aborted; a failure is
    logged, not raised: the leftovers cost money, not data."""
    aborted = 0
    try:
        pages = bucket.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket.name,
                                                                             Prefix=bucket.prefix)
        for page in pages:
            for upload in page.get("Uploads", []):
                if bucket.rel(upload["Key"]) in rels and upload["Initiated"] < before:
                    bucket.client.abort_multipart_upload(Bucket=bucket.name, Key=upload["Key"],
                                                         UploadId=upload["UploadId"])
                    aborted += 1
    except (bex.BotoCoreError, bex.ClientError) as exc:
        log.warning("%s: unfinished multipart uploads of an interrupted run not aborted: %s", bucket.location, exc)
    return aborted


def upload_locked(bucket: Bucket, rel: str, path: Path, digest: Digest, mode: str, until: datetime,
                  required: datetime, *, multipart_threshold: int, part_size: int,
                  data: bytes | None = None) -> S3Object:
    """Upload one file as a new locked version and prove it: bytes, ETag and lock read back."""
    key = bucket.key(rel)
    if digest.size > multipart_threshold:
        answer, expected_etag = _put_multipart(bucket, key, path, part_size, mode, until)
    else:
        answer, expected_etag = _put_single(bucket, key, path, digest, mode, until, data), digest.md5
    version_id = answer.get("VersionId")
    if not version_id or version_id == "null":
        raise S3BucketNotLocked(f"bucket '{bucket.name}' did not version {key}",
                                hint="versioning is off: use a bucket made by `backupctl target init`")
    lock, head = read_lock(bucket, key, version_id)
    # some servers (moto, RGW) answer CompleteMultipartUpload without an ETag: then the HEAD's counts
    etag = _etag(answer.get("ETag")) or _etag(head.get("ETag"))
    if etag != expected_etag:
        raise IntegrityError(f"{bucket.endpoint} stored {key} with ETag {etag or '(none)'}, expected "
                             f"{expected_etag}", hint="bytes were damaged in transit; retry the replication")
    _check_stored(bucket, key, digest, etag, head)
    # the server may have dropped (or shortened) the lock headers: then the lock is set explicitly
    return _locked_record(bucket, rel, version_id, digest, etag, lock, mode, until, required, hold=until)


def adopt_existing(bucket: Bucket, rel: str, version_id: str, digest: Digest, etag: str, mode: str,
                   until: datetime, required: datetime) -> S3Object | None:
    """A version already in the bucket but not in the catalog (a run killed after its PUT): take it over when
    its bytes are provably ours; lock it as required. None when it is not ours (upload a new version)."""
    if etag != digest.md5:
        return None
    key = bucket.key(rel)
    lock, head = read_lock(bucket, key, version_id)
    try:
        _check_stored(bucket, key, digest, etag, head)
    except IntegrityError:
        return None
    return _locked_record(bucket, rel, version_id, digest, etag, lock, mode, until, required, hold=required)


def _locked_record(bucket: Bucket, rel: str, version_id: str, digest: Digest, etag: str, lock: Lock, mode: str,
                   until: datetime, required: datetime, *, hold: datetime) -> S3Object:
    """The catalog record of a stored version, after making sure it is locked in `mode` until `hold` at least
    (set to `until` with PutObjectRetention, and read back, when the server's lock falls short)."""
    fixed = False
    if not lock.holds(mode, hold):
        lock = set_retention(bucket, bucket.key(rel), version_id, stronger_mode(lock.mode, mode), until)
        fixed = True
    assert lock.until is not None
    return S3Object(key=rel, version_id=version_id, size=digest.size, sha256=digest.sha256, md5=etag,
                    lock_mode=lock.mode or mode, retain_until=iso(lock.until), required_until=iso(required),
                    uploaded=utcnow(), lock_fixed=fixed)


def extend_lock(bucket: Bucket, obj: S3Object, mode: str, until: datetime, required: datetime) -> S3Object:
    """Move the lock of a recorded version later (never earlier) and record what the server now says."""
    current = parse_iso(obj.retain_until)
    target_until = max(current, until)
    lock = set_retention(bucket, bucket.key(obj.key), obj.version_id, stronger_mode(obj.lock_mode, mode),
                         target_until)
    assert lock.until is not None
    return replace(obj, retain_until=iso(lock.until), required_until=iso(required), extended=utcnow(),
                   lock_mode=lock.mode or mode)
