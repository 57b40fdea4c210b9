"""Console accounts: a 0600 JSON file under the state folder with Argon2id hashes, TOTP secrets and the
failed-sign-in counters that lock an account.

Every read-modify-write holds an flock on a lock file beside it, so `console user add` and a running server
(which counts failures) do not lose each other's changes; the file itself is replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from backupctl.errors import ConsoleError
from backupctl.fsutil import atomic_write_text

ROLES = ("operator", "manager", "admin", "auditor")
ISSUER = "backupctl"
MIN_PASSWORD = 12
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
_hasher = PasswordHasher()   # argon2-cffi's defaults are Argon2id with RFC 9106's low-memory profile
# verified when the name is unknown, so a wrong name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def users_path(state_dir: Path) -> Path:
    return state_dir / "console" / "users.json"


@contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """The users file's content, written back (atomically, 0600) when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            atomic_write_text(path, json.dumps(data, sort_keys=True, indent=1) + "\n", mode=0o600)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"users": {}}
    except (OSError, ValueError) as exc:
        raise ConsoleError(f"console users file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise ConsoleError(f"console users file {path} is not a users file")
    return data


@dataclass(frozen=True)
class Enrolment:
    name: str
    role: str
    secret: str
    uri: str


def add_user(state_dir: Path, name: str, role: str, password: str) -> Enrolment:
    """A new account with a fresh TOTP secret (shown once, for the authenticator app)."""
    if not _NAME.match(name):
        raise ConsoleError(f"user name '{name}' is not allowed",
                           hint="lower-case letters, digits, '.', '_' and '-', starting with a letter")
    if role not in ROLES:
        raise ConsoleError(f"unknown role '{role}'", hint="one of " + ", ".join(ROLES))
    if len(password) < MIN_PASSWORD:
        raise ConsoleError(f"the password is shorter than {MIN_PASSWORD} characters")
    secret = pyotp.random_base32()
    with _locked(users_path(state_dir)) as data:
        if name in data["users"]:
            raise ConsoleError(f"user '{name}' exists already")
        data["users"][name] = {"role": role, "hash": _hasher.hash(password), "totp": secret, "failures": 0,
                               "locked_until": 0.0, "last_totp_step": -1, "created": time.time()}
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)
    return Enrolment(name, role, secret, uri)


def enrolment_qr(uri: str) -> str:
    """The otpauth:// URI as a QR code in SVG (drawn here by segno: no script, nothing fetched)."""
    import segno

    return segno.make(uri, error="m").svg_inline(scale=6, border=4, dark="#000", light="#fff") + "\n"


def list_users(state_dir: Path) -> list[dict[str, Any]]:
    data = _read(users_path(state_dir))
    return [{"name": n, "role": u["role"], "locked": u.get("locked_until", 0) > time.time()}
            for n, u in sorted(data["users"].items())]


@dataclass(frozen=True)
class SignIn:
    ok: bool
    reason: str            # ok | unknown user | bad password | bad code | replayed code | locked
    role: str | None = None
    locked: bool = False     # this failure locked the account


def _totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step the code belongs to (the current one or a neighbour, for clock drift), or None."""
    totp = pyotp.TOTP(secret)
    step = int(now // totp.interval)
    for s in (step, step - 1, step + 1):
        if pyotp.utils.strings_equal(code, totp.at(s * totp.interval)):
            return s
    return None


def sign_in(state_dir: Path, name: str, password: str, code: str, *, max_failures: int,
            lockout_seconds: float, now: float | None = None) -> SignIn:
    """Check name, password and TOTP code together; count failures and lock the account after
    `max_failures` in a row. A locked account is refused even with the right credentials."""
    now = time.time() if now is None else now
    with _locked(users_path(state_dir)) as data:
        user = data["users"].get(name)
        if user is None:
            _verify(_DUMMY_HASH, password)
            return SignIn(False, "unknown user")
        if user.get("locked_until", 0) > now:
            return SignIn(False, "locked")
        reason = "ok"
        if not _verify(user["hash"], password):
            reason = "bad password"
        else:
            step = _totp_step(user["totp"], code.strip(), now)
            if step is None:
                reason = "bad code"
            elif step <= user.get("last_totp_step", -1):
                reason = "replayed code"
            else:
                user["last_totp_step"] = step
        if reason != "ok":
            user["failures"] = user.get("failures", 0) + 1
            if user["failures"] >= max_failures:
                user["locked_until"], user["failures"] = now + lockout_seconds, 0
                return SignIn(False, reason, locked=True)
            return SignIn(False, reason)
        user["failures"] = 0
        if _hasher.check_needs_rehash(user["hash"]):
            user["hash"] = _hasher.hash(password)
        return SignIn(True, "ok", user["role"])


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
