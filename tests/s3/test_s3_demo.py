"""The demo's `"s3"` key: measured figures from a real replication, audit, attack, recovery and probe."""

from __future__ import annotations

import pytest

from backupctl import demo
from backupctl.progress import NullProgress
from backupctl.s3.demo import DEMO_TARGET, demo_s3, demo_s3_server


@pytest.mark.slow
def test_demo_s3_key(tmp_path):
    with demo_s3_server(tmp_path) as body:
        ctx = demo.DemoContext(workdir=tmp_path, progress=NullProgress())
        ctx.extra_targets[DEMO_TARGET] = body
        assert demo.step_backup(ctx)["ok"]
        result = demo_s3(ctx.config, DEMO_TARGET, NullProgress())
    assert result["ok"], result
    assert result["objects"] == result["locked"] > 0 and result["audit_ok"]
    assert result["second_run_uploaded"] == 0
    assert result["attack"]["audit_findings"] >= 2 and result["attack"]["locked_delete_refused"]
    assert "shorten-compliance-retention" in result["probe"]["findings"]      # moto's known gap
    assert "secret" not in str(result).lower().replace("not-for-production", "")
