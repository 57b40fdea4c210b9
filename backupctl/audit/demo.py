"""The `audit` key of `backupctl demo --json`: commands run through the real CLI leave records, the chain and
the S3 checkpoint verify, every record reaches a syslog receiver the demo starts, and a tampered copy fails."""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any

from backupctl import process
from backupctl.audit.log import log_path, read_lines, verify_chain
from backupctl.audit.receiver import SyslogReceiver
from backupctl.audit.verify import verify_audit

DEADLINE_SECONDS = 30


def _cli(config_path: str, *args: str) -> process.Completed:
    return process.run([sys.executable, "-m", "backupctl", "--config", config_path, "--quiet", *args],
                       timeout=300)


def step_audit(ctx: Any) -> dict[str, Any]:
    """A `backupctl.demo` step: needs `ctx.config`; uses the `vault` S3 target for checkpoints when present."""
    from backupctl.config import load_config

    config = ctx.config
    assert config is not None
    receiver = SyslogReceiver()
    ctx.resources.callback(receiver.close)
    text = config.path.read_text()
    if "[audit]" not in text:
        checkpoint = '\ncheckpoint_target = "vault"' if "[targets.vault]" in text else ""
        config.path.write_text(f'{text.rstrip()}\n\n[audit]\nforward = "{receiver.url}"{checkpoint}\n')
    ctx.config = config = load_config(config.path)
    path = str(config.path)
    restore = ("restore", "latest", "--job", ctx.job, "--to", str(ctx.workdir / "audit-restore"), "--json")
    commands = [("snapshots", "--json"), restore,
                ("backup", "run", "no-such-job", "--json"), ("unlock",)]
    codes = [_cli(path, *args).returncode for args in commands]
    report = verify_audit(config)
    lines = read_lines(log_path(config.state_dir))
    deadline = time.monotonic() + DEADLINE_SECONDS
    while len(receiver.messages) < len(lines) and time.monotonic() < deadline:
        time.sleep(0.05)   # polling interval: the receiver's threads append as messages arrive
    # a tampered copy: one record's actor changed
    copy = ctx.workdir / "audit-tampered.log"
    shutil.copyfile(log_path(config.state_dir), copy)
    tampered = [*lines]
    if len(tampered) > 2:
        tampered[1] = tampered[1].replace(b'"actor":"', b'"actor":"x', 1)
    copy.write_bytes(b"".join(line + b"\n" for line in tampered))
    broken = verify_chain(copy)
    actions = [json.loads(line)["action"] for line in lines]
    s3 = report.s3_checkpoint
    # scalars first: `backupctl demo` prints a step's top-level numbers and flags as its line
    result: dict[str, Any] = {
        "records": len(lines),
        "chain_verified": report.chain_ok,
        "checkpoint_in_s3": bool(s3 and s3.get("signature_ok") and s3.get("count", 0) > 0),
        "forwarded": len(receiver.messages),
        "tampered_copy_caught": not broken.ok,
        "details": {"actions": actions, "exit_codes": codes, "verified": report.ok, "s3_checkpoint": s3,
                    "receiver": receiver.url, "tampered_copy": broken.broken, "problems": report.problems},
    }
    result["ok"] = (report.ok and codes == [0, 0, 2, 0] and result["forwarded"] == len(lines)
                    and not broken.ok and (s3 is not None or "[targets.vault]" not in text))
    return result
