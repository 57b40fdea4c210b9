"""The staging repository: building its restic driver from the config, creating it."""

from __future__ import annotations

from pathlib import Path

from backupctl.config import Config
from backupctl.restic import Restic
from backupctl.secrets import PasswordSource


def password_source(config: Config) -> PasswordSource:
    staging = config.settings.staging
    if staging.password_file is not None:
        return PasswordSource(file=config.resolve(staging.password_file))
    return PasswordSource(env=staging.password_env)


def staging_restic(config: Config) -> Restic:
    cache = config.settings.staging.cache_dir
    return Restic(config.staging_repository, password_source(config),
                  cache_dir=config.resolve(cache) if cache else config.state_dir / "restic-cache")


def replica_restic(config: Config, repository: Path) -> Restic:
    """restic reading a replica: no cache, since a copy shares the staging repository's id and cache,
    and a shared cache would hide files missing from the copy."""
    return Restic(repository, password_source(config), no_cache=True)
