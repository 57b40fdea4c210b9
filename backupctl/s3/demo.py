"""The S3 part of `backupctl demo`: replicate to the embedded S3, audit, attack, recover, probe.

Wiring (in `backupctl.demo`), either of:
- `("s3", step_s3)` in STEPS after the backup step: self-contained, it starts the embedded server, adds the
  `vault` target to the demo's backupctl.toml as an operator would, runs `demo_s3` and stops the server;
- or, to keep the server for the whole demo: enter `demo_s3_server(workdir)` before the backup step, put the
  TOML body it yields into `ctx.extra_targets[DEMO_TARGET]`, and call `demo_s3(config, DEMO_TARGET, progress)`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.config import Config
from backupctl.progress import Progress
from backupctl.repofiles import list_repository
from backupctl.repository import replica_restic
from backupctl.s3.audit import audit_target
from backupctl.s3.bucket import init_bucket
from backupctl.s3.probe import probe
from backupctl.s3.recover import recover
from backupctl.s3.server import EmbeddedS3
from backupctl.secrets import write_private_file
from backupctl.targets import make_target
from backupctl.targets.s3 import S3Target

DEMO_TARGET = "vault"
DEMO_BUCKET = "pacs-demo-vault"


@contextmanager
def demo_s3_server(workdir: Path) -> Iterator[str]:
    """Start the embedded S3 server; yield the body of a `[targets.vault]` table that uses it."""
    creds = workdir / "secrets" / "s3-credentials"
    if not creds.exists():
        # the embedded server accepts any key; the file shows the 0600 credentials file an operator uses
        write_private_file(creds, b"[default]\naws_access_key_id = demo-writer\n"
                                  b"aws_secret_access_key = demo-secret-not-for-production\n")
    server = EmbeddedS3(log=workdir / "var" / "embedded-s3.log")
    (workdir / "var").mkdir(parents=True, exist_ok=True)
    endpoint = server.start()
    try:
        yield (f'type = "s3"\nendpoint = "{endpoint}"\nbucket = "{DEMO_BUCKET}"\nlock_mode = "COMPLIANCE"\n'
               f'retention_days = 1\nconcurrency = 4\n\n[targets.{DEMO_TARGET}.credentials]\n'
               f'source = "file"\nfile = "{creds}"\n')
    finally:
        server.stop()


def _wait_past(when: datetime) -> None:
    """Servers stamp versions with whole seconds (moto): let the clock pass `when` before the attack."""
    while datetime.now(UTC) <= when:
        time.sleep(0.05)


def demo_s3(config: Config, target_name: str, progress: Progress) -> dict[str, Any]:
    """Replicate the staging repository, audit it, simulate an attack with the writer credential, recover
    from before it, and probe the endpoint. Every figure is measured."""
    started = time.monotonic()
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, target_name, catalog)
        assert isinstance(target, S3Target)
        init_bucket(target.bucket)
        first = replicate_to(config, catalog, target_name, progress, job="demo")
        if not first.ok or first.report is None:
            return {"ok": False, "error": first.error}
        again = replicate_to(config, catalog, target_name, progress, job="demo")
        files = list_repository(config.staging_repository)
        report = audit_target(target, files, progress)
        attack = _attack_and_recover(config, target, files, progress)
        worm = probe(target.bucket, canary_seconds=2, progress=progress)
    upload_seconds = first.report.seconds
    result = {
        "objects": report.objects,
        "locked": report.locked,
        "audit_ok": report.ok,
        "probe": {"enforced": worm.enforced, "findings": worm.findings, "compensated":
                  worm.as_dict()["compensated"], "cleaned_up": worm.cleaned},
        "endpoint": target.bucket.endpoint,
        "server": "embedded moto (in memory; for trying the tool, not for keeping backups)",
        "uploaded": first.report.uploaded, "bytes": first.report.uploaded_bytes,
        "seconds": round(upload_seconds, 3),
        "mib_per_second": round(first.report.uploaded_bytes / 1048576 / upload_seconds, 1)
        if upload_seconds else None,
        "second_run_uploaded": again.report.uploaded if again.report else None,
        "attack": attack,
        "total_seconds": round(time.monotonic() - started, 3),
    }
    result["ok"] = (report.ok and report.objects == report.locked == len(files) and attack["ok"]
                    and result["second_run_uploaded"] == 0 and worm.cleaned)
    return result


def _attack_and_recover(config: Config, target: S3Target, files: list, progress: Progress) -> dict[str, Any]:
    """What an attacker with the backup host's S3 keys can do: overwrite a pack, delete a snapshot object."""
    as_of = datetime.now(UTC)
    _wait_past(as_of.replace(microsecond=0) + timedelta(seconds=1))
    pack = next(f for f in files if f.kind == "data")
    snap = next(f for f in files if f.kind == "snapshots")
    client, bucket = target.bucket.client, target.cfg.bucket
    client.put_object(Bucket=bucket, Key=target.bucket.key(pack.rel), Body=b"encrypted by ransomware")
    client.delete_object(Bucket=bucket, Key=target.bucket.key(snap.rel))
    locked_delete_refused = True
    try:
        client.delete_object(Bucket=bucket, Key=target.bucket.key(pack.rel),
                             VersionId=target.recorded()[pack.rel].version_id)
        locked_delete_refused = False
    except client.exceptions.ClientError:
        pass
    found = audit_target(target, files, progress).findings
    named = {f.key for f in found}
    scratch = config.state_dir / "scratch" / f"s3-recover-{int(time.time())}"
    outcome = recover(target, scratch, as_of, progress)
    replica_restic(config, scratch).check(read_data=True)
    return {"ok": outcome.ok and {pack.rel, snap.rel} <= named and locked_delete_refused,
            "audit_findings": len(found), "named": sorted(named), "locked_delete_refused": locked_delete_refused,
            "recovered_files": outcome.files, "restic_check": "passed"}


def step_s3(ctx: Any) -> dict[str, Any]:
    """A `backupctl.demo` step: needs `ctx.config` with a staging repository holding a snapshot."""
    from backupctl.config import load_config

    config = ctx.config
    assert config is not None
    # the server outlives this step: the drill after it restores from this immutable copy
    body = ctx.resources.enter_context(demo_s3_server(ctx.workdir))
    text = config.path.read_text()
    if f"[targets.{DEMO_TARGET}]" not in text:
        config.path.write_text(f"{text.rstrip()}\n\n[targets.{DEMO_TARGET}]\n{body}")
    ctx.config = config = load_config(config.path)
    return demo_s3(config, DEMO_TARGET, ctx.progress)
