"""Shared set-up for the restore drill tests: one backed-up installation with an offline copy, reused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupctl.actions.backup import BackupOutcome, run_backup
from backupctl.catalog import media as media_rows
from backupctl.catalog import open_catalog
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec
from backupctl.repository import replica_restic
from backupctl.targets.media import init_medium
from tests.helpers import make_installation

# 6 studies of 3 small instances each: enough to sample from, quick to back up
DRILL_SPEC = ArchiveSpec(patients=3, studies_per_patient=2, series_per_study=1, instances_per_series=3,
                         rows=32, columns=32, seed=11)


@dataclass
class Site:
    root: Path
    config: Config
    backup: BackupOutcome

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def medium_repository(self) -> Path:
        return self.root / "disk" / "backupctl" / "repository"

    @property
    def scratch_root(self) -> Path:
        return self.config.state_dir / "scratch"

    def define(self, name: str, body: str) -> Config:
        """Write restore_drills/NAME.toml and reload the config."""
        (self.root / "restore_drills" / f"{name}.toml").write_text(body)
        self.config = load_config(self.root / "backupctl.toml")
        return self.config


def build_site(root: Path, spec: ArchiveSpec = DRILL_SPEC) -> Site:
    """An installation whose job 'pacs' is backed up to staging and to the offline disk DISK-A."""
    config = make_installation(root, spec)
    cfg = config.target("offline")
    medium = init_medium(cfg.model_copy(update={"mount": config.resolve(cfg.mount)}), "offline", "DISK-A")
    with open_catalog(config.catalog_path) as catalog:
        media_rows.register_medium(catalog, "offline", medium.label, medium.media_id, medium.created)
    outcome = run_backup(config, "pacs")
    assert outcome.replicated_ok, outcome.replicas
    return Site(root, config, outcome)


@pytest.fixture(scope="session", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("drills"))


def archive_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def corrupt_blob_of(config: Config, repository: Path, victim: Path) -> Path:
    """Flip a byte inside the stored blob holding `victim` (a file smaller than restic's smallest chunk,
    so one blob whose id is the SHA-256 of the file). Returns the damaged pack file."""
    blob_id = hashlib.sha256(victim.read_bytes()).hexdigest()
    restic = replica_restic(config, repository)
    for index_id in restic.run(["list", "index"]).stdout_lines:
        index = json.loads("\n".join(restic.run(["cat", "index", index_id.strip()]).stdout_lines))
        for pack in index["packs"]:
            for blob in pack["blobs"]:
                if blob["id"] == blob_id:
                    path = repository / "data" / pack["id"][:2] / pack["id"]
                    path.chmod(0o644)
                    data = bytearray(path.read_bytes())
                    data[blob["offset"] + blob["length"] // 2] ^= 0xFF
                    path.write_bytes(bytes(data))
                    return path
    raise AssertionError(f"no blob {blob_id[:12]} for {victim} in {repository}")
