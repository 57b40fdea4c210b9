"""Orthanc with its index on PostgreSQL 15 (Debian's orthanc-postgresql plugin), as production runs it:
the server the tests start themselves, and an Orthanc on it that receives C-STORE."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from backupctl.pacs.postgres import PostgresServer
from backupctl.pacs.service import ServicePacs, _write
from tests.pacs.conftest import pacs_archive  # noqa: F401 - the session's archive

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_orthanc_keeps_its_index_in_postgresql(tmp_path_factory: pytest.TempPathFactory,
                                               postgres: PostgresServer, pacs_archive) -> None:  # noqa: F811
    root, written = pacs_archive
    pacs = ServicePacs(tmp_path_factory.mktemp("pg-orthanc"), aet="PGPACS", any_modality=True).setup()
    # the index settings carry the database password: their own 0600 file, which Orthanc merges
    settings = postgres.orthanc_settings()
    cfg_path = pacs.config_dir / "orthanc.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["Plugins"] = settings.pop("Plugins")           # a section may be in one file only
    cfg_path.write_text(json.dumps(cfg))
    _write(pacs.config_dir / "postgresql.json", json.dumps(settings), 0o600)
    pacs.start()
    try:
        result = pacs.storescu(root)
        assert result.returncode == 0, result.stderr
        assert pacs.client().counts()["instances"] == len(written)
        # the index is PostgreSQL's: its resources table names every instance (resourcetype 3)
        assert int(postgres.psql("SELECT count(*) FROM resources WHERE resourcetype = 3")) == len(written)
        assert not list(pacs.storage.glob("index*"))                  # no SQLite index beside the storage
    finally:
        pacs.kill()
    assert postgres.password not in (pacs.config_dir / "orthanc.json").read_text()
