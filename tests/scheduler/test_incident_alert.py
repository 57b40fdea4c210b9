"""A suspect snapshot fires the job's [notify] channels: a failure webhook naming the signals (counts only,
no paths), and the scheduler's backup step is partial."""

from __future__ import annotations

import json

from backupctl.actions.backup import run_backup
from backupctl.scheduler.kinds import _backup
from tests.ransom_sim import attack


def test_suspect_snapshot_fires_the_webhook(installation, receiver) -> None:
    inst = installation
    hook = inst.secret("hook", f"{receiver.base}/hook/token-123")
    inst.add_settings(f'[notify]\nwebhook_url_file = "{hook}"\nretries = 0\n')
    inst.write_job("pacs", f'sources = ["{inst.root / "archive"}"]\n')
    assert run_backup(inst.config(), "pacs", replicate=False).suspect is None   # the first: nothing to compare
    assert receiver.matching("/hook/") == []
    attack(inst.root / "archive")
    step = _backup(inst.config(), "pacs", None)   # the scheduler's backup step, as a daemon runs it
    assert step.status == "partial" and "SUSPECT" in (step.error or "")
    (sent,) = receiver.matching("/hook/")
    payload = sent.json()
    assert payload["event"] == "failure" and payload["status"] == "suspect" and payload["ok"] is False
    assert "SUSPECT" in payload["text"] and payload["figures"]["signals"]["ransom_notes"] == 1
    assert str(inst.root) not in json.dumps(payload)   # counts, never paths
