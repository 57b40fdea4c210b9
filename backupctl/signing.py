"""Ed25519 signing keys: generation, loading, signing and verifying bytes.

The private key is a PEM (PKCS#8) file readable only by its owner (0600); the public key sits beside it as
`<key_file>.pub` so that it can be copied to wherever restores are verified (an auditor's laptop, the
offline medium). A key is named by its *key id*: the first 16 hex digits of the SHA-256 of the raw public
key, short enough to read aloud and long enough to tell keys apart.

The same private key also yields (by HKDF) the key of the keyed hash that replaces Patient IDs in manifests,
so a manifest leaks no identity and a patient hash cannot be brute-forced by anyone holding only the
public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backupctl.errors import SecretError, SignatureInvalid, UsageError
from backupctl.fsutil import atomic_write_bytes
from backupctl.secrets import read_secret_bytes

if TYPE_CHECKING:
    from backupctl.config import Config

_PATIENT_HASH_INFO = b"backupctl patient-id hmac-sha256 v1"


def public_key_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".pub")


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class VerifyKey:
    """A trusted public key."""

    public: Ed25519PublicKey
    key_id: str

    def verify(self, data: bytes, signature: bytes) -> None:
        """Raise SignatureInvalid unless `signature` over `data` was made by this key."""
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            raise SignatureInvalid(f"signature does not verify with key {self.key_id}",
                                   hint="the signed file was altered or signed by another key") from None


@dataclass(frozen=True)
class SigningKey:
    """A private key able to sign, plus what derives from it."""

    private: Ed25519PrivateKey
    path: Path

    @property
    def verify_key(self) -> VerifyKey:
        public = self.private.public_key()
        return VerifyKey(public, key_id_of(public))

    @property
    def key_id(self) -> str:
        return self.verify_key.key_id

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def patient_hash_key(self) -> bytes:
        """The HMAC key replacing Patient IDs: derived, so it needs no file of its own to lose."""
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PATIENT_HASH_INFO).derive(raw)


def patient_hash(key: bytes, patient_id: str) -> str:
    """Keyed hash of a Patient ID: equal IDs give equal hashes under one key, nothing reveals the ID."""
    return hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()


def generate_key(key_file: Path, *, overwrite: bool = False) -> SigningKey:
    """Create a new key pair: private part 0600 at `key_file`, public part at `<key_file>.pub`.

    Refuses to replace an existing key: every manifest signed so far would stop verifying against it.
    """
    pub_file = public_key_path(key_file)
    if not overwrite and (key_file.exists() or pub_file.exists()):
        raise UsageError(f"signing key {key_file} already exists",
                         hint="keep it: manifests signed with it verify only against its .pub")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(key_file, pem, mode=0o600)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(pub_file, public_pem, mode=0o644)
    return SigningKey(private, key_file)


def ensure_key(key_file: Path) -> tuple[SigningKey, bool]:
    """Load the key, generating it first when neither part exists. Returns (key, created)."""
    if not key_file.exists() and not public_key_path(key_file).exists():
        return generate_key(key_file), True
    return load_signing_key(key_file), False


def init_signing_key(config: Config) -> list[str]:
    """`backupctl init` step: create the signing key pair unless it exists."""
    _, created = ensure_key(config.signing_key)
    return [f"signing key {config.signing_key} (public part {public_key_path(config.signing_key)})"] if created else []


def load_signing_key(key_file: Path) -> SigningKey:
    """Load the private key, refusing one that others can read."""
    if not key_file.exists():
        raise SecretError(f"signing key {key_file} not found",
                          hint="run `backupctl init` to create it, or set [signing] key_file")
    pem = read_secret_bytes(key_file, "signing key")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SecretError(f"signing key {key_file} is not a readable Ed25519 PEM key ({type(exc).__name__})",
                          hint="restore it from your key backup") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SecretError(f"signing key {key_file} is not an Ed25519 key", hint="run `backupctl init` on a new path")
    return SigningKey(private, key_file)


def public_key_pem(key: VerifyKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo): what `openssl pkeyutl -pubin -inkey` reads."""
    return key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: VerifyKey) -> str:
    """SHA-256 of the public key's DER form, the figure `openssl pkey -pubin -outform DER | sha256sum` prints,
    so an auditor can compare a key file with the fingerprint given out of band using openssl alone."""
    der = key.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _public_pem_file(path: Path) -> VerifyKey | None:
    """The key of a public PEM file of any name; None when the file is not one (a private key, say)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"public key {path} is not readable ({exc.strerror})") from None
    if b"PUBLIC KEY-----" not in data:
        return None
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"public key {path} is not readable ({type(exc).__name__})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise UsageError(f"public key {path} is not an Ed25519 key")
    return VerifyKey(public, key_id_of(public))


def load_verify_key(path: Path) -> VerifyKey:
    """Load a trusted public key: a public PEM file of any name (`.pub`, a report's exported `.pem`), or the
    private key file (whose `.pub` beside it, or else its own public half, is used)."""
    if path.is_file() and not path.name.endswith(".pub"):
        found = _public_pem_file(path)
        if found is not None:
            return found
    candidate = path if path.name.endswith(".pub") else public_key_path(path)
    if candidate.exists():
        try:
            public = serialization.load_pem_public_key(candidate.read_bytes())
        except (ValueError, OSError) as exc:
            raise UsageError(f"public key {candidate} is not readable ({type(exc).__name__})") from None
        if not isinstance(public, Ed25519PublicKey):
            raise UsageError(f"public key {candidate} is not an Ed25519 key")
        return VerifyKey(public, key_id_of(public))
    if path.exists() and not path.name.endswith(".pub"):
        return load_signing_key(path).verify_key
    raise UsageError(f"public key {candidate} not found",
                     hint="copy the .pub of the signing key here or pass --public-key")


# detached signatures ------------------------------------------------------------------------------------


def signature_document(key: SigningKey, data: bytes) -> dict[str, str]:
    """A detached signature as a small JSON-able dict: what was signed (sha256), by whom, the signature."""
    return {
        "alg": "Ed25519",
        "key_id": key.key_id,
        "sha256": hashlib.sha256(data).hexdigest(),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }


def digest_signature_document(key: SigningKey, sha256_hex: str) -> dict[str, str]:
    """A detached signature of content known by its SHA-256 only (hash-then-sign, as minisign does for large
    files): content of any size is signed and verified in one streaming pass, never held in memory."""
    return {
        "alg": DIGEST_ALG,
        "key_id": key.key_id,
        "sha256": sha256_hex,
        "signature": base64.b64encode(key.sign(_digest_statement(sha256_hex))).decode("ascii"),
    }


DIGEST_ALG = "Ed25519-sha256"


def _digest_statement(sha256_hex: str) -> bytes:
    # a fixed prefix: a signature over a digest can never be replayed as a signature over other content
    return f"backupctl signed sha256 {sha256_hex}".encode("ascii")


def verify_document(trusted: VerifyKey, data: bytes, doc: dict[str, object], what: str) -> None:
    """Check a detached signature made by `signature_document` or `digest_signature_document`."""
    if doc.get("alg") == DIGEST_ALG:
        verify_digest_document(trusted, hashlib.sha256(data).hexdigest(), doc, what)
        return
    _check_document(trusted, doc, what, "Ed25519", data)


def verify_digest_document(trusted: VerifyKey, sha256_hex: str, doc: dict[str, object], what: str) -> None:
    """Check a `digest_signature_document` against content whose SHA-256 the caller computed (streaming)."""
    if doc.get("sha256") != sha256_hex:
        raise SignatureInvalid(f"{what}: content does not match its signature (SHA-256 differs)",
                               hint="the file was altered after signing")
    _check_document(trusted, doc, what, DIGEST_ALG, _digest_statement(sha256_hex))


def _check_document(trusted: VerifyKey, doc: dict[str, object], what: str, alg: str, signed: bytes) -> None:
    if doc.get("alg") != alg or not isinstance(doc.get("signature"), str):
        raise SignatureInvalid(f"{what}: signature file is malformed")
    if doc.get("key_id") != trusted.key_id:
        raise SignatureInvalid(f"{what}: signed by another key ({doc.get('key_id')}, trusted {trusted.key_id})",
                               hint="verify with the public key of the host that made the backup")
    try:
        signature = base64.b64decode(str(doc["signature"]), validate=True)
    except ValueError:
        raise SignatureInvalid(f"{what}: signature is not base64") from None
    try:
        trusted.verify(signed, signature)
    except SignatureInvalid:
        raise SignatureInvalid(f"{what}: signature does not verify with key {trusted.key_id}",
                               hint="the file was altered after signing") from None
