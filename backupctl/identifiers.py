"""The key that stands in for patient identifiers in manifests and in the catalog's study index.

An admin looks a study up by what they are handed (a Patient ID, an accession number, a name), but neither
the catalog nor a manifest may become a patient index in clear. So:

* Patient ID and accession number are stored as keyed HMAC-SHA-256: equal values give equal digests under
  one key, an exact-match lookup hashes the query, and nobody without the key can test guesses.
* The patient name is sealed (AES-SIV, deterministic so an unchanged archive still gives a byte-identical
  manifest): a wildcard such as `DOE^J*` cannot be hashed, so it is matched in memory after the names of
  the candidate studies are opened.

The key is 32 random bytes in the secrets folder (`identifiers.key`, 0600), created at `init` or first use;
two sub-keys derive from it (HKDF), one per use. It is a separate file from the signing key on purpose: the
signing key's public half travels to auditors, this one never does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backupctl.errors import SecretError
from backupctl.secrets import check_private_file

if TYPE_CHECKING:
    from backupctl.config import Config

KEY_FILE_NAME = "identifiers.key"
KEY_BYTES = 32
_DIGEST_INFO = b"backupctl find-index hmac-sha256 v1"
_SEAL_INFO = b"backupctl find-index aes-siv v1"


def _derive(raw: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(raw)


@dataclass(frozen=True)
class IdentifierKey:
    """The identifiers key with its two derived sub-keys."""

    raw: bytes = field(repr=False)
    _digest_key: bytes = field(init=False, repr=False)
    _siv: AESSIV = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_digest_key", _derive(self.raw, _DIGEST_INFO, 32))
        object.__setattr__(self, "_siv", AESSIV(_derive(self.raw, _SEAL_INFO, 64)))

    def __reduce__(self) -> tuple[type, tuple[bytes]]:   # to a worker process: the raw key, derived again
        return (IdentifierKey, (self.raw,))

    @property
    def key_id(self) -> str:
        """Names the key without revealing it: manifests of another key are never reused or compared."""
        return hmac.new(self._digest_key, b"key-id", hashlib.sha256).hexdigest()[:16]

    def digest(self, value: str) -> str:
        """The keyed hash of an identifier, as stored and as looked up (surrounding blanks ignored)."""
        return hmac.new(self._digest_key, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, value: str) -> str:
        return base64.b64encode(self._siv.encrypt(value.encode("utf-8"), None)).decode("ascii")

    def open(self, token: str) -> str | None:
        """The sealed value, or None when it was sealed under another key or altered."""
        try:
            return self._siv.decrypt(base64.b64decode(token, validate=True), None).decode("utf-8")
        except (InvalidTag, ValueError):
            return None


def key_path(config: Config) -> Path:
    """Beside the signing key: the secrets folder."""
    return config.signing_key.parent / KEY_FILE_NAME


def ensure_identifier_key(path: Path) -> tuple[IdentifierKey, bool]:
    """Load the key, creating it (0600) when absent. Returns (key, created).

    Created by a hard link from a finished temporary file: of two first uses at once, one key wins and both
    read it, so no manifest is ever hashed under a key that is then replaced."""
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:   # mkstemp makes it 0600 from the first byte
                fh.write(os.urandom(KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                created = True
        finally:
            os.unlink(tmp)
    return load_identifier_key(path), created


def load_identifier_key(path: Path) -> IdentifierKey:
    check_private_file(path, "identifiers key")
    raw = path.read_bytes()
    if len(raw) != KEY_BYTES:
        raise SecretError(f"identifiers key {path} is not {KEY_BYTES} bytes",
                          hint="restore it from your key backup; a new key cannot find older studies by ID")
    return IdentifierKey(raw)


def identifier_key(config: Config) -> IdentifierKey:
    return ensure_identifier_key(key_path(config))[0]


def init_identifier_key(config: Config) -> list[str]:
    """`backupctl init` step: create the identifiers key unless it exists."""
    _, created = ensure_identifier_key(key_path(config))
    return [f"identifiers key {key_path(config)}"] if created else []
