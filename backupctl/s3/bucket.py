"""Creating a bucket with Object Lock, and refusing a bucket where backups could be deleted."""

from __future__ import annotations

from typing import Literal

import botocore.exceptions as bex

from backupctl.errors import S3BucketNotLocked, S3Error
from backupctl.s3.client import Bucket, error_code, translate_errors

NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound",
                 "NotImplemented", "InvalidRequest", "MethodNotAllowed"}


def check_bucket(bucket: Bucket, *, reading: bool = False) -> str:
    """The bucket exists, versioning is Enabled and Object Lock is on; otherwise one clear error. Returns the
    versioning status. `reading` (audit, recovery) accepts versioning Suspended: the versions written before
    stay addressable by their ids, and an attacker who suspended versioning must not stop the audit that
    reports it, nor the recovery from those versions."""
    with bucket.call("GetBucketVersioning"):
        status = bucket.client.get_bucket_versioning(Bucket=bucket.name).get("Status") or "never enabled"
    try:
        with translate_errors("GetObjectLockConfiguration", bucket.endpoint, bucket.name):
            try:
                conf = bucket.client.get_object_lock_configuration(Bucket=bucket.name)
            except bex.ClientError as exc:
                if error_code(exc) in NO_LOCK_CODES:
                    conf = {}
                else:
                    raise
    except S3Error as exc:
        raise S3BucketNotLocked(f"cannot read the Object Lock configuration of bucket '{bucket.name}' at "
                                f"{bucket.endpoint}: {exc.message}",
                                hint="the endpoint may not support Object Lock") from exc
    enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    if not enabled:
        raise S3BucketNotLocked(
            f"bucket '{bucket.name}' at {bucket.endpoint} has no Object Lock: backups there could be deleted",
            hint="Object Lock can only be enabled when a bucket is created: use a new bucket name and "
                 "`backupctl target init`")
    if status != "Enabled" and not (reading and status == "Suspended"):
        raise S3BucketNotLocked(
            f"bucket '{bucket.name}' at {bucket.endpoint} has versioning {status}, not Enabled",
            hint="enable versioning on the bucket (Object Lock needs it)")
    return status


def bucket_exists(bucket: Bucket) -> bool:
    # GetBucketVersioning rather than HeadBucket: a HEAD answer has no body, so no error code to report
    with bucket.call("GetBucketVersioning"):
        try:
            bucket.client.get_bucket_versioning(Bucket=bucket.name)
        except bex.ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise
    return True


def init_bucket(bucket: Bucket) -> Literal["created", "exists"]:
    """Create the bucket with Object Lock (versioning on), or check the existing one."""
    kwargs: dict = {"Bucket": bucket.name, "ObjectLockEnabledForBucket": True}
    if bucket.cfg.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": bucket.cfg.region}
    if bucket_exists(bucket):
        # never "create" an existing bucket: some servers (moto) would then turn Object Lock on for it
        check_bucket(bucket)
        return "exists"
    outcome: Literal["created", "exists"] = "created"
    with bucket.call("CreateBucket"):
        try:
            bucket.client.create_bucket(**kwargs)
        except bex.ClientError as exc:
            code = error_code(exc)
            if code == "BucketAlreadyExists":
                raise S3Error(f"bucket name '{bucket.name}' is taken by another account at {bucket.endpoint}",
                              hint="choose another bucket name") from None
            if code != "BucketAlreadyOwnedByYou":
                raise
            outcome = "exists"
    check_bucket(bucket)
    return outcome
