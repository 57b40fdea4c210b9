"""SigV4 for S3 that signs an upload's body with the SHA-256 the upload already declares.

Over plain HTTP botocore signs every request body: it reads the whole body once more to put its SHA-256 in
`x-amz-content-sha256`. Our PutObject requests already carry that very hash in `x-amz-checksum-sha256`
(computed in the read that checks the file against its name), so this signer takes it from there instead
of hashing every uploaded byte a third time (after our SHA-256 and MD5). What goes on the wire is
unchanged: the same payload hash, signed the same way; a server that verifies payloads still rejects a
body that does not match it. Everything else (HTTPS, where botocore leaves upload bodies unsigned;
requests without that header; trailer checksums) is botocore's own `S3SigV4Auth`, untouched.

botocore picks signers by the client's `signature_version`; the name starts with "s3v4-" so that
botocore's endpoint rules treat it as SigV4 and keep their signing region and options.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import botocore.auth

SIGNATURE_VERSION = "s3v4-backupctl"
SHA256_HEADER = "x-amz-checksum-sha256"


def declared_sha256(headers: Any) -> str | None:
    """The hex SHA-256 an `x-amz-checksum-sha256` header declares, or None (absent or malformed)."""
    value = headers.get(SHA256_HEADER)
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


class DeclaredChecksumS3SigV4Auth(botocore.auth.S3SigV4Auth):
    def payload(self, request: Any) -> str:
        declared = declared_sha256(request.headers)
        if (declared is None or self._is_streaming_checksum_payload(request)
                or not self._should_sha256_sign_payload(request)):
            return super().payload(request)
        return declared


def signature_version() -> str | None:
    """The signer to configure clients with; None (botocore's default) where botocore's S3 signer is not the
    pure-Python one this extends (with awscrt installed, botocore signs with the CRT)."""
    if botocore.auth.AUTH_TYPE_MAPS.get("s3v4") is not botocore.auth.S3SigV4Auth:
        return None
    botocore.auth.AUTH_TYPE_MAPS.setdefault(SIGNATURE_VERSION, DeclaredChecksumS3SigV4Auth)
    return SIGNATURE_VERSION
