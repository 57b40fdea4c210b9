"""The recovery kit: what a clean machine needs, with the S3 copy alone, to rebuild and restore.

`keys export-kit` gathers the repository password, the signing public key, the S3 coordinates and where each
credential comes from (references, never the keys themselves: they belong to the S3 account, and a kit that
held them would hand the bucket to whoever finds the kit and its passphrase), the catalog's location with the
steps that rebuild it, and the configuration files. The document is encrypted with a key derived from a
passphrase (scrypt) with AES-256-GCM, and written as armoured text that can be printed and kept in a safe.

`keys import-kit` decrypts it into an empty folder: a backupctl.toml written for that folder (its own
secrets/ and var/), the password as a 0600 file, the public key, the jobs and drills, and the steps to follow.
The passphrase comes from a 0600 file or an environment variable, never from the command line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import textwrap
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from backupctl import __version__
from backupctl.catalog.db import utcnow
from backupctl.config import Config
from backupctl.errors import KitError, SecretError, UsageError
from backupctl.fsutil import atomic_write_text
from backupctl.repository import password_source
from backupctl.secrets import check_private_file, write_private_file
from backupctl.signing import public_key_path

FORMAT = "backupctl-recovery-kit/1"
BEGIN, END = "-----BEGIN BACKUPCTL RECOVERY KIT-----", "-----END BACKUPCTL RECOVERY KIT-----"
PASSPHRASE_ENV = "BACKUPCTL_KIT_PASSPHRASE"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
MIN_PASSPHRASE = 12


def read_passphrase(file: Path | None, env: str = PASSPHRASE_ENV) -> bytes:
    """The kit passphrase from a 0600 file, else from the environment variable."""
    if file is not None:
        check_private_file(file, "passphrase file")
        value = file.read_text(encoding="utf-8").strip()
    else:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"no passphrase: give --passphrase-file FILE (mode 0600) or set {env}")
    if len(value) < MIN_PASSPHRASE:
        raise SecretError(f"the passphrase is shorter than {MIN_PASSPHRASE} characters",
                          hint="a kit guards the repository password: use a long passphrase")
    return value.encode("utf-8")


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


# what goes in ----------------------------------------------------------------------------------------------


def _repository_password(config: Config) -> str:
    source = password_source(config)
    if source.file is not None:
        check_private_file(source.file, "password file")
        return source.file.read_text(encoding="utf-8").rstrip("\n")
    value = os.environ.get(source.env or "", "")
    if not value:
        raise SecretError(f"environment variable {source.env} (the repository password) is not set or empty")
    return value


def _target(cfg: Any) -> dict[str, Any]:
    # an S3 target's [credentials] says where the keys come from (a file path, a profile, variable names)
    return cfg.model_dump(mode="json", exclude_none=True)


def _config_files(config: Config) -> dict[str, str]:
    files = {"backupctl.toml": config.path.read_text(encoding="utf-8")}
    for folder in (config.settings.paths.jobs, config.settings.paths.drills):
        where = config.resolve(folder)
        if where.is_dir():
            for f in sorted(where.glob("*.toml")):
                files[f"{folder.name}/{f.name}"] = f.read_text(encoding="utf-8")
    return files


def kit_document(config: Config) -> dict[str, Any]:
    pub = public_key_path(config.signing_key)
    try:
        public_key = pub.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no signing public key at {pub}", hint="run `backupctl init` first") from None
    targets = {name: _target(t) for name, t in config.settings.targets.items()}
    s3 = [n for n, t in targets.items() if t.get("type") == "s3"]
    rebuild = [f"backupctl catalog rebuild --from {n}" for n in s3] or [
        "backupctl catalog rebuild --from TARGET  (a target that holds the repository)"]
    return {
        "format": FORMAT, "created": utcnow(), "host": socket.gethostname(), "backupctl": __version__,
        "repository_password": _repository_password(config),
        "signing_public_key": public_key,
        "targets": targets,
        "catalog": {"path": str(config.catalog_path), "rebuild": rebuild},
        "jobs": sorted(config.jobs), "config_files": _config_files(config),
    }


# sealing and opening ----------------------------------------------------------------------------------------


def seal(document: dict[str, Any], passphrase: bytes) -> str:
    """The document encrypted (scrypt + AES-256-GCM) as armoured, printable text."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {"format": FORMAT, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
              "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
              "cipher": "AES-256-GCM", "created": document["created"]}
    header_line = json.dumps(header, sort_keys=True, separators=(",", ":"))
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    body = AESGCM(key).encrypt(nonce, json.dumps(document, sort_keys=True).encode(), header_line.encode())
    text = base64.b64encode(body).decode()
    check = hashlib.sha256(body).hexdigest()[:16]
    return "\n".join([
        BEGIN,
        "# backupctl recovery kit: open with `backupctl keys import-kit FILE --to EMPTY_FOLDER`",
        "# the passphrase is not in this file; see docs/incident.md",
        f"header: {header_line}",
        f"check: {check}",
        "",
        *textwrap.wrap(text, 76),
        END,
        "",
    ])


def open_kit(text: str, passphrase: bytes) -> dict[str, Any]:
    """Decrypt an armoured kit. KitError (exit 2) for a wrong passphrase or a damaged kit, in one line."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start, end = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise KitError("not a backupctl recovery kit (no BEGIN/END lines)") from None
    inner = lines[start + 1:end]
    fields = {k: v.strip() for k, _, v in (line.partition(":") for line in inner if ": " in line)}
    try:
        header_line = fields["header"]
        header = json.loads(header_line)
        body = base64.b64decode("".join(line for line in inner if line and ": " not in line
                                        and not line.startswith("#")), validate=True)
        salt, nonce = base64.b64decode(header["salt"]), base64.b64decode(header["nonce"])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
    except (KeyError, ValueError, TypeError):
        raise KitError("the recovery kit is damaged (its header or body does not decode)") from None
    if header.get("format") != FORMAT:
        raise KitError(f"unknown kit format {header.get('format')!r} (this backupctl reads {FORMAT})")
    if fields.get("check") and hashlib.sha256(body).hexdigest()[:16] != fields["check"]:
        raise KitError("the recovery kit is damaged (its check does not match: a mistyped line?)")
    try:
        plain = AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, body, header_line.encode())
    except InvalidTag:
        raise KitError("wrong passphrase for this recovery kit (or the kit was altered)") from None
    document = json.loads(plain)
    if document.get("format") != FORMAT:
        raise KitError("the recovery kit's content is not a kit document")
    return document


def export_kit(config: Config, out: Path, passphrase: bytes) -> dict[str, Any]:
    document = kit_document(config)
    text = seal(document, passphrase)
    atomic_write_text(out, text, mode=0o600)
    return {"kit": str(out), "created": document["created"], "targets": sorted(document["targets"]),
            "jobs": document["jobs"], "config_files": sorted(document["config_files"])}


# importing ---------------------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))   # a TOML basic string is a JSON string for these values


def _toml_table(name: str, data: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    subtables = []
    for k, v in data.items():
        if isinstance(v, dict):
            subtables.append((f"{name}.{k}", v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for sub, v in subtables:
        lines += ["", *_toml_table(sub, v)]
    return lines


def config_for(document: dict[str, Any]) -> str:
    """A backupctl.toml for the new folder: its own catalog, staging, secrets; the kit's targets."""
    lines = [
        "# written by `backupctl keys import-kit` from a recovery kit of "
        f"{document.get('host', '?')} ({document.get('created', '?')});",
        "# the original configuration is in backupctl.toml.original",
        "", "[catalog]", 'path = "var/catalog.sqlite"',
        "", "[staging]", 'repository = "var/staging-repo"', 'password_file = "secrets/restic-password"',
        "", "[signing]", 'key_file = "secrets/signing.key"',
    ]
    for name, target in document.get("targets", {}).items():
        lines += ["", *_toml_table(f"targets.{name}", target)]
    return "\n".join(lines) + "\n"


def import_kit(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty", hint="import a kit into an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    secrets = folder / "secrets"
    write_private_file(secrets / "restic-password", (document["repository_password"] + "\n").encode())
    atomic_write_text(secrets / "signing.key.pub", document["signing_public_key"])
    files = document.get("config_files", {})
    if "backupctl.toml" in files:
        atomic_write_text(folder / "backupctl.toml.original", files["backupctl.toml"])
    for rel, text in files.items():
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] in ("jobs", "restore_drills") and parts[1].endswith(".toml") \
                and not parts[1].startswith("."):
            atomic_write_text(folder / parts[0] / parts[1], text)
    atomic_write_text(folder / "backupctl.toml", config_for(document))
    (folder / "var").mkdir(exist_ok=True)
    missing = [f"{name}: credentials file {t['credentials']['file']}" for name, t in document["targets"].items()
               if t.get("type") == "s3" and t.get("credentials", {}).get("file")
               and not Path(t["credentials"]["file"]).is_file()]
    steps = [
        *(f"put the S3 credentials in place ({m})" for m in missing),
        *document["catalog"]["rebuild"],
        "backupctl snapshots",
        "backupctl incident last-clean --job JOB",
        "backupctl restore SNAPSHOT --from TARGET --to EMPTY_FOLDER",
    ]
    return {"folder": str(folder), "config": str(folder / "backupctl.toml"), "targets": sorted(document["targets"]),
            "jobs": document.get("jobs", []), "catalog_was": document["catalog"]["path"], "next_steps": steps}
