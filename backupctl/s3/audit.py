"""`s3 audit`: read back every object version the catalog recorded and look for signs of an attack.

For each recorded version: still there, same size, same SHA-256 (the server's ChecksumSHA256 where it keeps
one, otherwise by reading the bytes), locked in the configured mode until at least what policy required.
Everything else under the prefix is unexpected: keys nobody uploaded, and newer versions or delete markers
over recorded versions (what an attacker holding the writer credential can do, since locks stop the rest).

The bucket itself is audited too: versioning suspended (recorded versions stay addressable by id, so the
audit goes on and reports it with everything else), lifecycle rules that could expire or hide versions, a
bucket policy that denies reading versions or allows anyone to delete them, and any change of the lifecycle
rules or the policy since the last audit (their digests are kept under `<state>/s3-audit/`).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from backupctl.catalog import s3 as s3_rows
from backupctl.catalog.db import utcnow
from backupctl.catalog.s3 import S3Object
from backupctl.errors import BackupctlError
from backupctl.fsutil import atomic_write_text
from backupctl.progress import Progress
from backupctl.repofiles import HASH_CHUNK, RepoFile
from backupctl.s3.client import Bucket, error_code
from backupctl.s3.listing import KeyVersions, list_versions
from backupctl.s3.objects import Digest, read_lock
from backupctl.s3.objects import parse_iso as _parse
from backupctl.targets.base import Finding

if TYPE_CHECKING:
    from backupctl.targets.s3 import S3Target


@dataclass
class AuditReport:
    target: str
    location: str
    objects: int = 0                 # recorded versions checked
    locked: int = 0                  # of those, locked as required
    by_checksum: int = 0             # SHA-256 compared with the server's ChecksumSHA256
    by_reading: int = 0              # SHA-256 computed from the bytes read back
    by_etag: int = 0                 # --quick: only the MD5 ETag compared
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def sha256_of_version(bucket: Bucket, key: str, version_id: str) -> str:
    with bucket.call(f"GetObject {key}"):
        body = bucket.client.get_object(Bucket=bucket.name, Key=key, VersionId=version_id)["Body"]
        h = hashlib.sha256()
        for chunk in iter(lambda: body.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_version(bucket: Bucket, rec: S3Object, mode: str, quick: bool) -> tuple[list[Finding], str, bool]:
    """Findings for one recorded version, how its content was checked, and whether its lock holds."""
    key = bucket.key(rec.key)
    lock, head = read_lock(bucket, key, rec.version_id)
    findings: list[Finding] = []
    if int(head.get("ContentLength", -1)) != rec.size:
        findings.append(Finding("altered", rec.key, f"size {head.get('ContentLength')} != {rec.size}"))
    reported = head.get("ChecksumSHA256")
    if reported and "-" not in reported:
        how = "checksum"
        if reported != Digest(rec.size, rec.sha256, rec.md5).sha256_b64:
            findings.append(Finding("altered", rec.key, "server's SHA-256 differs from the recorded one"))
    elif quick:
        how = "etag"
        if head.get("ETag", "").strip('"') != rec.md5:
            findings.append(Finding("altered", rec.key, "ETag differs from the recorded MD5"))
    else:
        how = "read"
        if sha256_of_version(bucket, key, rec.version_id) != rec.sha256:
            findings.append(Finding("altered", rec.key, "SHA-256 of the bytes read back differs"))
    required = _parse(rec.required_until)
    holds = lock.holds(mode, required)
    if not holds:
        findings.append(Finding("under-locked", rec.key,
                                f"{lock.mode or 'no lock'} until {lock.until.isoformat() if lock.until else '-'}"
                                f", policy requires {mode} until {required.isoformat()}"))
    return findings, how, holds


def _unexpected(listing: dict[str, KeyVersions], recorded: dict[str, S3Object],
                ours: set[tuple[str, str]]) -> list[Finding]:
    findings: list[Finding] = []
    our_keys = {k for k, _ in ours}
    for rel, kv in sorted(listing.items()):
        rec = recorded.get(rel)
        if rec is None and rel not in our_keys:
            findings.append(Finding("unexpected", rel, f"key nobody uploaded ({len(kv.versions)} versions)"))
            continue
        latest = kv.latest
        if rec is not None and latest is not None and latest.version_id != rec.version_id:
            what = "delete marker" if latest.delete_marker else f"newer version {latest.version_id}"
            findings.append(Finding("unexpected", rel, f"{what} over the recorded version {rec.version_id}"))
        for v in kv.versions:
            if v is latest or (rel, v.version_id) in ours:
                continue
            what = "delete marker" if v.delete_marker else "version"
            findings.append(Finding("unexpected", rel, f"{what} {v.version_id} nobody recorded"))
    return findings


_READS = ("s3:*", "s3:get*", "s3:getobject", "s3:getobjectversion", "s3:list*", "s3:listbucketversions",
          "s3:listbucket")
_DESTROYS = ("s3:*", "s3:delete*", "s3:deleteobjectversion", "s3:putbucketversioning",
             "s3:putlifecycleconfiguration", "s3:bypassgovernanceretention", "s3:putbucketpolicy",
             "s3:putobjectlegalhold")


def _optional(bucket: Bucket, what: str, call: Any, missing: tuple[str, ...]) -> Any:
    """A bucket setting, or None where the bucket has none (or the server does not keep that setting)."""
    import botocore.exceptions as bex

    try:
        with bucket.call(what):
            try:
                return call(Bucket=bucket.name)
            except bex.ClientError as exc:
                if error_code(exc) in missing:
                    return None
                raise
    except BackupctlError as exc:
        return {"error": exc.one_line()}


def _actions(statement: dict[str, Any]) -> list[str]:
    raw = statement.get("Action", [])
    return [a.lower() for a in ([raw] if isinstance(raw, str) else raw)]


def _lifecycle_findings(rules: list[dict[str, Any]]) -> list[Finding]:
    found = []
    for rule in rules:
        if rule.get("Status") != "Enabled":
            continue
        name = rule.get("ID") or rule.get("Prefix") or "(unnamed)"
        if "Expiration" in rule:
            found.append(Finding("bucket", f"lifecycle {name}",
                                 f"expires current objects ({json.dumps(rule['Expiration'], default=str)}): adds "
                                 "delete markers that hide them"))
        if "NoncurrentVersionExpiration" in rule:
            found.append(Finding("bucket", f"lifecycle {name}",
                                 "expires noncurrent versions: the versions recovery needs go once unlocked"))
    return found


def _policy_findings(policy: dict[str, Any]) -> list[Finding]:
    found = []
    for i, st in enumerate(policy.get("Statement", [])):
        acts = _actions(st)
        sid = st.get("Sid") or f"#{i + 1}"
        if st.get("Effect") == "Deny" and any(a in _READS for a in acts):
            found.append(Finding("bucket", f"policy {sid}", f"denies {', '.join(acts)}: could hide versions"))
        anyone = st.get("Principal") in ("*", {"AWS": "*"})
        if st.get("Effect") == "Allow" and anyone and any(a in _DESTROYS for a in acts):
            found.append(Finding("bucket", f"policy {sid}", f"allows anyone {', '.join(acts)}"))
    return found


def _digest(value: Any) -> str | None:
    return None if value is None else hashlib.sha256(json.dumps(value, sort_keys=True, default=str)
                                                     .encode()).hexdigest()


def bucket_findings(target: S3Target) -> list[Finding]:
    """Versioning, lifecycle rules and bucket policy: what could expire or hide versions, and what changed
    since the last audit."""
    bucket = target.bucket
    found: list[Finding] = []
    with bucket.call("GetBucketVersioning"):
        status = bucket.client.get_bucket_versioning(Bucket=bucket.name).get("Status") or "never enabled"
    if status != "Enabled":
        found.append(Finding("bucket", "versioning", f"versioning is {status}: new writes replace the "
                             "current object instead of adding a version (the recorded versions stay readable)"))
    lifecycle = _optional(bucket, "GetBucketLifecycleConfiguration", bucket.client.get_bucket_lifecycle_configuration,
                          ("NoSuchLifecycleConfiguration", "NotImplemented"))
    rules = (lifecycle or {}).get("Rules", []) if "error" not in (lifecycle or {}) else []
    found += _lifecycle_findings(rules)
    raw_policy = _optional(bucket, "GetBucketPolicy", bucket.client.get_bucket_policy,
                           ("NoSuchBucketPolicy", "NotImplemented"))
    policy: dict[str, Any] | None = None
    if raw_policy and "Policy" in raw_policy:
        try:
            policy = json.loads(raw_policy["Policy"])
        except ValueError:
            found.append(Finding("bucket", "policy", "the bucket policy is not JSON"))
    found += _policy_findings(policy or {})
    now = {"lifecycle_sha256": _digest(rules or None), "policy_sha256": _digest(policy)}
    store = target.config.state_dir / "s3-audit" / f"{target.name}.json"
    try:
        before = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    if before is not None:
        for what, key in (("lifecycle rules", "lifecycle_sha256"), ("bucket policy", "policy_sha256")):
            if before.get(key) != now[key]:
                found.append(Finding("bucket", what, f"changed since the audit of {before.get('seen', '?')}"))
    atomic_write_text(store, json.dumps({**now, "seen": utcnow(), "location": target.location}) + "\n")
    return found


def audit_target(target: S3Target, expected: list[RepoFile] | None, progress: Progress, *,
                 quick: bool = False) -> AuditReport:
    bucket = target.bucket
    report = AuditReport(target.name, target.location)
    listing = list_versions(bucket)
    recorded = target.recorded()
    ours = {(o.key, o.version_id) for o in s3_rows.all_versions(target.catalog, target.name, target.location)}
    present = [rec for rel, rec in sorted(recorded.items())
               if rel in listing and listing[rel].get(rec.version_id) is not None]
    present_keys = {rec.key for rec in present}
    for rel, rec in sorted(recorded.items()):
        if rel not in present_keys:
            report.findings.append(Finding("missing", rel, f"recorded version {rec.version_id} is gone"))
    counts = {"checksum": 0, "read": 0, "etag": 0}
    with progress.task(f"audit {target.name}", total=len(present)) as task, \
            ThreadPoolExecutor(target.cfg.concurrency) as pool:
        for findings, how, holds in pool.map(lambda r: _check_version(bucket, r, target.cfg.lock_mode, quick),
                                             present):
            report.findings += findings
            report.objects += 1
            report.locked += holds
            counts[how] += 1
            task.advance()
    report.by_checksum, report.by_reading, report.by_etag = counts["checksum"], counts["read"], counts["etag"]
    report.findings += _unexpected(listing, recorded, ours)
    for f in expected or []:
        if f.rel not in recorded:
            report.findings.append(Finding("missing", f.rel, "in staging but not replicated yet"))
    report.findings += bucket_findings(target)
    order = {"bucket": -1, "missing": 0, "altered": 1, "under-locked": 2, "unexpected": 3}
    report.findings.sort(key=lambda x: (order.get(x.kind, 9), x.key))
    return report
