"""`target init`, `s3 audit|recover|probe|expire`, `dev s3-server`: the S3 Object Lock copy."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json
from backupctl.errors import IntegrityError, PartialRun, TargetError, UsageError

if TYPE_CHECKING:
    from backupctl.targets.s3 import S3Target

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
target_app = typer.Typer(help="Replica targets: create and check them.", no_args_is_help=True)
s3_app = typer.Typer(help="The S3 Object Lock copy: audit, recover, probe, expire.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from backupctl.cli import dev

    app.add_typer(target_app, name="target")
    app.add_typer(s3_app, name="s3")
    dev.app.command("s3-server")(s3_server)
    dev.app.command("rgw-up")(rgw_up)
    dev.app.command("rgw-down")(rgw_down)


def _s3_target(config, name: str, catalog) -> "S3Target":  # noqa: ANN001
    from backupctl.targets import make_target
    from backupctl.targets.s3 import S3Target  # boto3 costs ~0.2 s: only S3 commands pay it

    target = make_target(config, name, catalog)
    if not isinstance(target, S3Target):
        raise UsageError(f"target {name} is not an S3 target",
                         hint="offline media are set up with `backupctl media init`")
    return target


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise UsageError(f"--as-of: '{text}' is not an ISO 8601 time",
                         hint="e.g. 2025-03-01T14:30:00Z; without a zone it is UTC") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@target_app.command("init")
def target_init(
    name: Annotated[str, typer.Argument(help="Target name in backupctl.toml.")],
    json_output: JsonOpt = False,
) -> None:
    """Create the S3 bucket with Object Lock (versioning on), or check that an existing one has both."""
    from backupctl.catalog import open_catalog
    from backupctl.s3.bucket import init_bucket

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        outcome = init_bucket(target.bucket)
        target.prepare()
    data = {"ok": True, "target": name, "bucket": target.cfg.bucket, "endpoint": target.bucket.endpoint,
            "outcome": outcome, "lock_mode": target.cfg.lock_mode, "retention_days": target.cfg.retention_days}
    if json_output:
        print_json(data)
    else:
        verb = "created" if outcome == "created" else "checked existing"
        out.print(f"{verb} bucket '{target.cfg.bucket}' at {target.bucket.endpoint}: versioning Enabled, "
                  f"Object Lock on; objects will be locked {target.cfg.lock_mode} for "
                  f"{target.cfg.retention_days:g} days")


@s3_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="S3 target name.")],
    json_output: JsonOpt = False,
) -> None:
    """What the catalog knows about an S3 copy (no network): objects, lock range, endpoint quirks."""
    from backupctl.catalog import open_catalog
    from backupctl.catalog import s3 as s3_rows

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        info = {"target": name, "location": target.location, **s3_rows.summary(catalog, name, target.location)}
    if json_output:
        print_json(info)
        return
    out.print(f"{name} ({info['location']}): {info['objects']} objects ({human_bytes(info['bytes'])}) recorded; "
              f"locks run out between {info['earliest_unlock'] or '-'} and {info['latest_unlock'] or '-'}")
    if info.get("drops_lock_headers"):
        out.print(f"  the endpoint dropped lock headers before; {info['locks_set_afterwards']} locks were set "
                  "afterwards with PutObjectRetention")
    probe = info.get("last_probe")
    if probe:
        verdict = "enforces WORM" if probe.get("enforced") else f"findings: {', '.join(probe['findings'])}"
        out.print(f"  last probe: {verdict}")


@s3_app.command("audit")
def audit(
    name: Annotated[str, typer.Argument(help="S3 target name.")],
    quick: Annotated[bool, typer.Option("--quick", help="Where the server keeps no SHA-256, compare the "
                                        "MD5 ETag instead of reading the bytes.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Read back every recorded object: present, unaltered, locked long enough, nothing unexpected.
    Exits 0 only when all of that holds."""
    from rich.table import Table

    from backupctl.catalog import open_catalog
    from backupctl.repofiles import list_repository
    from backupctl.s3.audit import audit_target

    config = common.load()
    staging = config.staging_repository
    expected = list_repository(staging) if (staging / "config").exists() else None
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        target.prepare(reading=True)
        report = audit_target(target, expected, common.progress(json_output), quick=quick)
    if json_output:
        print_json(report.as_dict())
    else:
        how = f"{report.by_checksum} by server SHA-256, {report.by_reading} by reading"
        if report.by_etag:
            how += f", {report.by_etag} by ETag only"
        out.print(f"{name} ({report.location}): {report.objects} recorded objects checked ({how}), "
                  f"{report.locked} locked as required")
        if report.findings:
            table = Table("finding", "key", "detail", box=None)
            for f in report.findings:
                table.add_row(f.kind, f.key, f.detail)
            out.print(table)
    if not report.ok:
        kinds = sorted({f.kind for f in report.findings})
        raise IntegrityError(f"audit of {name} found {len(report.findings)} problems ({', '.join(kinds)})",
                             hint=f"see the list above; `backupctl s3 recover {name} --as-of TIME` rebuilds "
                                  "the repository from before an attack")


@s3_app.command("recover")
def recover_cmd(
    name: Annotated[str, typer.Argument(help="S3 target name.")],
    to: Annotated[Path, typer.Option("--to", help="New or empty folder for the rebuilt restic repository.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Use the versions current at this time "
                                              "(ISO 8601, UTC unless a zone is given). Default: the versions "
                                              "the catalog recorded.")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run `restic check --read-data` on "
                                        "the result.")] = True,
    json_output: JsonOpt = False,
) -> None:
    """Rebuild a local restic repository from the bucket's object versions, as they were at a time."""
    from backupctl.catalog import open_catalog
    from backupctl.repository import replica_restic
    from backupctl.s3.recover import recover

    when = _parse_time(as_of) if as_of else None
    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        target.prepare(reading=True)
        outcome = recover(target, to, when, common.progress(json_output))
    checked = None
    if check and outcome.files:
        replica_restic(config, to).check(read_data=True)
        checked = "restic check --read-data passed"
    data = {**outcome.as_dict(), "check": checked}
    if json_output:
        print_json(data)
    else:
        out.print(f"recovered {outcome.files} files ({human_bytes(outcome.bytes)}) from {name} "
                  f"({outcome.source}) into {to}" + (f"; {checked}" if checked else ""))
        for rel in outcome.older_versions_used:
            out.print(f"  {rel}: the version current then was damaged; an older intact one was used")
        for line in outcome.skipped:
            out.print(f"  skipped {line}")
    if outcome.skipped:
        raise PartialRun(f"{len(outcome.skipped)} files could not be recovered (listed above)",
                         hint="try an earlier --as-of, or the catalog's versions (no --as-of)")


@s3_app.command("probe")
def probe_cmd(
    name: Annotated[str, typer.Argument(help="S3 target name (its endpoint and credential are probed).")],
    canary_seconds: Annotated[int, typer.Option("--canary-seconds", min=1, max=3600,
                                                help="Lock time of the canary objects; the probe waits this "
                                                     "long to clean them up.")] = 5,
    json_output: JsonOpt = False,
) -> None:
    """Tell whether the endpoint really enforces WORM, on a scratch bucket of its own (never the backups)."""
    from backupctl.catalog import open_catalog
    from backupctl.catalog import s3 as s3_rows
    from backupctl.s3.probe import probe

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        result = probe(target.bucket, canary_seconds=canary_seconds, progress=common.progress(json_output))
        s3_rows.record_probe(catalog, name, target.location, target.bucket.endpoint, result.as_dict())
    if json_output:
        print_json(result.as_dict())
    else:
        out.print(result.text())
    if not result.enforced:
        open_findings = [c.name for c in result.checks if not c.good and not c.compensated]
        raise TargetError(f"{target.bucket.endpoint} does not enforce WORM: {', '.join(open_findings)}",
                         hint="see the list above; do not rely on this endpoint alone for immutable copies")


@s3_app.command("expire")
def expire_cmd(
    name: Annotated[str, typer.Argument(help="S3 target name.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Delete object versions no kept snapshot needs, once their lock has expired (expire credential)."""
    from backupctl.catalog import open_catalog
    from backupctl.s3.expire import expire

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        target = _s3_target(config, name, catalog)
        outcome = expire(target, config.staging_repository, dry_run=dry_run,
                         progress=common.progress(json_output))
    if outcome.refused:
        import backupctl.audit as audit  # a refused delete on locked data is an anomaly rule's match

        audit.record(config, "s3 delete refused", "refused", target=name,
                     details={"refused_deletes": len(outcome.refused)})
    if json_output:
        print_json(outcome.as_dict())
    else:
        out.print(outcome.text())


def s3_server(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")] = 0,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Private key of --tls-cert.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Run the embedded S3 server (moto, in memory) on 127.0.0.1 until Ctrl-C. For trying backupctl and for
    tests only: it keeps nothing on disk and does not enforce COMPLIANCE locks like a production S3."""
    from backupctl.s3.server import EmbeddedS3

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    server = EmbeddedS3(port=port, cert=tls_cert, key=tls_key)
    endpoint = server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if json_output:
            print_json({"endpoint": endpoint, "pid": server.proc.pid if server.proc else None})
        else:
            out.print(f"embedded S3 (moto, in memory; not for keeping backups) at {endpoint}")
            out.print("any access key works (export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x); in "
                      f"backupctl.toml:\n[targets.trial]\ntype = \"s3\"\nendpoint = \"{endpoint}\"\n"
                      'bucket = "pacs-trial"\nretention_days = 1', markup=False)
            out.print("Ctrl-C stops it (and loses everything in it)")
        while not stop.wait(1.0):
            if server.proc is None or server.proc.poll() is not None:
                raise UsageError("the embedded S3 server exited")
    finally:
        server.stop()


def rgw_up(
    base: Annotated[Path, typer.Option("--base", help="Folder for the cluster's state (created).")],
    json_output: JsonOpt = False,
) -> None:
    """Start a single-node Ceph RGW on 127.0.0.1 (memstore: all data in RAM). For tests and probes only.
    Writes BASE/s3-credentials (0600) for `credentials.source = "file"`; never prints the secret key."""
    from backupctl.dev.rgw import RgwCluster
    from backupctl.fsutil import atomic_write_text

    info = RgwCluster(base).up()
    creds = base.absolute() / "s3-credentials"
    atomic_write_text(creds, f"[default]\naws_access_key_id = {info.access_key}\n"
                             f"aws_secret_access_key = {info.secret_key}\n", mode=0o600)
    if json_output:
        print_json({"endpoint": info.endpoint, "credentials_file": str(creds)})
    else:
        out.print(f"Ceph RGW at {info.endpoint}; credentials in {creds}; stop it with "
                  f"`backupctl dev rgw-down --base {base}`")


def rgw_down(
    base: Annotated[Path, typer.Option("--base", help="The folder given to rgw-up.")],
) -> None:
    """Stop the daemons `dev rgw-up` started (by their PID files)."""
    from backupctl.dev.rgw import RgwCluster

    clean = RgwCluster(base).down()
    out.print("stopped" if clean else "stopped (some daemons needed SIGKILL)")
