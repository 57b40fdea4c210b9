"""File modes: backupctl's own umask for what it writes, and one rule for every secret file."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.config import Config, load_config
from backupctl.dicom.synth import write_archive
from backupctl.errors import SecretError
from backupctl.secrets import check_private_file, read_secret
from tests.helpers import CONFIG_TEXT, SMALL_SPEC, assert_one_line_error, cli


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The shell's umask is 002 (group-writable files): every backupctl process started here inherits it."""
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
            if not p.is_symlink()}


def test_with_umask_002_nothing_backupctl_writes_is_open_to_others(tmp_path: Path, loose_umask: None) -> None:
    root = tmp_path / "site"
    cli(None, "init", str(root), check=True)
    (root / "backupctl.toml").write_text(CONFIG_TEXT)
    (root / "disk").mkdir()
    write_archive(tmp_path / "archive", SMALL_SPEC)
    (root / "jobs" / "pacs.toml").write_text(f'sources = ["{tmp_path / "archive"}"]\ntargets = ["offline"]\n')
    config = load_config(root / "backupctl.toml")
    cli(config, "media", "init", "offline", "--label", "DISK-A", check=True)
    cli(config, "backup", "run", "pacs", check=True)
    cli(config, "verify", "--level", "repo", check=True)

    for folder in (root / "var", root / "secrets", root / "disk" / "backupctl"):
        modes = _modes(folder)
        assert len(modes) > 3, folder
        assert not {name: oct(m) for name, m in modes.items() if m & 0o022}, f"group/other-writable in {folder}"
        # the signing key's public half is meant to be copied to auditors: the one file written for others
        private = {name: m for name, m in modes.items() if not name.endswith(".pub")}
        assert not {name: oct(m) for name, m in private.items() if m & 0o077}, f"open to others in {folder}"
    assert stat.S_IMODE(config.catalog_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660, 0o700, 0o604])
def test_a_secret_file_outside_the_rule_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    secret.chmod(mode)
    with pytest.raises(SecretError) as caught:
        read_secret(secret, "webhook URL file")
    line = caught.value.one_line()
    assert str(secret) in line and f"chmod 600 {secret}" in line and "s3cr3t" not in line


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_0600_and_0400_of_ones_own_are_accepted(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    secret.chmod(mode)
    assert read_secret(secret, "token") == "s3cr3t\n"


def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)
    with pytest.raises(SecretError, match="belongs to uid 65534"):
        check_private_file(secret, "token")


def test_config_check_applies_the_rule_to_every_secret_file(installation: Config) -> None:
    base = installation.base
    for name in ("webhook", "ping", "smtp-password"):
        (base / "secrets" / name).write_text("https://hooks.example/abc\n")
        (base / "secrets" / name).chmod(0o600)
    with open(installation.path, "a") as fh:
        fh.write('\n[notify]\nwebhook_url_file = "secrets/webhook"\nping_url_file = "secrets/ping"\n'
                 '\n[smtp]\nhost = "127.0.0.1"\nsender = "b@example.org"\npassword_file = "secrets/smtp-password"\n')
    assert json.loads(cli(installation, "config", "check", "--json", check=True).stdout)["ok"]

    for name in ("webhook", "smtp-password", "restic-password"):
        (base / "secrets" / name).chmod(0o644)
    result = cli(installation, "config", "check", "--json")
    assert result.returncode == 2
    errors = json.loads(result.stdout)["errors"]
    for field, name in (("notify.webhook_url_file", "webhook"), ("smtp.password_file", "smtp-password"),
                        ("staging.password_file", "restic-password")):
        [line] = [e for e in errors if f"{field}:" in e]
        assert str(base / "secrets" / name) in line and "chmod 600" in line
    assert not [e for e in errors if "ping_url_file" in e]

    (base / "secrets" / "restic-password").chmod(0o600)
    (base / "secrets" / "smtp-password").chmod(0o600)
    assert_one_line_error(cli(installation, "config", "check"), 2, "notify.webhook_url_file", "chmod 600")
