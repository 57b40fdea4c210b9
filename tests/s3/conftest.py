"""Fixtures for the S3 Object Lock tests: both engines on 127.0.0.1 (moto server, single-node Ceph RGW),
a small staging repository with real restic snapshots, and per-test configs with their own bucket."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.init import initialize
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.s3.server import EmbeddedS3

BIG_PACK_BYTES = 12 * 1024 * 1024   # random bytes: restic writes a pack above 8 MiB (boto3's multipart size)


@dataclass(frozen=True)
class Engine:
    name: str              # moto | rgw
    endpoint: str
    credentials: Path      # 0600 INI file with the writer keys
    ca_bundle: Path | None = None

    @property
    def enforces_compliance(self) -> bool:
        """RGW refuses shortening COMPLIANCE retention; moto 5.2.5 allows it (a known moto gap)."""
        return self.name == "rgw"


def _credentials_file(folder: Path, access: str, secret: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s3-credentials"
    path.write_text(f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def moto_engine(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("moto")
    server = EmbeddedS3(log=folder / "moto.log")
    endpoint = server.start()
    try:
        yield Engine("moto", endpoint, _credentials_file(folder, "testing-writer", "testing-secret"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw_engine(tmp_path_factory: pytest.TempPathFactory):
    from backupctl.dev.rgw import RgwCluster, rgw_available

    if not rgw_available():
        pytest.skip("Ceph RGW packages are not installed (scripts/install-system-deps.sh installs them)")
    base = Path(os.environ.get("BACKUPCTL_TEST_RGW_BASE") or tmp_path_factory.mktemp("rgw"))
    cluster = RgwCluster(base)
    info = cluster.up()
    try:
        yield Engine("rgw", info.endpoint, _credentials_file(base / "client", info.access_key, info.secret_key))
    finally:
        cluster.down()


@pytest.fixture(params=["moto", pytest.param("rgw", marks=[pytest.mark.rgw, pytest.mark.slow])])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(f"{request.param}_engine")


@dataclass
class Staging:
    """A staging repository (restic, real) with its password file and the archive it backs up."""

    root: Path
    repository: Path
    password: Path
    archive: Path
    snapshots: list[str]


def _installation_toml(repository: Path, password: Path, target: str = "") -> str:
    return (f'[catalog]\npath = "var/catalog.sqlite"\n\n[staging]\nrepository = "{repository}"\n'
            f'password_file = "{password}"\n{target}')


@pytest.fixture(scope="session")
def staging_template(tmp_path_factory: pytest.TempPathFactory) -> Staging:
    """One repository with one snapshot: DICOM files plus random bytes big enough for a >8 MiB pack."""
    root = tmp_path_factory.mktemp("staging-template")
    archive = root / "archive"
    write_archive(archive, ArchiveSpec(patients=2, studies_per_patient=1, series_per_study=1,
                                       instances_per_series=3, seed=3))
    (archive / "big.bin").write_bytes(os.urandom(BIG_PACK_BYTES))
    config, _ = initialize(root / "install")
    (config.resolve(config.settings.paths.jobs) / "pacs.toml").write_text(
        f'sources = ["{archive}"]\n')
    outcome = run_backup(load_config(config.path), "pacs", replicate=False)
    assert outcome.snapshot_id
    return Staging(root, config.staging_repository, config.resolve(config.settings.staging.password_file),
                   archive, [outcome.snapshot_id])


@pytest.fixture
def staging(staging_template: Staging, tmp_path: Path) -> Staging:
    """A private copy of the template repository: tests may add snapshots to it."""
    repo = tmp_path / "staging-repo"
    shutil.copytree(staging_template.repository, repo)
    return Staging(staging_template.root, repo, staging_template.password, staging_template.archive,
                   list(staging_template.snapshots))


def s3_target_toml(engine: Engine, bucket: str, **overrides: object) -> str:
    settings: dict[str, object] = {
        "type": "s3", "endpoint": engine.endpoint, "bucket": bucket, "retention_days": 1,
        "concurrency": 4,
    }
    settings.update(overrides)
    lines = [f"{k} = {_toml(v)}" for k, v in settings.items()]
    creds = f'[targets.vault.credentials]\nsource = "file"\nfile = "{engine.credentials}"\n'
    if engine.ca_bundle is not None and "ca_bundle" not in settings:
        lines.append(f'ca_bundle = "{engine.ca_bundle}"')
    return "\n[targets.vault]\n" + "\n".join(lines) + "\n\n" + creds


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return f'"{v}"'


def unique_bucket(prefix: str = "bk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_config(tmp_path: Path, staging: Staging):
    """Write an installation using `staging` with one S3 target `vault` and return its Config."""

    def build(engine: Engine, bucket: str | None = None, *, folder: str = "install", job_extra: str = "",
              sources: list[Path] | None = None, **overrides: object) -> Config:
        where = tmp_path / folder
        where.mkdir(exist_ok=True)
        (where / "jobs").mkdir(exist_ok=True)
        text = _installation_toml(staging.repository, staging.password,
                                  s3_target_toml(engine, bucket or unique_bucket(), **overrides))
        (where / "backupctl.toml").write_text(text)
        listed = ", ".join(f'"{p}"' for p in (sources or [staging.archive]))
        (where / "jobs" / "pacs.toml").write_text(f'sources = [{listed}]\ntargets = ["vault"]\n{job_extra}')
        return load_config(where / "backupctl.toml")

    return build


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `backupctl --config CONFIG ARGS...` in-process; returns exit code, stdout and stderr."""
    from backupctl.cli import run

    def invoke(config: Config, *args: str) -> CliResult:
        capsys.readouterr()
        code = run(["--config", str(config.path), "--quiet", *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
