"""The demo's `"incident"` key: the attack flagged, the S3 copy frozen, the last clean snapshot found,
recovered from the immutable copy byte for byte, the signed report verified, the holds lifted."""

from __future__ import annotations

import pytest

from backupctl import demo
from backupctl.incident.demo import step_incident
from backupctl.progress import NullProgress
from backupctl.s3.demo import step_s3


@pytest.mark.slow
def test_demo_incident_step(tmp_path):
    ctx = demo.DemoContext(workdir=tmp_path, progress=NullProgress())
    with ctx.resources:
        assert demo.step_backup(ctx)["ok"]
        assert demo.step_media(ctx)["ok"]
        assert step_s3(ctx)["ok"]
        result = step_incident(ctx)
    assert result["ok"], result
    assert result["flagged"] and {"lost_dicom", "ransom_notes", "encrypted_extensions"} <= set(result["signals"])
    assert result["freeze"]["held"] > 0 and result["thawed"] == result["freeze"]["held"]
    assert result["last_clean"]["snapshot"] == result["recovered"]["snapshot"]
    assert result["recovered"]["identical"] and result["report_verified"]
    assert not list(ctx.archive.rglob("*.locked"))    # the demo archive is left as it was
