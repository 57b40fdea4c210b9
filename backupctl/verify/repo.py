"""Level `repo`: `restic check` of the staging repository, reading one rotating slice of its packs.

restic's `--read-data-subset n/N` reads the packs whose id's first byte modulo N equals n-1. Each run
reads the slice read longest ago (never-read slices first), so N runs read every pack that existed at
the first of them: coverage is guaranteed, not left to random percentages. The catalog records when each
slice and each pack was last read and whether it was sound.
"""

from __future__ import annotations

import re
import time

from backupctl.catalog import Catalog
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config
from backupctl.errors import RepositoryLocked, RepositoryNotFound, ResticError, WrongPassword
from backupctl.locking import repository_lock
from backupctl.progress import Progress
from backupctl.repofiles import list_repository
from backupctl.repository import staging_restic
from backupctl.verify.findings import ERROR, WARNING, Finding, LevelResult

_HEX64 = re.compile(r"\b([0-9a-f]{64})\b")
_READ_GROUP = re.compile(r"read group #(\d+) of (\d+) data packs")


def in_slice(pack_id: str, slice_no: int, slices: int) -> bool:
    """restic's own selection for --read-data-subset slice_no/slices (first byte of the id)."""
    return int(pack_id[:2], 16) % slices == slice_no - 1


def damaged_packs(report: str) -> tuple[list[Finding], set[str]]:
    """Findings from restic check's error output: each damaged pack named by its id."""
    findings: list[Finding] = []
    bad: set[str] = set()
    for line in report.splitlines():
        text = line.strip()
        low = text.lower()
        if not text or text.startswith(("Fatal:", "[")) or "temporary cache" in low:
            continue
        if "not referenced in any index" in low:
            m = _HEX64.search(text)
            findings.append(Finding(WARNING, "unindexed-pack", m[1] if m else "?", text[:200]))
            continue
        if "does not match" in low or "damaged" in low or "error" in low or "invalid" in low:
            m = _HEX64.search(text)
            pack = None
            if m and ("pack" in low or "want" in low):
                pack = m[1]
            if pack and pack not in bad:
                bad.add(pack)
                findings.append(Finding(ERROR, "pack-damaged", pack, text[:200]))
            elif not pack:
                findings.append(Finding(ERROR, "repository-error", "staging", text[:200]))
    return findings, bad


def _unindexed(report: str) -> list[Finding]:
    return [f for f in damaged_packs(report)[0] if f.kind == "unindexed-pack"]


def verify_repo(config: Config, catalog: Catalog, run_id: int, progress: Progress,
                slice_no: int | None = None) -> LevelResult:
    """Check the staging repository's structure and read one slice of its packs back."""
    restic = staging_restic(config)
    repo_key = str(config.staging_repository)
    slices = config.settings.verify.read_data_slices
    slice_no = slice_no or verify_rows.next_slice(catalog, repo_key, slices)
    packs = {f.name: f.size for f in list_repository(config.staging_repository) if f.kind == "data"}
    chosen = [p for p in packs if in_slice(p, slice_no, slices)]
    result = LevelResult("repo", "staging", checked=len(chosen), bytes=sum(packs[p] for p in chosen))
    started = time.monotonic()
    failed_run = None
    with repository_lock(config.state_dir, restic.repository, config.settings.staging.lock_wait_seconds), \
            progress.task(f"restic check, read slice {slice_no}/{slices}", total=len(chosen), unit="packs") as task:
        try:
            report = restic.check(read_data_subset=f"{slice_no}/{slices}")
        except (RepositoryLocked, RepositoryNotFound, WrongPassword):
            raise  # nothing was checked: not a finding about the repository's data
        except ResticError as exc:
            failed_run = exc
            report = exc.stderr_tail
        task.update(completed=len(chosen))
    result.seconds = time.monotonic() - started
    # restic check prints its findings only when it fails; its success text says "no errors were found"
    result.findings, bad = damaged_packs(report) if failed_run is not None else (_unindexed(report), set())
    if failed_run is not None and not result.errors:
        result.findings.append(Finding(ERROR, "check-failed", "staging", failed_run.one_line()))
    read_by_restic = _READ_GROUP.search(report)
    verify_rows.record_slice_read(catalog, repo_key, slices, slice_no, run_id, result.ok, chosen, bad)
    reads = verify_rows.pack_reads(catalog, repo_key)
    result.figures = {
        "slice": f"{slice_no}/{slices}", "packs_total": len(packs), "packs_read": len(chosen),
        "packs_read_by_restic": int(read_by_restic[2]) if read_by_restic else None,
        "packs_never_read": sum(1 for p in packs if p not in reads),
        "oldest_pack_read": min((reads[p][0] for p in packs if p in reads), default=None),
    }
    return result
