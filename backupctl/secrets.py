"""Secrets come from files (mode 0600) or environment variables; never argv, never printed."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from backupctl.errors import SecretError


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that is missing, empty or readable by group/others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist", hint="run `backupctl init` or fix the path") from None
    except PermissionError:
        raise SecretError(f"{what} {path} is not readable by this user") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise SecretError(f"{what} {path} is empty or not a regular file")
    if st.st_mode & 0o077:
        raise SecretError(f"{what} {path} is readable by group or others (mode {st.st_mode & 0o777:o})",
                          hint=f"chmod 600 {path}")


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
