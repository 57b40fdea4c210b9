"""`audit verify`: the chain, the signed checkpoints (local and in S3), and the first broken record named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backupctl.audit.checkpoint import Checkpoint, compare, latest_s3_checkpoint, local_checkpoint
from backupctl.audit.log import log_path, verify_chain
from backupctl.errors import BackupctlError

if TYPE_CHECKING:
    from backupctl.config import Config


@dataclass
class AuditVerifyReport:
    log: str
    records: int = 0
    last_hash: str = ""
    chain_ok: bool = True
    broken: str | None = None            # the first problem, naming the record
    broken_record: int | None = None
    local_checkpoint: dict[str, Any] | None = None
    s3_checkpoint: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "log": self.log, "records": self.records, "last_hash": self.last_hash,
                "chain_ok": self.chain_ok, "broken": self.broken, "broken_record": self.broken_record,
                "local_checkpoint": self.local_checkpoint, "s3_checkpoint": self.s3_checkpoint,
                "problems": self.problems, "warnings": self.warnings}


def _checkpoint_dict(cp: Checkpoint) -> dict[str, Any]:
    return {"count": cp.count, "last_hash": cp.last_hash, "time": cp.time, "key_id": cp.key_id,
            "where": cp.where, "signature_ok": True}


def verify_audit(config: Config, *, use_s3: bool = True, every_checkpoint: bool = False) -> AuditVerifyReport:
    """The chain, then the checkpoints. The latest S3 checkpoint covers every record before it (through the
    chain); `every_checkpoint` also holds the log against each older one, which catches a log rewritten
    and re-chained by someone who could also sign (the key lives on the host)."""
    path = log_path(config.state_dir)
    chain = verify_chain(path)
    report = AuditVerifyReport(log=str(path), records=chain.count, last_hash=chain.last_hash, chain_ok=chain.ok)
    if not chain.ok:
        report.broken, report.broken_record = chain.broken, chain.broken_seq
        report.problems.append(chain.broken or "")
    from backupctl.signing import load_verify_key

    try:
        trusted = load_verify_key(config.signing_key)
    except BackupctlError as exc:
        report.problems.append(f"checkpoints not checked: {exc.one_line()}")
        return report
    local = local_checkpoint(config)
    if local is not None:
        try:
            cp = Checkpoint.from_document(local, trusted, "local")
        except (BackupctlError, KeyError, TypeError, ValueError) as exc:
            text = exc.one_line() if isinstance(exc, BackupctlError) else f"malformed ({exc})"
            report.problems.append(f"local audit checkpoint: {text}")
            report.local_checkpoint = {"signature_ok": False}
        else:
            report.local_checkpoint = _checkpoint_dict(cp)
            _hold_against(report, chain, cp)
    if config.settings.audit.checkpoint_target is None:
        report.warnings.append("no [audit] checkpoint_target: a cut tail is caught only against the local "
                               "checkpoint, which whoever cut the log could remove too")
    elif use_s3:
        try:
            found = latest_s3_checkpoint(config, every_one=every_checkpoint)
        except BackupctlError as exc:
            report.problems.append(f"S3 checkpoints: {exc.one_line()}")
            return report
        if found.checkpoint is None:
            report.problems.append("no audit checkpoint in the S3 bucket (none written yet, or the wrong bucket)")
        else:
            report.s3_checkpoint = {**_checkpoint_dict(found.checkpoint), "versions": found.versions,
                                    "checked": len(found.checked), "hidden_by_delete_markers": found.hidden}
            for cp in found.checked:
                _hold_against(report, chain, cp)
        if found.hidden:
            report.problems.append(f"{found.hidden} audit checkpoint(s) in S3 hidden behind delete markers: "
                                   "someone tried to remove them")
    return report


def _hold_against(report: AuditVerifyReport, chain: Any, cp: Checkpoint) -> None:
    problem = compare(chain, cp)
    if problem is None:
        return
    report.problems.append(problem)
    if report.broken is None:
        report.broken = problem
        report.broken_record = min(chain.count, cp.count) + 1 if cp.count > chain.count else cp.count
