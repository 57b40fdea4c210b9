"""`backupctl init`: a commented config, sample job and drill, the password file (0600), the staging repository,
the catalog."""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from backupctl.catalog import open_catalog
from backupctl.config import Config, collect_config
from backupctl.errors import ConfigError
from backupctl.fsutil import atomic_write_text
from backupctl.identifiers import init_identifier_key
from backupctl.repository import staging_restic
from backupctl.secrets import write_private_file
from backupctl.signing import init_signing_key

# other capabilities add steps here (e.g. the signing key); each returns what it created
INIT_HOOKS: list[Callable[[Config], list[str]]] = [init_signing_key, init_identifier_key]


# the samples `backupctl init` writes into an empty jobs/ and restore_drills/ folder: (template, file name)
SAMPLE_JOBS = [("job-pacs.toml", "pacs.toml")]
SAMPLE_DRILLS = [("drill-pacs-weekly.toml", "pacs-weekly.toml")]


def template_text(name: str) -> str:
    return resources.files("backupctl.templates").joinpath(name).read_text()


def default_config_text() -> str:
    return template_text("backupctl.toml")


def _write_samples(folder: Path, samples: list[tuple[str, str]]) -> list[str]:
    """The sample files, into a folder that holds no definition yet (an operator's files are never touched)."""
    if any(folder.glob("*.toml")):
        return []
    created = []
    for template, name in samples:
        atomic_write_text(folder / name, template_text(template))
        created.append(str(folder / name))
    return created


def initialize(directory: Path, config_text: str | None = None,
               samples: bool = False) -> tuple[Config, list[str]]:
    """Create what is missing; keep what exists. Returns the config and what was created. With `samples`, an
    empty jobs/ and restore_drills/ get a commented sample job and drill (`backupctl init` does this)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg_file = directory / "backupctl.toml"
    created: list[str] = []
    if not cfg_file.exists():
        atomic_write_text(cfg_file, config_text or default_config_text())
        created.append(str(cfg_file))
    config, errors = collect_config(cfg_file)
    if errors or config is None:
        raise ConfigError(errors[0] if errors else f"{cfg_file}: invalid")
    for folder in (config.settings.paths.jobs, config.settings.paths.drills, config.settings.paths.state):
        config.resolve(folder).mkdir(parents=True, exist_ok=True)
    if samples:
        added = _write_samples(config.resolve(config.settings.paths.jobs), SAMPLE_JOBS)
        if added:   # a drill names its job: the sample drill comes only with the sample job
            added += _write_samples(config.resolve(config.settings.paths.drills), SAMPLE_DRILLS)
        created += added
        config, errors = collect_config(cfg_file)
        if errors or config is None:
            raise ConfigError(errors[0] if errors else f"{cfg_file}: invalid")
    password = config.settings.staging.password_file
    if password is not None and not config.resolve(password).exists():
        write_private_file(config.resolve(password), base64.b64encode(pysecrets.token_bytes(32)) + b"\n")
        created.append(str(config.resolve(password)))
    for hook in INIT_HOOKS:
        created += hook(config)
    restic = staging_restic(config)
    if not restic.exists():
        config.staging_repository.parent.mkdir(parents=True, exist_ok=True)
        restic.init()
        created.append(f"restic repository {config.staging_repository}")
    open_catalog(config.catalog_path).close()
    return config, created
