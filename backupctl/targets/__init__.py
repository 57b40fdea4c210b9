"""Replica targets: one interface (`base.Target`), implemented by `media` (offline disks) and `s3`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backupctl.catalog import Catalog
    from backupctl.config import Config
    from backupctl.targets.base import Target


def make_target(config: Config, name: str, catalog: Catalog | None = None) -> Target:
    cfg = config.target(name)
    if cfg.type == "media":
        from backupctl.targets.media import MediaTarget

        return MediaTarget(name, cfg.model_copy(update={"mount": config.resolve(cfg.mount)}))
    if cfg.type == "s3":
        from backupctl.targets.s3 import S3Target

        return S3Target(name, cfg, config, catalog)
    raise NotImplementedError(f"target type {cfg.type}")
