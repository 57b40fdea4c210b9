"""`s3 probe`: does this endpoint really enforce WORM? Try what an attacker would, on a scratch bucket.

The probe never touches the backup bucket. It creates `backupctl-probe-<random>` with Object Lock, writes
canary objects locked for a few seconds in each mode and tries: deleting a locked version, shortening
COMPLIANCE retention, switching COMPLIANCE to GOVERNANCE, deleting a GOVERNANCE version with and without
bypass, suspending versioning, deleting the bucket. It checks that a single PUT, a multipart upload and a
server-side copy keep their lock headers and that a wrong Content-MD5 or SHA-256 is rejected. Each is
reported as refused/kept (good) or allowed/dropped (a finding); findings that backupctl works around (it
reads every lock back and sets it again, compares ETags and checksums itself, never copies server-side)
are marked as compensated. Then it waits for the canaries' locks to run out and removes what it made.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import botocore.exceptions as bex

from backupctl.progress import NullProgress, Progress
from backupctl.s3.client import Bucket, error_code, translate_errors
from backupctl.s3.objects import lock_deadline

MIB = 1024 * 1024


@dataclass
class Check:
    name: str
    outcome: str          # refused | allowed | kept | dropped | rejected | accepted | error
    good: bool
    compensated: bool = False   # backupctl works around it (see module doc)
    detail: str = ""


@dataclass
class ProbeResult:
    endpoint: str
    bucket: str
    checks: list[Check] = field(default_factory=list)
    cleaned: bool = False
    leftover: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[str]:
        return [c.name for c in self.checks if not c.good]

    @property
    def enforced(self) -> bool:
        """No attack got through that backupctl cannot compensate for."""
        return all(c.good or c.compensated for c in self.checks)

    def as_dict(self) -> dict:
        return {"endpoint": self.endpoint, "scratch_bucket": self.bucket, "enforced": self.enforced,
                "checks": {c.name: c.outcome for c in self.checks}, "findings": self.findings,
                "compensated": [c.name for c in self.checks if not c.good and c.compensated],
                "cleaned_up": self.cleaned, "leftover": self.leftover,
                "details": [asdict(c) for c in self.checks]}

    def text(self) -> str:
        lines = [f"WORM probe of {self.endpoint} (scratch bucket {self.bucket}):"]
        for c in self.checks:
            mark = "ok     " if c.good else ("WORKAROUND" if c.compensated else "FINDING")
            lines.append(f"  {mark:<10} {c.name:<34} {c.outcome:<9} {c.detail}")
        verdict = ("enforces WORM for backupctl's use" if self.enforced
                   else "does NOT enforce WORM: an attacker with the credential could destroy backups")
        lines.append(f"verdict: {self.endpoint} {verdict}")
        lines.append("cleanup: " + ("scratch bucket removed" if self.cleaned
                                    else f"left behind: {', '.join(self.leftover) or self.bucket}"))
        return "\n".join(lines)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class _Probe:
    def __init__(self, bucket: Bucket, canary_seconds: int) -> None:
        self.client = bucket.client
        self.mode = bucket.cfg.lock_mode
        self.endpoint = bucket.endpoint
        self.name = f"backupctl-probe-{secrets.token_hex(6)}"
        self.region = bucket.cfg.region
        self.until = lock_deadline(datetime.now(UTC), canary_seconds / 86400)
        self.result = ProbeResult(self.endpoint, self.name)

    def attempt(self, name: str, action: Callable[[], object], *, compensated: bool = False,
                detail_if_allowed: str = "") -> bool:
        """Run an attack; refused is good. Returns True when the server allowed it."""
        try:
            action()
        except bex.ClientError as exc:
            self.result.checks.append(Check(name, "refused", True, detail=error_code(exc)))
            return False
        self.result.checks.append(Check(name, "allowed", False, compensated, detail_if_allowed))
        return True

    def put(self, key: str, body: bytes, mode: str | None = None, **extra: object) -> dict:
        kwargs: dict = {"Bucket": self.name, "Key": key, "Body": body,
                        "ContentMD5": _b64(hashlib.md5(body, usedforsecurity=False).digest())}
        if mode:
            kwargs.update(ObjectLockMode=mode, ObjectLockRetainUntilDate=self.until)
        kwargs.update(extra)
        return self.client.put_object(**kwargs)

    def lock_of(self, key: str, version_id: str | None) -> tuple[str | None, datetime | None]:
        extra = {"VersionId": version_id} if version_id else {}   # RGW answers CopyObject without one
        head = self.client.head_object(Bucket=self.name, Key=key, **extra)
        return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")

    def kept(self, name: str, key: str, version_id: str | None, mode: str, *, compensated: bool, note: str) -> None:
        got_mode, got_until = self.lock_of(key, version_id)
        ok = got_mode == mode and got_until is not None and got_until >= self.until
        self.result.checks.append(Check(name, "kept" if ok else "dropped", ok, compensated,
                                        "" if ok else f"{got_mode or 'no lock'}; {note}"))

    # the checks ------------------------------------------------------------------------------------------

    def run(self, progress: Progress) -> ProbeResult:
        kwargs: dict = {"Bucket": self.name, "ObjectLockEnabledForBucket": True}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.client.create_bucket(**kwargs)
        steps = [self.locks_on_put, self.attacks_on_compliance, self.attacks_on_governance,
                 self.attacks_on_bucket, self.multipart_and_copy, self.checksums]
        with progress.task("probe", total=len(steps) + 1) as task:
            try:
                for step in steps:
                    step()
                    task.advance()
            finally:
                self.cleanup()
                task.advance()
        return self.result

    def locks_on_put(self) -> None:
        self.c_vid = self.put("canary-compliance", b"compliance canary", "COMPLIANCE")["VersionId"]
        self.g_vid = self.put("canary-governance", b"governance canary", "GOVERNANCE")["VersionId"]
        self.source_vid = self.put("canary-source", b"copy source")["VersionId"]
        self.kept("single-put-keeps-lock", "canary-compliance", self.c_vid, "COMPLIANCE", compensated=True,
                  note="backupctl reads every lock back and sets it with PutObjectRetention")

    def attacks_on_compliance(self) -> None:
        key, vid = "canary-compliance", self.c_vid
        self.attempt("delete-locked-version", lambda: self.client.delete_object(
            Bucket=self.name, Key=key, VersionId=vid), detail_if_allowed="a locked backup could be deleted")
        self.attempt("shorten-compliance-retention", lambda: self.client.put_object_retention(
            Bucket=self.name, Key=key, VersionId=vid,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(seconds=1)}),
            detail_if_allowed="then delete: COMPLIANCE is not enforced")
        self.attempt("compliance-to-governance", lambda: self.client.put_object_retention(
            Bucket=self.name, Key=key, VersionId=vid,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": self.until}),
            detail_if_allowed="then delete with bypass: COMPLIANCE is not enforced")

    def attacks_on_governance(self) -> None:
        key, vid = "canary-governance", self.g_vid
        self.attempt("delete-governance-without-bypass", lambda: self.client.delete_object(
            Bucket=self.name, Key=key, VersionId=vid))
        # only a finding for targets locking in GOVERNANCE mode; COMPLIANCE locks cannot be bypassed
        self.attempt("delete-governance-with-bypass", lambda: self.client.delete_object(
            Bucket=self.name, Key=key, VersionId=vid, BypassGovernanceRetention=True),
            compensated=self.mode == "COMPLIANCE",
            detail_if_allowed="this credential may bypass GOVERNANCE locks"
                              + ("; backupctl locks in COMPLIANCE here" if self.mode == "COMPLIANCE" else
                                 ": use COMPLIANCE, or deny s3:BypassGovernanceRetention to the writer"))

    def attacks_on_bucket(self) -> None:
        suspended = self.attempt("suspend-versioning", lambda: self.client.put_bucket_versioning(
            Bucket=self.name, VersioningConfiguration={"Status": "Suspended"}),
            detail_if_allowed="new uploads would overwrite instead of adding versions")
        if suspended:
            self.client.put_bucket_versioning(Bucket=self.name, VersioningConfiguration={"Status": "Enabled"})
        self.attempt("delete-bucket", lambda: self.client.delete_bucket(Bucket=self.name),
                     detail_if_allowed="the bucket with locked objects was deleted")

    def multipart_and_copy(self) -> None:
        key = "canary-multipart"
        upload = self.client.create_multipart_upload(Bucket=self.name, Key=key, ObjectLockMode="COMPLIANCE",
                                                     ObjectLockRetainUntilDate=self.until)["UploadId"]
        parts = []
        for number, body in enumerate((b"\0" * (5 * MIB), b"tail"), start=1):
            answer = self.client.upload_part(Bucket=self.name, Key=key, UploadId=upload, PartNumber=number,
                                             Body=body, ContentMD5=_b64(hashlib.md5(body).digest()))
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        done = self.client.complete_multipart_upload(Bucket=self.name, Key=key, UploadId=upload,
                                                     MultipartUpload={"Parts": parts})
        self.kept("multipart-keeps-lock", key, done.get("VersionId"), "COMPLIANCE", compensated=True,
                  note="backupctl sets the lock with PutObjectRetention after multipart uploads")
        try:
            copy = self.client.copy_object(Bucket=self.name, Key="canary-copy", ChecksumAlgorithm="SHA256",
                                           CopySource={"Bucket": self.name, "Key": "canary-source",
                                                       "VersionId": self.source_vid},
                                           ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=self.until)
        except bex.ClientError as exc:
            self.result.checks.append(Check("copy-keeps-lock", "error", False, True,
                                            f"CopyObject with a lock failed: {error_code(exc)}"))
            return
        self.kept("copy-keeps-lock", "canary-copy", copy.get("VersionId"), "COMPLIANCE", compensated=True,
                  note="backupctl never copies server-side")

    def checksums(self) -> None:
        body = b"checksum canary"
        wrong = hashlib.md5(b"other bytes").digest()
        self._rejects("wrong-md5-rejected", lambda: self.put("canary-bad-md5", body, ContentMD5=_b64(wrong)),
                      note="backupctl compares the ETag with its own MD5 after each PUT")
        wrong_sha = _b64(hashlib.sha256(b"other bytes").digest())
        self._rejects("wrong-sha256-rejected", lambda: self.put(
            "canary-bad-sha", body, ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong_sha),
            note="backupctl compares the stored SHA-256 (or the MD5 ETag) with its own")

    def _rejects(self, name: str, action: Callable[[], object], note: str) -> None:
        try:
            action()
        except bex.ClientError as exc:
            self.result.checks.append(Check(name, "rejected", True, detail=error_code(exc)))
            return
        self.result.checks.append(Check(name, "accepted", False, True, f"damaged bytes were stored; {note}"))

    def cleanup(self, timeout: float = 120.0) -> None:
        """Wait for the canaries' locks to run out, then delete every version and the bucket."""
        deadline = time.monotonic() + timeout
        while datetime.now(UTC) <= self.until + timedelta(seconds=1) and time.monotonic() < deadline:
            time.sleep(0.2)  # the locks run out by the clock; nothing to wait on but time
        leftover: list[str] = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.name)
            for page in pages:
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    try:
                        self.client.delete_object(Bucket=self.name, Key=item["Key"], VersionId=item["VersionId"],
                                                  BypassGovernanceRetention=True)
                    except bex.ClientError:
                        leftover.append(f"{item['Key']}@{item['VersionId']}")
            for upload in self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.name, Key=upload["Key"],
                                                   UploadId=upload["UploadId"])
            if not leftover:
                self.client.delete_bucket(Bucket=self.name)
        except bex.ClientError as exc:
            if error_code(exc) != "NoSuchBucket":
                leftover.append(f"bucket {self.name} ({error_code(exc)})")
        self.result.leftover = leftover
        self.result.cleaned = not leftover


def probe(bucket: Bucket, *, canary_seconds: int = 5, progress: Progress | None = None) -> ProbeResult:
    """Probe the endpoint and credential of `bucket` (the backup bucket itself is never touched)."""
    runner = _Probe(bucket, canary_seconds)
    with translate_errors("the WORM probe", bucket.endpoint, runner.name):
        return runner.run(progress or NullProgress())
