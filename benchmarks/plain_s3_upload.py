"""The bar for S3 replication: a plain 4-thread boto3 upload loop, as someone would write it by hand.

It uploads the given files with the same lock and checksum headers backupctl sends (Object Lock mode and
retain-until, Content-MD5, SHA-256 checksum) and nothing else: no check of each file against its name, no
read-back, no catalog. It imports only boto3 and the standard library and makes its client with boto3's
defaults, so nothing backupctl does to its own client lifts the bar too.

Run as a program, it is timed like `backupctl replicate` (a new process: interpreter, imports and client
creation included). Relative paths of the files come on stdin, one a line; credentials come the way boto3
finds them (here AWS_SHARED_CREDENTIALS_FILE):

    python -m benchmarks.plain_s3_upload --endpoint URL --bucket B --root STAGING < paths
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config


def plain_client(endpoint: str, region: str = "us-east-1", **keys: str) -> Any:
    """boto3's default S3 client for a custom endpoint (path-style addressing, as any S3 besides AWS needs)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        config=Config(s3={"addressing_style": "path"}), **keys)


def plain_upload(client: Any, bucket: str, root: Path, rels: list[str], threads: int = 4,
                 lock_days: float = 1) -> None:
    until = datetime.now(UTC) + timedelta(days=lock_days)

    def put(rel: str) -> None:
        data = (root / rel).read_bytes()
        client.put_object(Bucket=bucket, Key=rel, Body=data,
                          ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
                          ChecksumAlgorithm="SHA256",
                          ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                          ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, rels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    rels = [line for line in sys.stdin.read().splitlines() if line]
    plain_upload(plain_client(args.endpoint), args.bucket, args.root, rels, args.threads)


if __name__ == "__main__":
    main()
