"""The demo's `"s3"` key: measured figures from a real replication, audit, attack, recovery and probe."""

from __future__ import annotations

import pytest

from backupctl import demo
from backupctl.progress import NullProgress
from backupctl.s3.demo import DEMO_TARGET, step_s3


@pytest.mark.slow
def test_demo_s3_step(tmp_path):
    ctx = demo.DemoContext(workdir=tmp_path, progress=NullProgress())
    assert demo.step_backup(ctx)["ok"]
    result = step_s3(ctx)
    assert result["ok"], result
    assert ctx.config.target(DEMO_TARGET).type == "s3"
    assert result["objects"] == result["locked"] > 0 and result["audit_ok"]
    assert result["second_run_uploaded"] == 0
    assert result["attack"]["audit_findings"] >= 2 and result["attack"]["locked_delete_refused"]
    assert result["attack"]["restic_check"] == "passed"
    assert "shorten-compliance-retention" in result["probe"]["findings"]      # moto's known gap
    assert result["probe"]["cleaned_up"]
