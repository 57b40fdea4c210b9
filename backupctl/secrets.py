"""Secrets come from files or environment variables; never argv, never printed.

One rule for every secret file (repository password, signing key, S3 keys, webhook/ping URLs, SMTP password,
PACS credentials): a regular, non-empty file of mode 0600 or 0400 owned by the user running backupctl. Every
reader goes through `read_secret` (or `check_private_file` when another program reads the file, as restic
reads its password file), and `config check` applies the same rule to every secret file the config names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl.errors import SecretError

if TYPE_CHECKING:
    from backupctl.config import Config

PRIVATE_MODES = (0o600, 0o400)


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that is missing, empty, not 0600/0400, or not owned by the running user."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist", hint="run `backupctl init` or fix the path") from None
    except PermissionError:
        raise SecretError(f"{what} {path} is not readable by this user") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise SecretError(f"{what} {path} is empty or not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o044:
        raise SecretError(f"{what} {path} is readable by group or others (mode {mode:03o})",
                          hint=f"chmod 600 {path}")
    if mode not in PRIVATE_MODES:
        raise SecretError(f"{what} {path} has mode {mode:03o}, not 600 or 400", hint=f"chmod 600 {path}")
    if st.st_uid != os.geteuid():
        raise SecretError(f"{what} {path} belongs to uid {st.st_uid}, not to the user running backupctl "
                          f"(uid {os.geteuid()})", hint=f"chown {os.geteuid()} {path} && chmod 600 {path}")


def read_secret(path: Path, what: str) -> str:
    """The text of a secret file, once it passed `check_private_file`."""
    check_private_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{what} {path} cannot be read ({type(exc).__name__})") from None


def read_secret_bytes(path: Path, what: str) -> bytes:
    check_private_file(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecretError(f"{what} {path} cannot be read ({exc.strerror})") from None


def configured_secret_files(config: Config) -> Iterator[tuple[str, Path, bool]]:
    """(what, path, required) for every secret file the configuration names; `required` False for one
    backupctl creates when it is missing (the signing key)."""
    s = config.settings
    if s.staging.password_file is not None:
        yield "staging.password_file", config.resolve(s.staging.password_file), True
    key = config.resolve(s.signing.key_file)
    yield "signing.key_file", key, False
    if s.smtp is not None and s.smtp.password_file is not None:
        yield "smtp.password_file", config.resolve(s.smtp.password_file), True
    notifies = [("notify", s.notify)]
    notifies += [(f"job {n}: notify", j.notify) for n, j in config.jobs.items()]
    notifies += [(f"drill {n}: notify", d.notify) for n, d in config.drills.items()]
    for where, notify in notifies:
        if notify is None:
            continue
        for field in ("webhook_url_file", "ping_url_file"):
            if (file := getattr(notify, field)) is not None:
                yield f"{where}.{field}", config.resolve(file), True
    for name, target in s.targets.items():
        for field in ("credentials", "expire_credentials"):
            creds = getattr(target, field, None)
            if creds is not None and creds.source == "file" and creds.file is not None:
                yield f"targets.{name}.{field}.file", config.resolve(creds.file), True
    for name, job in config.jobs.items():
        if job.orthanc is not None and job.orthanc.credentials_file is not None:
            yield f"job {name}: orthanc.credentials_file", config.resolve(job.orthanc.credentials_file), True


def secret_file_problems(config: Config) -> list[str]:
    """One line per configured secret file that breaks the rule (for `config check`)."""
    problems = []
    for what, path, required in configured_secret_files(config):
        if not required and not path.exists():
            continue
        try:
            check_private_file(path, "file")
        except SecretError as exc:
            problems.append(f"{what}: {exc.one_line()}")
    return problems


def write_private_file(path: Path, data: bytes) -> None:
    """Create a secret file with mode 0600 from the first byte (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@dataclass(frozen=True)
class PasswordSource:
    """Where restic's repository password comes from: a file (preferred) or an environment variable."""

    file: Path | None = None
    env: str | None = None

    def restic_env(self) -> dict[str, str]:
        if self.file is not None:
            check_private_file(self.file, "password file")
            return {"RESTIC_PASSWORD_FILE": str(self.file)}
        assert self.env is not None
        value = os.environ.get(self.env)
        if not value:
            raise SecretError(f"environment variable {self.env} (the repository password) is not set or empty")
        return {"RESTIC_PASSWORD": value}
