"""An S3 client for one target: credentials from env/profile/0600 file, TLS, retries, error translation.

Keys never leave this module: they are not logged, not put in messages and never come from argv.
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions as bex

from backupctl.config import S3Credentials, S3TargetConfig
from backupctl.errors import (
    ConfigError,
    S3AccessDenied,
    S3BucketNotLocked,
    S3Error,
    S3TLSError,
    S3Unreachable,
    SecretError,
)
from backupctl.secrets import read_secret

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config as BotoConfig

Resolve = Callable[[Path], Path]
_DENIED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
           "AuthorizationHeaderMalformed", "Forbidden", "403", "InvalidClientTokenId"}


def _keys_from_file(path: Path, section: str) -> dict[str, str]:
    text = read_secret(path, "S3 credentials file")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise SecretError(f"S3 credentials file {path} cannot be read: {type(exc).__name__}") from None
    if not parser.has_section(section):
        raise SecretError(f"S3 credentials file {path} has no [{section}] section",
                          hint="set credentials.profile to the section name")
    items = parser[section]
    access = items.get("aws_access_key_id", "").strip()
    secret = items.get("aws_secret_access_key", "").strip()
    if not access or not secret:
        raise SecretError(f"S3 credentials file {path} [{section}] lacks aws_access_key_id or "
                          "aws_secret_access_key")
    keys = {"aws_access_key_id": access, "aws_secret_access_key": secret}
    token = items.get("aws_session_token", "").strip()
    if token:
        keys["aws_session_token"] = token
    return keys


def _keys_from_env(creds: S3Credentials) -> dict[str, str]:
    keys: dict[str, str] = {}
    for field, var in (("aws_access_key_id", creds.access_key_env),
                       ("aws_secret_access_key", creds.secret_key_env)):
        value = os.environ.get(var, "").strip()
        if not value:
            raise SecretError(f"environment variable {var} is not set (S3 credentials)",
                              hint="export it, or set credentials.source = 'file' with a 0600 file")
        keys[field] = value
    if creds.session_token_env:
        token = os.environ.get(creds.session_token_env, "").strip()
        if token:
            keys["aws_session_token"] = token
    return keys


def make_session(creds: S3Credentials, resolve: Resolve) -> boto3.session.Session:
    """A boto3 session holding the keys; the keys themselves go nowhere else."""
    # boto3 (~0.1 s to import) loads when a client is first made: a replication reads and hashes its first
    # files meanwhile (see S3Target.sync), and nothing that only imports this module pays for it
    import boto3

    if creds.source == "env":
        return boto3.session.Session(**_keys_from_env(creds))
    if creds.source == "file":
        assert creds.file is not None
        return boto3.session.Session(**_keys_from_file(resolve(creds.file), creds.profile or "default"))
    try:
        session = boto3.session.Session(profile_name=creds.profile)
    except bex.ProfileNotFound:
        raise SecretError(f"AWS profile '{creds.profile}' not found",
                          hint="add it to ~/.aws/credentials or set AWS_SHARED_CREDENTIALS_FILE") from None
    if session.get_credentials() is None:
        raise SecretError(f"AWS profile '{creds.profile}' has no keys")
    return session


def botocore_config(cfg: S3TargetConfig, *, max_attempts: int | None = None) -> BotoConfig:
    from botocore.config import Config as BotoConfig

    from backupctl.s3 import sigv4

    style = cfg.addressing_style
    if style == "auto":
        style = "path" if cfg.endpoint else "virtual"
    return BotoConfig(
        region_name=cfg.region,
        s3={"addressing_style": style},
        retries={"max_attempts": max_attempts or cfg.max_attempts, "mode": "standard"},
        connect_timeout=min(10.0, cfg.timeout_seconds),
        read_timeout=cfg.timeout_seconds,
        max_pool_connections=cfg.concurrency + 4,
        # we send Content-MD5 and our own SHA-256 on every PUT; botocore's default CRC32 trailer
        # (aws-chunked) is not understood by older servers such as Ceph RGW 16
        request_checksum_calculation="when_required",
        response_checksum_validation="when_supported",
        # over plain HTTP, sign upload bodies with the SHA-256 they declare instead of hashing them again
        signature_version=sigv4.signature_version(),
    )


@dataclass
class Bucket:
    """A client bound to one bucket and prefix, with the target's name for messages."""

    target: str
    cfg: S3TargetConfig
    client: Any

    @property
    def name(self) -> str:
        return self.cfg.bucket

    @property
    def prefix(self) -> str:
        return self.cfg.prefix

    @property
    def location(self) -> str:
        return f"{self.cfg.bucket}/{self.cfg.prefix}".rstrip("/")

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint or f"https://s3.{self.cfg.region}.amazonaws.com"

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def rel(self, key: str) -> str:
        return key[len(self.prefix):] if key.startswith(self.prefix) else key

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        """Translate botocore failures into one-line package errors naming endpoint and bucket."""
        with translate_errors(what, self.endpoint, self.name):
            yield


def tls_verify(cfg: S3TargetConfig, resolve: Resolve) -> bool | str:
    if cfg.ca_bundle is not None:
        path = resolve(cfg.ca_bundle)
        if not path.is_file():
            raise ConfigError(f"ca_bundle {path} does not exist", hint="point it at the CA certificate (PEM)")
        return str(path) if cfg.verify_tls else False
    return cfg.verify_tls


def _quiet_wire_logs() -> None:
    """botocore's debug log shows request headers (the access key id, signatures): never let it through,
    not even with --debug."""
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def connect(target: str, cfg: S3TargetConfig, resolve: Resolve, *, credentials: S3Credentials | None = None,
            max_attempts: int | None = None) -> Bucket:
    """A client for `target` with its writer credential (or `credentials`, e.g. the expire one)."""
    _quiet_wire_logs()
    session = make_session(credentials or cfg.credentials, resolve)
    client = session.client("s3", endpoint_url=cfg.endpoint, verify=tls_verify(cfg, resolve),
                            config=botocore_config(cfg, max_attempts=max_attempts))
    return Bucket(target, cfg, client)


def error_code(exc: bex.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: bex.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


@contextmanager
def translate_errors(what: str, endpoint: str, bucket: str) -> Iterator[None]:
    try:
        yield
    except bex.SSLError as exc:
        raise S3TLSError(f"{endpoint}: TLS certificate verification failed during {what}",
                         hint="set ca_bundle to the CA that signed the endpoint's certificate") from exc
    except (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ConnectionClosedError,
            bex.ReadTimeoutError, bex.ConnectionError) as exc:
        raise S3Unreachable(f"S3 endpoint {endpoint} is unreachable during {what}",
                            hint="check the endpoint URL, the network and that the server runs") from exc
    except bex.NoCredentialsError as exc:
        raise SecretError("no S3 credentials found", hint="see [targets.*.credentials]") from exc
    except bex.ClientError as exc:
        code = error_code(exc)
        if code == "NoSuchBucket":
            raise S3BucketNotLocked(f"bucket '{bucket}' does not exist at {endpoint}",
                                    hint="run `backupctl target init` to create it with Object Lock") from exc
        if code in _DENIED or (http_status(exc) == 403 and code != "ObjectLocked"):
            raise S3AccessDenied(f"{endpoint} refused {what} on bucket '{bucket}' ({code or 'HTTP 403'})",
                                 hint="check the S3 credential and its permissions") from exc
        message = exc.response.get("Error", {}).get("Message") or ""
        raise S3Error(f"{what} on bucket '{bucket}' failed: {code} {message}".strip()) from exc
    except bex.BotoCoreError as exc:
        raise S3Error(f"{what} on bucket '{bucket}' at {endpoint} failed: {type(exc).__name__}") from exc
