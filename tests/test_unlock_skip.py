"""`Restic.unlock` skips restic when a local repository holds no lock file (benchmarks found every restic
start costs the repository's key derivation), and still runs it when a lock file is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupctl.config import Config
from backupctl.errors import RepositoryNotFound, WrongPassword
from backupctl.restic import Restic
from backupctl.secrets import PasswordSource, write_private_file


def wrong_password_restic(config: Config, tmp_path: Path) -> Restic:
    """restic on the real repository with a wrong password: any restic run raises WrongPassword."""
    wrong = tmp_path / "wrong-password"
    write_private_file(wrong, b"not the password\n")
    return Restic(config.staging_repository, PasswordSource(file=wrong), no_cache=True)


def test_unlock_does_not_start_restic_when_no_lock_file_exists(installation: Config, tmp_path: Path) -> None:
    assert list((installation.staging_repository / "locks").iterdir()) == []
    wrong_password_restic(installation, tmp_path).unlock()  # would raise had restic run


def test_unlock_runs_restic_when_a_lock_file_exists(installation: Config, tmp_path: Path) -> None:
    (installation.staging_repository / "locks" / ("0" * 64)).write_bytes(b"a lock restic must judge")
    with pytest.raises(WrongPassword):
        wrong_password_restic(installation, tmp_path).unlock()


def test_unlock_runs_restic_for_a_repository_that_is_not_a_local_folder(tmp_path: Path) -> None:
    password = tmp_path / "password"
    write_private_file(password, b"x\n")
    restic = Restic(tmp_path / "no-such-repository", PasswordSource(file=password), no_cache=True)
    with pytest.raises(RepositoryNotFound):
        restic.unlock()
