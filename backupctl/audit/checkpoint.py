"""Signed checkpoints of the audit log: (count, last hash, time), kept locally and in an Object Lock bucket.

Anyone who can write the state folder can rewrite the chain from any record on, or cut its tail; what they
cannot do is change a version locked in COMPLIANCE mode. So at the end of each run the log's count and last
hash are signed with the Ed25519 key and put into the bucket of `[audit] checkpoint_target` as a new locked
version, at `backupctl-audit/<host>/<count>-<time>.json` (outside the repository's prefix, and skipped by the
repository listing). `audit verify` holds the log against the highest count found there.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.audit.log import ChainReport, audit_dir, last_state, log_path
from backupctl.errors import BackupctlError, IntegrityError, SignatureInvalid
from backupctl.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from backupctl.config import Config
    from backupctl.s3.client import Bucket

log = logging.getLogger("backupctl.audit")
S3_FOLDER = "backupctl-audit/"
LOCAL_NAME = "checkpoint.json"
_KEY_RE = re.compile(r"/(\d{12})-[0-9TZ]+\.json$")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass
class Checkpoint:
    count: int
    last_hash: str
    time: str
    host: str
    key_id: str
    where: str = "local"               # local | s3://bucket/key?versionId=...

    @classmethod
    def from_document(cls, doc: dict[str, Any], trusted: Any, where: str) -> Checkpoint:
        """A checkpoint whose signature verifies with `trusted` (a VerifyKey); SignatureInvalid otherwise."""
        from backupctl.signing import verify_document

        body = doc.get("checkpoint")
        signature = doc.get("signature")
        if not isinstance(body, dict) or not isinstance(signature, dict):
            raise SignatureInvalid(f"audit checkpoint {where} is malformed")
        verify_document(trusted, _canonical(body), signature, f"audit checkpoint {where}")
        return cls(count=int(body["count"]), last_hash=str(body["last_hash"]), time=str(body["time"]),
                   host=str(body["host"]), key_id=str(signature.get("key_id")), where=where)


def make_document(config: Config, count: int, last_hash: str) -> dict[str, Any]:
    from backupctl.signing import load_signing_key, signature_document

    key = load_signing_key(config.signing_key)
    body = {"kind": "backupctl-audit-checkpoint", "count": count, "last_hash": last_hash,
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "host": socket.gethostname(),
            "log": str(log_path(config.state_dir))}
    return {"checkpoint": body, "signature": signature_document(key, _canonical(body))}


def s3_prefix(host: str | None = None) -> str:
    return f"{S3_FOLDER}{host or socket.gethostname()}/"


def _bucket(config: Config) -> Bucket:
    from backupctl.config import S3TargetConfig
    from backupctl.s3.client import connect

    name = config.settings.audit.checkpoint_target
    assert name is not None
    cfg = config.target(name)
    assert isinstance(cfg, S3TargetConfig)
    # checkpoints live at the bucket's root, beside (never inside) the repository's prefix
    return connect(name, cfg.model_copy(update={"prefix": ""}), config.resolve, max_attempts=2)


def write_checkpoint(config: Config) -> dict[str, Any]:
    """Sign the log's current state; keep it locally and, when configured, as a locked S3 version."""
    count, last_hash = last_state(log_path(config.state_dir))
    doc = make_document(config, count, last_hash)
    data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(audit_dir(config.state_dir) / LOCAL_NAME, data, mode=0o600)
    result: dict[str, Any] = {"count": count, "last_hash": last_hash, "local": True, "s3": None}
    if config.settings.audit.checkpoint_target is not None:
        result["s3"] = _put_s3(config, doc["checkpoint"], data)
    return result


def _put_s3(config: Config, body: dict[str, Any], data: bytes) -> dict[str, Any]:
    from backupctl.s3.objects import digest_bytes, lock_deadline, upload_locked

    bucket = _bucket(config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    key = f"{s3_prefix(body['host'])}{int(body['count']):012d}-{stamp}.json"
    until = lock_deadline(datetime.now(UTC), bucket.cfg.retention_days)
    stored = upload_locked(bucket, key, Path(key), digest_bytes(data), bucket.cfg.lock_mode, until, until,
                           multipart_threshold=bucket.cfg.multipart_threshold_mib * 1048576,
                           part_size=bucket.cfg.part_size_mib * 1048576, data=data)
    return {"bucket": bucket.name, "key": key, "version_id": stored.version_id, "lock_mode": stored.lock_mode,
            "retain_until": stored.retain_until}


def local_checkpoint(config: Config) -> dict[str, Any] | None:
    path = audit_dir(config.state_dir) / LOCAL_NAME
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"malformed": True}


@dataclass
class S3Finding:
    checkpoint: Checkpoint | None                        # the one with the highest count
    hidden: int              # versions hidden behind delete markers (someone tried to remove them)
    versions: int
    checked: list[Checkpoint] = field(default_factory=list)   # every one read (all of them with every_one)


def latest_s3_checkpoint(config: Config, *, every_one: bool = False) -> S3Finding:
    """The checkpoint with the highest count among every stored version (delete markers do not hide one);
    with `every_one`, every stored checkpoint is read and its signature checked too."""
    from backupctl.signing import load_verify_key

    bucket = _bucket(config)
    found: list[tuple[int, str, str]] = []
    hidden = 0
    with bucket.call("ListObjectVersions (audit checkpoints)"):
        paginator = bucket.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket.name, Prefix=s3_prefix()):
            hidden += sum(1 for m in page.get("DeleteMarkers", []) if m.get("IsLatest"))
            for version in page.get("Versions", []):
                match = _KEY_RE.search(version["Key"])
                if match:
                    found.append((int(match.group(1)), version["Key"], version["VersionId"]))
    if not found:
        return S3Finding(None, hidden, 0)
    found.sort()
    trusted = load_verify_key(config.signing_key)
    chosen = found if every_one else found[-1:]
    checked = [_read_checkpoint(bucket, key, version_id, trusted) for _, key, version_id in chosen]
    return S3Finding(checked[-1], hidden, len(found), checked)


def _read_checkpoint(bucket: Bucket, key: str, version_id: str, trusted: Any) -> Checkpoint:
    with bucket.call(f"GetObject {key}"):
        body = bucket.client.get_object(Bucket=bucket.name, Key=key, VersionId=version_id)["Body"].read()
    where = f"s3://{bucket.name}/{key}?versionId={version_id}"
    try:
        doc = json.loads(body)
    except ValueError:
        raise IntegrityError(f"audit checkpoint {where} is not JSON") from None
    return Checkpoint.from_document(doc, trusted, where)


def compare(chain: ChainReport, cp: Checkpoint) -> str | None:
    """What is wrong with the log against one trusted checkpoint, naming the first missing or changed record."""
    if cp.count > chain.count:
        first = chain.count + 1
        gone = f"record {first}" if first == cp.count else f"records {first} to {cp.count}"
        return (f"{gone} missing: the log was cut after record {chain.count}, but the checkpoint of "
                f"{cp.time} ({cp.where}) counts {cp.count}")
    if cp.count > 0 and chain.hashes[cp.count - 1] != cp.last_hash:
        return (f"record {cp.count} (or one before it) was rewritten: its hash differs from the checkpoint of "
                f"{cp.time} ({cp.where})")
    return None


def safe_write_checkpoint(config: Config) -> dict[str, Any] | None:
    """write_checkpoint, logging (never raising) when the key or the bucket is not there."""
    try:
        return write_checkpoint(config)
    except (BackupctlError, OSError) as exc:
        text = exc.one_line() if isinstance(exc, BackupctlError) else f"{type(exc).__name__}: {exc}"
        log.warning("audit checkpoint not written: %s", text)
        return None
