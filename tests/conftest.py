from __future__ import annotations

from pathlib import Path

import pytest

from backupctl.config import Config
from tests.drill_support import site_fixture  # noqa: F401 - the drill tests' shared installation
from tests.helpers import make_installation


@pytest.fixture
def installation(tmp_path: Path) -> Config:
    return make_installation(tmp_path)
