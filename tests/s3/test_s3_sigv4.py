"""Upload bodies are signed with the SHA-256 they declare, not hashed again: same payload hash as botocore's."""

from __future__ import annotations

import base64
import hashlib

import botocore.auth
import botocore.exceptions as bex
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from backupctl.catalog import open_catalog
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository
from backupctl.s3 import sigv4
from backupctl.s3.bucket import init_bucket
from backupctl.targets import make_target

BODY = b"restic pack bytes " * 1000


def _request(url: str, declared: str | None) -> AWSRequest:
    headers = {"Content-MD5": base64.b64encode(hashlib.md5(BODY).digest()).decode()}
    if declared is not None:
        headers[sigv4.SHA256_HEADER] = declared
    request = AWSRequest(method="PUT", url=url, data=BODY, headers=headers)
    request.context["has_streaming_input"] = True      # as botocore marks a PutObject
    return request


def _payloads(url: str, declared: str | None) -> tuple[str, str]:
    creds = Credentials("writer", "secret")
    stock = botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1")
    ours = sigv4.DeclaredChecksumS3SigV4Auth(creds, "s3", "us-east-1")
    return stock.payload(_request(url, declared)), ours.payload(_request(url, declared))


def test_plain_http_signs_the_declared_hash_which_is_the_body_hash() -> None:
    declared = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    stock, ours = _payloads("http://127.0.0.1:9000/bucket/data/ab", declared)
    assert ours == stock == hashlib.sha256(BODY).hexdigest()


def test_without_a_usable_declared_hash_the_body_is_hashed_as_botocore_does() -> None:
    for declared in (None, "", "not base64!", base64.b64encode(b"short").decode()):
        stock, ours = _payloads("http://127.0.0.1:9000/bucket/k", declared)
        assert ours == stock == hashlib.sha256(BODY).hexdigest(), declared


def test_https_uploads_stay_unsigned_as_botocore_sends_them() -> None:
    declared = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    stock, ours = _payloads("https://s3.example.org/bucket/k", declared)
    assert ours == stock == botocore.auth.UNSIGNED_PAYLOAD


def test_replication_signs_each_pack_with_the_hash_it_is_named_by(engine, make_config, staging) -> None:
    # RGW checks both the signature and the payload hash against the body it receives
    config = make_config(engine)
    sent: dict[str, str] = {}

    def remember(request, **kw) -> None:
        value = request.headers["X-Amz-Content-SHA256"]
        sent[request.url.rsplit("/", 1)[-1]] = value.decode() if isinstance(value, bytes) else value

    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert target.bucket.client.meta.config.signature_version == sigv4.SIGNATURE_VERSION
        target.bucket.client.meta.events.register("before-send.s3.PutObject", remember)
        report = target.sync(staging.repository, list_repository(staging.repository), NullProgress())
    files = list_repository(staging.repository)
    assert report.uploaded == len(files)
    named = [f for f in files if f.named_by_hash]
    assert named and all(sent[f.name] == f.name for f in named)


@pytest.mark.rgw
@pytest.mark.slow
def test_a_body_that_does_not_match_its_declared_hash_is_refused(rgw_engine, make_config) -> None:
    # the payload hash is still a claim the server checks: nothing is stored under a wrong one
    config = make_config(rgw_engine)
    target = make_target(config, "vault")
    init_bucket(target.bucket)
    other = hashlib.sha256(b"other bytes").digest()
    with pytest.raises(bex.ClientError) as refused:
        target.bucket.client.put_object(
            Bucket=target.bucket.name, Key="k", Body=BODY,
            ContentMD5=base64.b64encode(hashlib.md5(BODY).digest()).decode(),
            ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(other).decode())
    assert refused.value.response["Error"]["Code"] == "XAmzContentSHA256Mismatch"
    listed = target.bucket.client.list_object_versions(Bucket=target.bucket.name, Prefix="k")
    assert not listed.get("Versions")
