from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.dicom.synth import ArchiveSpec, WrittenInstance, write_archive
from tests.pacs.support import LivePacs

PACS_SPEC = ArchiveSpec(patients=2, studies_per_patient=2, series_per_study=1, instances_per_series=3,
                        rows=16, columns=16, seed=11)
MORE_SPEC = ArchiveSpec(patients=3, studies_per_patient=1, series_per_study=1, instances_per_series=10,
                        rows=16, columns=16, seed=12)


@pytest.fixture(scope="session")
def pacs_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[WrittenInstance]]:
    """12 small instances in 4 studies: what the live PACS holds before any test stores more."""
    root = tmp_path_factory.mktemp("pacs-archive")
    return root, write_archive(root, PACS_SPEC)


@pytest.fixture(scope="session")
def more_instances(tmp_path_factory: pytest.TempPathFactory) -> list[WrittenInstance]:
    """30 other instances, stored while a backup runs."""
    return write_archive(tmp_path_factory.mktemp("more"), MORE_SPEC)


@pytest.fixture(scope="session")
def live_pacs_session(tmp_path_factory: pytest.TempPathFactory,
                      pacs_archive: tuple[Path, list[WrittenInstance]]) -> Iterator[LivePacs]:
    pacs = LivePacs(tmp_path_factory.mktemp("live-pacs")).setup()
    pacs.start()
    try:
        result = pacs.storescu(pacs_archive[0])
        assert result.returncode == 0, result.stderr
        assert pacs.client().counts()["instances"] == len(pacs_archive[1])
        yield pacs
    finally:
        pacs.kill()
        assert pacs.pid() is None


@pytest.fixture
def live_pacs(live_pacs_session: LivePacs) -> LivePacs:
    """The session's production-like Orthanc, running (a test may have left it stopped on purpose)."""
    if live_pacs_session.pid() is None:
        live_pacs_session.start()
    return live_pacs_session
