"""`incident recover --job J --to DIR`: the runbook's restore steps as one command.

1. select: the job's clean snapshots (before the first open suspect one), newest first, from the catalog;
2. fetch: the repository rebuilt from the immutable S3 copy, never from staging (which an attacker may have
   touched): the object versions the catalog recorded at upload, each checked against its name, or, when
   the catalog holds no record (rebuilt from the kit), the versions current before the first suspect
   snapshot (point-in-time);
3. restore + verify: the newest candidate restored into DIR and checked file by file against its signed
   manifest (hash and DICOM parse); a candidate that fails is recorded and the next older one is tried;
4. report: a signed recovery report (JSON and Markdown: timeline, each phase's duration against the RTO,
   what was restored and verified, what was skipped and why) and a post-incident review skeleton.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.actions.restore import check_restore_target
from backupctl.catalog import open_catalog
from backupctl.catalog.db import utcnow
from backupctl.config import Config
from backupctl.drills.report import TRAILER_PREFIX, TRAILER_SUFFIX, _canonical, signed_report
from backupctl.errors import BackupctlError, NoCleanSnapshot, UsageError
from backupctl.fsutil import atomic_write_bytes, atomic_write_text
from backupctl.incident.state import clean_snapshots, incident_dir, open_suspects
from backupctl.progress import NullProgress, Progress
from backupctl.repository import replica_restic
from backupctl.restic import restic_time_ns
from backupctl.signing import signature_document
from backupctl.targets import make_target
from backupctl.verify.restore import scratch_root
from backupctl.verify.restored import verify_restored_tree
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, signing_key, trusted_key


@dataclass
class Phase:
    name: str
    started: str
    seconds: float
    detail: str


@dataclass
class Recovery:
    job: str
    copy: str
    to: str
    rto_seconds: float
    started: str = field(default_factory=utcnow)
    finished: str | None = None
    phases: list[Phase] = field(default_factory=list)
    snapshot: str | None = None
    snapshot_time: str | None = None
    first_suspect: dict[str, Any] | None = None
    versions: str = ""
    files: int = 0
    bytes: int = 0
    dicom: int = 0
    studies: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)     # candidates passed over, and why
    reports: dict[str, str] = field(default_factory=dict)
    pacs: dict[str, Any] | None = None      # --to-pacs: url, sent, stored, already, rejected

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def ok(self) -> bool:
        return self.snapshot is not None and not (self.pacs and self.pacs["rejected"])

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, seconds=round(self.seconds, 3), within_rto=self.seconds <= self.rto_seconds,
                    host=socket.gethostname(), kind="backupctl-recovery-report/1")
        return data


class _Clock:
    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery

    def phase(self, name: str, started: float, when: str, detail: str) -> None:
        self.recovery.phases.append(Phase(name, when, round(time.monotonic() - started, 3), detail))


def _s3_target_of(config: Config, job: str, copy: str | None) -> str:
    if copy is not None:
        if config.target(copy).type != "s3":
            raise UsageError(f"target {copy} is not an S3 target", hint="recovery reads the immutable S3 copy")
        return copy
    names = [t for t in config.job(job).targets if config.target(t).type == "s3"]
    if not names:
        raise UsageError(f"job {job} has no S3 target to recover from",
                         hint="restore from a medium with `backupctl restore --from TARGET`")
    return names[0]


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def recover_incident(config: Config, job: str, to: Path, *, copy: str | None = None, rto_minutes: float = 60,
                     report_dir: Path | None = None, progress: Progress | None = None,
                     pacs_url: str | None = None, pacs_credentials: Any = None,
                     pacs_concurrency: int = 4) -> Recovery:
    """Recover into `to`; with `pacs_url`, the verified files are then sent to that Orthanc."""
    from backupctl.s3.recover import recover

    progress = progress or NullProgress()
    job = config.job(job).name
    check_restore_target(to, force=False)
    client = None
    if pacs_url is not None:
        from backupctl.pacs.orthanc import OrthancClient

        client = OrthancClient(pacs_url, pacs_credentials, timeout=120)
        client.system()     # unreachable or refused credentials: say so before anything is fetched
    name = _s3_target_of(config, job, copy)
    rec = Recovery(job, name, str(to), rto_minutes * 60)
    clock = _Clock(rec)

    t, when = time.monotonic(), utcnow()
    with open_catalog(config.catalog_path) as catalog:
        candidates = list(reversed(clean_snapshots(catalog, job)))
        suspects = open_suspects(catalog, job)
        first = min(suspects, key=lambda r: r["time"]) if suspects else None
        rec.first_suspect = {"snapshot": first["id"], "time": first["time"]} if first else None
        target = make_target(config, name, catalog)
        target.prepare(reading=True)    # type: ignore[call-arg]
        recorded = bool(target.recorded())   # type: ignore[attr-defined]
    if not candidates:
        raise NoCleanSnapshot(f"job {job}: the catalog knows no snapshot before the first suspect one",
                              hint="rebuild the catalog from the S3 copy (`catalog rebuild --from TARGET`)")
    clock.phase("select", t, when, f"{len(candidates)} clean candidates"
                + (f", before suspect {first['short_id']}" if first else ", no suspect snapshot open"))

    scratch = Path(tempfile.mkdtemp(prefix="incident-", dir=scratch_root(config)))
    try:
        t, when = time.monotonic(), utcnow()
        as_of = None
        if not recorded:
            ns = restic_time_ns(first["time"]) if first else None
            as_of = datetime.fromtimestamp(ns / 1e9, UTC) if ns else datetime.now(UTC)
        with open_catalog(config.catalog_path) as catalog:
            target = make_target(config, name, catalog)
            fetched = recover(target, scratch / "repository", as_of, progress)   # type: ignore[arg-type]
        rec.versions = ("the versions the catalog recorded at upload" if as_of is None
                        else f"the versions current at {as_of.isoformat()} (point in time)")
        clock.phase("fetch", t, when, f"{fetched.files} repository files from {name} ({rec.versions})"
                    + (f"; {len(fetched.skipped)} could not be fetched" if fetched.skipped else ""))
        restic = replica_restic(config, fetched.to)
        trusted = trusted_key(config)
        held = {s.id for s in restic.snapshots()}
        to.mkdir(parents=True, exist_ok=True)
        for cand in candidates:
            if cand["id"] not in held:
                rec.skipped.append({"snapshot": cand["id"], "why": f"not in the copy fetched from {name}"})
                continue
            t, when = time.monotonic(), utcnow()
            try:
                snap = restic.snapshot(cand["id"])
                got = read_snapshot_manifest(restic, snap, trusted)
                restic.restore(snap.id, to, progress=progress)
            except BackupctlError as exc:
                rec.skipped.append({"snapshot": cand["id"], "why": exc.one_line()})
                _empty(to)
                continue
            clock.phase("restore", t, when, f"snapshot {snap.short_id} into {to}")
            t, when = time.monotonic(), utcnow()
            tree = verify_restored_tree(to, got.manifest, decode=config.settings.verify.decode_sample,
                                        workers=config.settings.verify.workers, progress=progress)
            if not tree.ok:
                errors = [f for f in tree.findings if f.severity == "error"]
                clock.phase("verify", t, when, f"snapshot {snap.short_id}: {len(errors)} problems")
                rec.skipped.append({"snapshot": cand["id"], "why": f"{len(errors)} files failed verification "
                                                                   f"(first: {errors[0].kind} {errors[0].subject})"})
                _empty(to)
                continue
            clock.phase("verify", t, when, f"{tree.files} files hashed, {tree.dicom} DICOM parsed, "
                        f"{tree.decoded} decoded, {len(tree.studies)} studies; manifest signature checked")
            rec.snapshot, rec.snapshot_time = snap.id, snap.time
            rec.files, rec.bytes, rec.dicom, rec.studies = tree.files, tree.bytes, tree.dicom, len(tree.studies)
            break
        if client is not None and rec.snapshot is not None:
            _send(client, to, rec, clock, pacs_concurrency, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rec.finished = utcnow()
    write_reports(config, rec, report_dir)
    return rec


def _send(client: Any, to: Path, rec: Recovery, clock: _Clock, concurrency: int, progress: Progress) -> None:
    """Only verified files reach the PACS: they are sent from the folder the verification read."""
    from backupctl.pacs.ingest import iter_dicom_files, send_files

    t, when = time.monotonic(), utcnow()
    files = list(iter_dicom_files(to))
    report = send_files(client, files, total=len(files), concurrency=concurrency, progress=progress)
    rec.pacs = {"url": client.url, "dicom_files": len(files), "sent": report.sent, "stored": report.stored,
                "already": report.already,
                "rejected": [{"file": str(r.path.relative_to(to)), "reason": r.reason} for r in report.rejected]}
    clock.phase("send", t, when, f"{report.sent} of {len(files)} DICOM files to {client.url} ({report.stored} "
                f"stored, {report.already} already there, {len(report.rejected)} refused)")


# reports -------------------------------------------------------------------------------------------------


def render_markdown(data: dict[str, Any]) -> str:
    rto = data["rto_seconds"]
    lines = [
        f"# Recovery report: job {data['job']}", "",
        f"- outcome: **{'recovered' if data['snapshot'] else 'NOT recovered'}**",
        f"- snapshot: {data['snapshot'] or '-'} (taken {data['snapshot_time'] or '-'})",
        f"- first suspect snapshot: {(data['first_suspect'] or {}).get('snapshot', 'none open')}",
        f"- read from: S3 target {data['copy']}, {data['versions'] or '-'}",
        f"- restored to: {data['to']} on {data['host']}"
        + (f"; sent to {data['pacs']['url']}: {data['pacs']['sent']} of {data['pacs']['dicom_files']} DICOM files "
           f"accepted, {len(data['pacs']['rejected'])} refused" if data.get("pacs") else ""),
        f"- verified: {data['files']} files ({data['bytes']} bytes), {data['dicom']} DICOM, {data['studies']} studies",
        f"- total: {data['seconds']:.1f} s against an RTO of {rto:.0f} s: "
        f"**{'within' if data['within_rto'] else 'OVER'}**",
        "", "## Timeline", "", "| phase | started | seconds | share of RTO | detail |", "|---|---|---|---|---|",
    ]
    lines += [f"| {p['name']} | {p['started']} | {p['seconds']:.1f} | {p['seconds'] / rto:.0%} | {p['detail']} |"
              for p in data["phases"]]
    lines += ["", "## Skipped", ""]
    lines += [f"- {s['snapshot'][:8]}: {s['why']}" for s in data["skipped"]] or ["- nothing"]
    return "\n".join(lines) + "\n"


def review_skeleton(data: dict[str, Any]) -> str:
    timeline = "\n".join(f"| {p['started']} | {p['name']} | {p['detail']} |" for p in data["phases"])
    return f"""# Post-incident review: job {data['job']}

Prepared from the recovery report of {data['started']} (signed, beside this file). Fill in every section;
the review is finished when each action item has an owner and a date.

## Summary
- What happened (one paragraph):
- Detected at / by (suspect snapshot {(data['first_suspect'] or {}).get('snapshot', '-')}, alert, user report):
- Recovered from snapshot {data['snapshot'] or '-'} taken {data['snapshot_time'] or '-'};
  recovery took {data['seconds']:.0f} s against an RTO of {data['rto_seconds']:.0f} s.
- Data lost (between the clean snapshot and the attack):

## Timeline
| time (UTC) | event | detail |
|---|---|---|
| | first sign of the attack | |
| | detection | |
| | containment (`incident freeze`) | |
{timeline}
| | service restored | |

## Root cause
- Initial access:
- Why it was not stopped earlier:

## Controls
| control | held? | evidence |
|---|---|---|
| suspect-snapshot detection at backup time | | |
| immutable S3 copy (Object Lock, legal hold) | | |
| offline media | | |
| separation of the writer, expiry and legal-hold credentials | | |
| restore drills (last one before the incident) | | |
| recovery kit available and passphrase known | | |

## Action items
| action | owner | due |
|---|---|---|
| | | |
"""


def write_reports(config: Config, rec: Recovery, report_dir: Path | None) -> None:
    folder = report_dir or incident_dir(config) / f"recovery-{rec.started.replace(':', '')[:17]}"
    folder.mkdir(parents=True, exist_ok=True)
    key = signing_key(config)
    rec.reports = {"json": str(folder / "recovery-report.json"), "md": str(folder / "recovery-report.md"),
                   "review": str(folder / "post-incident-review.md")}
    data = rec.as_dict()
    atomic_write_bytes(folder / "recovery-report.json", signed_report(data, "json", key))
    body = render_markdown(data).encode()
    atomic_write_bytes(folder / "recovery-report.md",
                       body + TRAILER_PREFIX + _canonical(signature_document(key, body)) + TRAILER_SUFFIX)
    atomic_write_text(folder / "post-incident-review.md", review_skeleton(data))
