"""Ed25519 keys: 0600 private part, refusal of altered data and of other keys."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from backupctl.errors import SecretError, UsageError
from backupctl.signing import (
    SignatureInvalid,
    digest_signature_document,
    generate_key,
    load_signing_key,
    load_verify_key,
    patient_hash,
    public_key_path,
    signature_document,
    verify_document,
)


def test_generated_key_is_private_and_has_public_part(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "secrets" / "signing.key")
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    pub = public_key_path(key.path)
    assert pub.exists() and b"PRIVATE" not in pub.read_bytes()
    assert load_verify_key(pub).key_id == key.key_id == load_signing_key(key.path).key_id


def test_existing_key_is_never_replaced(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    before = key.path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        generate_key(tmp_path / "k")
    assert key.path.read_bytes() == before


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    key.path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by group or others"):
        load_signing_key(key.path)


def test_signature_refuses_changed_bytes_and_other_keys(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "a")
    other = generate_key(tmp_path / "b")
    data = b"manifest bytes" * 100
    doc = signature_document(key, data)
    verify_document(key.verify_key, data, doc, "m")          # the genuine pair verifies
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_document(key.verify_key, data[:-1] + b"X", doc, "m")
    with pytest.raises(SignatureInvalid, match="another key"):
        verify_document(other.verify_key, data, doc, "m")
    forged = {**doc, "key_id": other.key_id}                  # claiming the trusted key id does not help
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_document(other.verify_key, data, forged, "m")


def test_digest_signature_refuses_changed_content_forged_digests_and_other_keys(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "a")
    other = generate_key(tmp_path / "b")
    data = b"a large manifest, signed by its SHA-256" * 100
    doc = digest_signature_document(key, hashlib.sha256(data).hexdigest())
    verify_document(key.verify_key, data, doc, "m")          # the genuine pair verifies
    with pytest.raises(SignatureInvalid, match="SHA-256 differs"):
        verify_document(key.verify_key, data + b"X", doc, "m")
    # the digest in the document replaced by that of other content: the signature no longer covers it
    swapped = {**doc, "sha256": hashlib.sha256(b"other").hexdigest()}
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_document(key.verify_key, b"other", swapped, "m")
    with pytest.raises(SignatureInvalid, match="another key"):
        verify_document(other.verify_key, data, doc, "m")
    # a plain signature of the statement bytes is not mistaken for one of the content, nor the reverse
    plain = signature_document(key, data)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_document(key.verify_key, data, {**plain, "alg": doc["alg"]}, "m")


def test_patient_hash_is_keyed_and_stable(tmp_path: Path) -> None:
    a = generate_key(tmp_path / "a").patient_hash_key()
    b = generate_key(tmp_path / "b").patient_hash_key()
    assert patient_hash(a, "PAT001") == patient_hash(a, "PAT001")
    assert patient_hash(a, "PAT001") != patient_hash(b, "PAT001")
    assert "PAT001" not in patient_hash(a, "PAT001")
