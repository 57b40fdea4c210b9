"""The console's certificate: the one configured, or a self-signed one made on first start under the state
folder (key 0600) and reused afterwards, so a browser's pinned exception stays valid."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backupctl.errors import ConsoleError
from backupctl.fsutil import atomic_write_bytes
from backupctl.secrets import check_private_file


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    fingerprint: str      # SHA-256 of the DER certificate, colon-separated hex
    generated: bool


def fingerprint(cert_file: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConsoleError(f"console certificate {cert_file} cannot be read: {exc}") from None
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def certificate(state_dir: Path, cert_file: Path | None, key_file: Path | None, host: str) -> Certificate:
    if cert_file is not None and key_file is not None:
        check_private_file(key_file, "console TLS key")
        return Certificate(cert_file, key_file, fingerprint(cert_file), False)
    folder = state_dir / "console"
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    generated = not (cert_file.exists() and key_file.exists())
    if generated:
        _self_signed(cert_file, key_file, host)
    check_private_file(key_file, "console TLS key")
    return Certificate(cert_file, key_file, fingerprint(cert_file), generated)


def _self_signed(cert_file: Path, key_file: Path, host: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"backupctl console {host}")])
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), mode=0o600)
    atomic_write_bytes(cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
