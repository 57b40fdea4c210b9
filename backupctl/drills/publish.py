"""A report as files an auditor can check without backupctl.

Beside each report file `R` (HTML, JSON, Markdown, PDF) lies `R.sig`: the raw 64-byte Ed25519 signature
over R's exact bytes, and in the same folder the public key as PEM, named by its key id. OpenSSL 3 alone
checks them:

    openssl pkeyutl -verify -pubin -inkey report-key-<key id>.pem -rawin -in R -sigfile R.sig

The key's fingerprint (SHA-256 of its DER form, printed by `openssl pkey -pubin -in KEY.pem -outform DER |
sha256sum`) is shown in the report and by `drill report`, so the key file can be compared with a figure
handed over separately. A key file found beside a report proves nothing by itself: whoever could change
the report could change the key too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupctl.drills.report import split_signed, verify_report
from backupctl.errors import SignatureInvalid, UsageError
from backupctl.fsutil import atomic_write_bytes
from backupctl.signing import SigningKey, VerifyKey, fingerprint, public_key_pem

SIG_SUFFIX = ".sig"
OPENSSL_VERIFY = "openssl pkeyutl -verify -pubin -inkey {key} -rawin -in {report} -sigfile {report}.sig"


def signature_path(report: Path) -> Path:
    return report.with_name(report.name + SIG_SUFFIX)


def public_key_file(folder: Path, key: VerifyKey) -> Path:
    # named by the key id: a folder that holds reports of two keys keeps both keys
    return folder / f"report-key-{key.key_id}.pem"


@dataclass
class Published:
    report: Path
    signature: Path
    public_key: Path
    fingerprint: str
    key_id: str
    pdf: Path | None = None
    pdf_signature: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"report": str(self.report), "signature": str(self.signature), "public_key": str(self.public_key),
                "fingerprint_sha256": self.fingerprint, "key_id": self.key_id,
                "pdf": str(self.pdf) if self.pdf else None,
                "pdf_signature": str(self.pdf_signature) if self.pdf_signature else None}

    def openssl_command(self) -> str:
        return OPENSSL_VERIFY.format(key=self.public_key.name, report=self.report.name)


def sign_file(path: Path, content: bytes, key: SigningKey) -> Path:
    """`path.sig`: the raw Ed25519 signature over `content`, which must be the file's bytes."""
    sig = signature_path(path)
    atomic_write_bytes(sig, key.sign(content))
    return sig


def export_public_key(folder: Path, key: VerifyKey) -> Path:
    path = public_key_file(folder, key)
    atomic_write_bytes(path, public_key_pem(key))
    return path


def publish(path: Path, content: bytes, key: SigningKey, *, pdf: bool = False) -> Published:
    """Write the report, its detached signature and the public key beside it; with `pdf` (an HTML report),
    also the PDF printed from it (same name, `.pdf`) and its signature."""
    atomic_write_bytes(path, content)
    sig = sign_file(path, content, key)
    pem = export_public_key(path.parent, key.verify_key)
    published = Published(path, sig, pem, fingerprint(key.verify_key), key.key_id)
    if pdf:
        from backupctl.drills.pdf import print_pdf

        printed = print_pdf(path, path.with_suffix(".pdf"))
        published.pdf = printed
        published.pdf_signature = sign_file(printed, printed.read_bytes(), key)
    return published


@dataclass
class FileCheck:
    path: Path
    format: str
    key_id: str
    fingerprint: str
    detached: bool            # a `.sig` beside the file verified
    embedded: bool            # the signature inside the file (HTML/Markdown trailer, JSON member) verified
    generated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "key_id": self.key_id,
                "fingerprint_sha256": self.fingerprint, "detached_signature": self.detached,
                "embedded_signature": self.embedded, "generated": self.generated}


def verify_file(path: Path, trusted: VerifyKey) -> FileCheck:
    """Check a report file: its `.sig` when there is one, the signature inside it when it has one; at least
    one of them must be there, and every one there must verify."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    sig = signature_path(path)
    detached = sig.exists()
    if detached:
        try:
            trusted.verify(content, sig.read_bytes())
        except SignatureInvalid:
            raise SignatureInvalid(f"{path.name}: {sig.name} does not verify with key {trusted.key_id}",
                                   hint="the report was changed after signing, or another key signed it") from None
    fmt, generated, embedded = "pdf" if content.startswith(b"%PDF-") else "", None, False
    if not fmt:
        try:
            split_signed(content)
            embedded = True
        except SignatureInvalid:
            if not detached:
                raise
    if embedded:
        checked = verify_report(content, trusted)
        fmt, generated = checked.format, checked.generated
    if not detached and not embedded:
        raise SignatureInvalid(f"{path.name}: no signature ({sig.name} is missing)")
    return FileCheck(path, fmt or "unknown", trusted.key_id, fingerprint(trusted), detached, embedded, generated)
