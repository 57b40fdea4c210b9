"""One listing of every object version under a target's prefix: what sync, audit, recover and expire read.

ListObjectVersions (not ListObjectsV2) because the version ids are the point: an attacker's overwrite is a
newer version and a delete is a delete marker, and both leave the version we recorded underneath.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from backupctl.s3.client import Bucket


@dataclass(frozen=True)
class Version:
    version_id: str
    size: int
    etag: str
    last_modified: datetime
    is_latest: bool
    delete_marker: bool = False


@dataclass
class KeyVersions:
    """All versions and delete markers of one key, newest first."""

    versions: list[Version] = field(default_factory=list)

    @property
    def latest(self) -> Version | None:
        for v in self.versions:
            if v.is_latest:
                return v
        return self.versions[0] if self.versions else None

    @property
    def current(self) -> Version | None:
        """The version a plain GET returns, or None when the key is deleted (delete marker on top)."""
        latest = self.latest
        return None if latest is None or latest.delete_marker else latest

    def get(self, version_id: str) -> Version | None:
        for v in self.versions:
            if v.version_id == version_id and not v.delete_marker:
                return v
        return None

    def as_of(self, when: datetime) -> list[Version]:
        """Versions that existed at `when`, newest first (a delete marker first means: deleted then)."""
        return [v for v in self.versions if v.last_modified <= when]


AUDIT_CHECKPOINTS = "backupctl-audit/"   # backupctl.audit.checkpoint.S3_FOLDER


def list_versions(bucket: Bucket) -> dict[str, KeyVersions]:
    """Repository-relative key -> its versions, for everything under the target's prefix."""
    found: dict[str, KeyVersions] = {}
    paginator = bucket.client.get_paginator("list_object_versions")
    with bucket.call("ListObjectVersions"):
        for page in paginator.paginate(Bucket=bucket.name, Prefix=bucket.prefix):
            for item in page.get("Versions", []):
                found.setdefault(bucket.rel(item["Key"]), KeyVersions()).versions.append(Version(
                    item["VersionId"], int(item.get("Size", 0)), item.get("ETag", "").strip('"'),
                    _utc(item["LastModified"]), bool(item.get("IsLatest"))))
            for item in page.get("DeleteMarkers", []):
                found.setdefault(bucket.rel(item["Key"]), KeyVersions()).versions.append(Version(
                    item["VersionId"], 0, "", _utc(item["LastModified"]), bool(item.get("IsLatest")),
                    delete_marker=True))
    # the audit log's signed checkpoints share the bucket (at its root); they are not repository files
    found = {k: v for k, v in found.items() if not k.startswith(AUDIT_CHECKPOINTS)}
    for kv in found.values():
        # newest first; on a tie (servers keep seconds or milliseconds) the one flagged latest wins
        kv.versions.sort(key=lambda v: (v.last_modified, v.is_latest), reverse=True)
    return found


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
