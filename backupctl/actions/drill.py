"""`drill run NAME`: restore a snapshot (or a sample of its studies) from one copy, prove it, time it.

Phases, each timed with a monotonic clock, one after the other: fetch (a remote copy is brought to scratch),
select (snapshot, signed manifest, studies), restore (restic; the files it has completed are checked
meanwhile), verify (the checks left when restic ends: SHA-256 against the signed manifest and, depth
'dicom'/'pacs', the full DICOM parse, each file read once), ingest and query (depth 'pacs'), clean-up.
The time to the first verified study is when the first study had every file restored and proven intact:
what a radiologist waits for while the archive comes back.

Everything is recorded in the catalog as a run of kind 'drill' (see `catalog.drills`). A failed check or a
missed RTO makes the drill fail (the CLI exits 1) but is not an exception: the drill still runs what it
can and says what failed. Scratch space is always removed, also on failure and Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import random
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from backupctl.actions.restore import restic_for_copy, tree_size
from backupctl.catalog import Catalog, open_catalog
from backupctl.catalog import drills as drill_rows
from backupctl.catalog import runs as run_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog import verify as verify_rows
from backupctl.config import Config, Drill
from backupctl.drills import pacs_step
from backupctl.drills.model import (
    ERROR,
    WARNING,
    Check,
    DrillResult,
    PhaseClock,
    Problem,
    StudyResult,
    duration_text,
)
from backupctl.drills.scratch import make_scratch, remove_scratch, remove_stale_scratch, scratch_root
from backupctl.drills.select import Scope, SelectionError, choose_scope, choose_snapshot, snapshot_datetime
from backupctl.errors import BackupctlError, IntegrityError, Interrupted, ResticError, StopDrill, Terminated, UsageError
from backupctl.manifest import DICOM, Entry, Manifest
from backupctl.progress import NullProgress, Progress
from backupctl.repository import password_source
from backupctl.restic import Restic, Snapshot, job_tag
from backupctl.signing import VerifyKey
from backupctl.units import zoned_time
from backupctl.verify.alongside import AlongsideChecker, Outcome
from backupctl.verify.findings import Finding
from backupctl.verify.restore import include_patterns
from backupctl.verify.restored import decode_set, restored_path
from backupctl.verify.snapshot_manifest import SnapshotManifest, read_snapshot_manifest, trusted_key

log = logging.getLogger("backupctl.drills")

MAX_PATTERNS_PER_CALL = 1000         # restic argv stays far below the kernel's limit
_SNAPSHOT_NAME = re.compile(r"^[0-9a-f]{64}$")   # restic's temporary files in snapshots/ are not snapshots
SPACE_MARGIN_BYTES = 64 << 20        # room kept free beyond what the restore needs


# what reading the copy may raise that is a finding of the drill, not a fault of the drill itself
_ReadFailure = (IntegrityError, ResticError)


@dataclass
class _Drilling:
    """The state of one drill while it runs."""

    config: Config
    catalog: Catalog
    drill: Drill
    result: DrillResult
    clock: PhaseClock
    scratch: Path                        # the scratch root until the drill's own folder is made
    rng: random.Random
    progress: Progress
    trusted: VerifyKey
    restic: Restic | None = None
    snapshot: Snapshot | None = None
    manifest: Manifest | None = None
    scope: Scope | None = None
    changed: frozenset[str] = frozenset()   # files the backup saw change while it ran (catalog, if any)
    reserved: int = 0                     # bytes the space check counted before the manifest was read

    @property
    def target(self) -> Path:
        return self.scratch / "restore"

    def check(self, name: str, ok: bool, detail: str, checked: int = 0, failed: int = 0) -> None:
        self.result.add_check(Check(name, "pass" if ok else "fail", checked, failed, detail))
        if not ok and name in ("copy", "snapshot", "manifest", "scope", "space"):
            raise StopDrill(detail)


def run_drill(config: Config, name: str, progress: Progress | None = None, *, seed: int | None = None,
              job: str | None = None) -> DrillResult:
    """Run drill `name` (on `job`'s snapshots instead of the drill's own job, when given); return what it
    found (also recorded). Raises only for bad input (before anything is recorded) and for an interruption
    (recorded as interrupted)."""
    progress = progress or NullProgress()
    drill = config.drill(name)
    if job is not None and job != drill.job:
        drill = drill.model_copy(update={"job": job})
    config.job(drill.job)
    _check_depth_available(drill)
    password_source(config).restic_env()   # a missing password file is bad input, said before starting
    root = scratch_root(config, drill)
    trusted = trusted_key(config)       # no public key, no verified drill: refuse before starting
    seed = seed if seed is not None else drill.seed if drill.seed is not None else secrets.randbits(31)
    with open_catalog(config.catalog_path) as catalog:
        for stale in remove_stale_scratch(root):
            log.warning("removed scratch %s left by a drill that was killed", stale)
        run_id = run_rows.start_run(catalog, drill.job, kind="drill")
        result = DrillResult(run_id=run_id, name=drill.name, job=drill.job, copy=drill.copy_from,
                             snapshot_rule=drill.snapshot, scope=drill.scope, depth=drill.depth, seed=seed,
                             rto_seconds=drill.rto_minutes * 60, rpo_seconds=rpo_seconds(config, drill))
        drill_rows.start_drill(catalog, result)
        state = _Drilling(config, catalog, drill, result, PhaseClock(), root, random.Random(seed), progress,
                          trusted)
        _run_recorded(state)
    return result


def _check_depth_available(drill: Drill) -> None:
    if drill.depth == "pacs" and pacs_step.factory() is None:
        raise UsageError(f"drill {drill.name}: depth 'pacs' needs the PACS capability, which this installation "
                         "lacks", hint="use depth 'dicom', or install the PACS (Orthanc) integration")


def _run_recorded(state: _Drilling) -> None:
    """Run the phases; whatever happens, clean up, then record the outcome."""
    result, catalog = state.result, state.catalog
    interrupted = False
    try:
        # created inside the try: a signal arriving just after still finds the folder and removes it
        state.scratch = make_scratch(state.scratch, result.run_id)
        result.scratch = str(state.scratch)
        _run_phases(state)
    except StopDrill:
        pass
    except (KeyboardInterrupt, Terminated, Interrupted):
        interrupted = True
        result.error = "interrupted; scratch removed, nothing else was touched"
    except BackupctlError as exc:
        result.error = exc.one_line()
    except Exception as exc:
        result.error = f"internal error: {exc!r}"
        raise
    finally:
        _clean_up(state)
        _finish(state)
        result.status = "interrupted" if interrupted else "success" if result.passed else "failed"
        drill_rows.save_drill(catalog, result)
        run_rows.finish_run(catalog, result.run_id, result.status, run_rows.RunFigures(
            bytes=result.bytes, files=result.files, seconds=state.clock.elapsed(),
            snapshot_id=result.snapshot_id), error=result.error or _failure_line(result))
    if interrupted:
        raise Interrupted(f"drill {result.name} interrupted; its scratch space was removed "
                          f"(run {result.run_id} recorded as interrupted)")


def _failure_line(result: DrillResult) -> str | None:
    return None if result.passed else "; ".join(result.first_failures()) or "failed"


def _clean_up(state: _Drilling) -> None:
    with state.clock.phase("cleanup"):
        # before make_scratch ran, state.scratch is the root: never remove that
        state.result.scratch_removed = remove_scratch(state.scratch) if state.result.scratch else True
    if not state.result.scratch_removed:
        state.clock.fail("cleanup", f"could not remove {state.scratch}")


# the phases ------------------------------------------------------------------------------------------------


def _run_phases(state: _Drilling) -> None:
    _fetch(state)
    # the checks' workers start first: they load pydicom while the snapshot is chosen and restic starts
    checker = AlongsideChecker(state.target, parse=state.drill.depth in ("dicom", "pacs"),
                               workers=state.config.settings.verify.workers or os.cpu_count() or 1,
                               progress=state.progress, now=state.clock.elapsed)
    try:
        checker.start()
        _select(state)
        state.target.mkdir()
        _restore_and_verify(state, checker)
    finally:
        checker.close()
    if state.drill.depth == "pacs":
        _pacs(state)


def _patterns(state: _Drilling, studies: list[str]) -> list[str]:
    """restic --include patterns selecting exactly the files of `studies`."""
    assert state.scope is not None and state.manifest is not None
    return include_patterns(state.manifest, [e for uid in studies for e in state.scope.by_study[uid]])


def _fetch(state: _Drilling) -> None:
    copy = state.drill.copy_from
    remote = copy != "staging" and state.config.target(copy).type != "media"
    fetch_dir = state.scratch / "fetch"
    try:
        if not remote:
            state.restic = restic_for_copy(state.config, copy, fetch_dir)
            state.clock.skip("fetch", f"{copy} is local: restic reads it in place")
        else:
            with state.clock.phase("fetch") as phase:
                fetch_dir.mkdir()
                state.restic = restic_for_copy(state.config, copy, fetch_dir)
                phase.files, phase.bytes = tree_size(fetch_dir)
    except (KeyboardInterrupt, Terminated, Interrupted):
        raise
    except BackupctlError as exc:
        state.clock.fail("fetch", exc.one_line())
        state.check("copy", False, f"the copy '{copy}' cannot be read: {exc.one_line()}")
    state.check("copy", True, f"'{copy}' is readable" + (" (fetched to scratch)" if remote else ""))


def _select(state: _Drilling) -> None:
    """The snapshot, then its signed manifest and the scope (unless they are read alongside the restore,
    see `_reads_manifest_alongside`); then the space check."""
    drill = state.drill
    with state.clock.phase("select") as phase:
        try:
            snapshots, how = _snapshots_in_copy(state)
            snap = choose_snapshot(snapshots, drill.snapshot, state.rng)
        except (SelectionError, IntegrityError, ResticError) as exc:
            phase.status = "failed"
            why = exc.one_line() if isinstance(exc, BackupctlError) else str(exc)
            state.check("snapshot", False, f"{why} (rule '{drill.snapshot}', copy '{drill.copy_from}')")
        state.snapshot = snap
        state.result.snapshot_id, state.result.snapshot_time = snap.id, snap.time
        _record_newest(state, snapshots)
        state.changed = frozenset(verify_rows.changed_during_backup(state.catalog, snap.id))
        state.check("snapshot", True, f"{snap.short_id} of {zoned_time(snap.time, local=False)} "
                                      f"(rule '{drill.snapshot}', {len(snapshots)} in the copy)")
        phase.files, phase.detail = len(snapshots), how
        _prepare_manifest(state)
    _check_space(state, state.scope.bytes if state.scope is not None else state.reserved)


def rpo_seconds(config: Config, drill: Drill) -> float | None:
    """The drill's recovery point objective: its own `rpo_hours`, else its job's."""
    hours = drill.rpo_hours if drill.rpo_hours is not None else config.job(drill.job).rpo_hours
    return None if hours is None else hours * 3600


def _record_newest(state: _Drilling, in_copy: list[Snapshot]) -> None:
    """The job's newest snapshot, in the catalog and in the copy: a copy that lags it restores older data
    than the job has, which the report says even when the drill passed."""
    result = state.result
    if in_copy:
        result.copy_newest_snapshot_time = max(in_copy, key=lambda s: snapshot_datetime(s.time)).time
    known = snapshot_rows.list_snapshots(state.catalog, job=state.drill.job, replicas=False)
    if known:
        newest = max(known, key=lambda r: snapshot_datetime(r["time"]))
        result.job_newest_snapshot_id, result.job_newest_snapshot_time = newest["id"], newest["time"]


def _snapshots_in_copy(state: _Drilling) -> tuple[list[Snapshot], str]:
    """The job's snapshots in the copy, and how they were listed.

    A local copy's `snapshots/` folder names each snapshot by the SHA-256 of its stored file, so what the
    catalog recorded for a name (job, time, paths) is exactly what that file holds: when the catalog knows
    every snapshot in the folder, the folder and the catalog give restic's listing without a restic run
    (each costs its key derivation). Otherwise (a snapshot the catalog does not know, a copy that is not a
    local folder) restic lists them."""
    assert state.restic is not None
    tag = job_tag(state.drill.job)
    try:
        with os.scandir(Path(state.restic.repository) / "snapshots") as listing:
            names = {d.name for d in listing if _SNAPSHOT_NAME.match(d.name)}
    except OSError:
        names = None
    if names is not None:
        known = {r["id"]: r for r in snapshot_rows.list_snapshots(state.catalog, include_forgotten=True,
                                                                 replicas=False)}
        if names <= known.keys():
            rows = [known[n] for n in sorted(names) if tag in known[n]["tags"]]
            return ([Snapshot(r["id"], r["short_id"], r["time"], r["paths"], r["tags"], "") for r in rows],
                    "the copy's snapshots folder, described by the catalog")
    return state.restic.snapshots(tags=[tag]), "listed by restic"


def _prepare_manifest(state: _Drilling) -> None:
    """Read the snapshot's manifest now, unless it can be read alongside the restore."""
    drill = state.drill
    assert state.restic is not None and state.snapshot is not None
    if _reads_manifest_alongside(state):
        return
    try:
        found = read_snapshot_manifest(state.restic, state.snapshot, state.trusted)
    except _ReadFailure as exc:  # altered, signed by another key, missing, or unreadable from the copy
        state.clock.fail("select", exc.one_line())
        state.check("manifest", False, exc.one_line())
    try:
        scope = choose_scope(found.manifest, drill.scope, drill.studies, state.rng)
    except SelectionError as exc:
        state.clock.fail("select", str(exc))
        state.check("scope", False, str(exc))
    _record_manifest(state, found, scope)


def _reads_manifest_alongside(state: _Drilling) -> bool:
    """Whether the manifest is read while restic already restores: for the whole snapshot (restic needs no
    pattern from it) when the catalog recorded the snapshot's size at backup (the space check needs it
    first). The manifest read from the copy still decides everything else. Sets `state.reserved`."""
    assert state.snapshot is not None
    if state.drill.scope != "all":
        return False
    recorded = verify_rows.manifest_of(state.catalog, state.snapshot.id)
    if recorded is None:
        return False
    state.reserved = int(recorded["bytes"])
    return True


def _record_manifest(state: _Drilling, found: SnapshotManifest, scope: Scope) -> None:
    """The manifest and scope checks, once the manifest is read and verified."""
    result, drill = state.result, state.drill
    state.manifest, state.scope = found.manifest, scope
    result.manifest_sha256, result.key_id = found.sha256, found.manifest.key_id
    content = [e for e in found.manifest.entries if e.sha256 is not None]
    result.archive_files, result.archive_bytes = len(content), sum(e.size for e in content)
    state.check("manifest", True, f"signature verifies (key {state.trusted.key_id}); "
                                  f"{len(content)} files, {len(found.manifest.studies())} studies")
    what = "the whole snapshot" if scope.whole else f"{len(scope.studies)} stud" + \
        ("y" if len(scope.studies) == 1 else "ies")
    state.check("scope", True, f"{what}: {scope.files} files, {scope.bytes} bytes (scope '{drill.scope}')",
                checked=len(scope.studies))


def _check_space(state: _Drilling, nbytes: int) -> None:
    needed = nbytes + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(state.scratch).free
    state.check("space", free >= needed, f"{free >> 20} MiB free in {state.scratch.parent}, "
                                         f"{needed >> 20} MiB needed")


def _restore_and_verify(state: _Drilling, checker: AlongsideChecker) -> None:
    """Restore the scope with restic and check every file against the signed manifest while it does: files
    restic has completed are checked as it goes, the rest once it ends (see `verify.alongside`)."""
    clock = state.clock
    reader: _ManifestReader | None = None
    try:
        with clock.phase("restore") as phase:
            if state.manifest is None:
                reader = _ManifestReader(state, checker)
                reader.start()
            else:
                _provide(state, checker)
            _restore(state, reader)
            if reader is not None:
                reader.join()
                if reader.failure is not None:
                    phase.status, phase.detail = "failed", "stopped: " + reader.failure[1]
        if reader is not None:
            _record_read_alongside(state, reader)
        _record_restore_check(state)
        with clock.phase("verify") as phase:
            assert state.scope is not None and state.manifest is not None
            entries, scope = state.scope.entries, state.scope
            listed = {e.path for e in state.manifest.entries} if scope.whole else None
            outcome = checker.finish(unlisted_from=listed)
            # the phase is the time after restic ended; what was checked while it restored is in the restore
            phase.files = sum(1 for e in entries if e.sha256 is not None) - outcome.early_files
            phase.bytes = sum(e.size for e in entries if e.sha256 is not None) - outcome.early_bytes
            phase.detail = f"{outcome.early_files} file(s) checked while restic restored, {phase.files} after"
    finally:
        if reader is not None:
            reader.join()
    restored = clock.phases["restore"]
    restored.files, restored.bytes = outcome.restored_files, outcome.restored_bytes
    _record_checks(state, entries, outcome, checker.parse)


def _provide(state: _Drilling, checker: AlongsideChecker) -> None:
    assert state.scope is not None
    parse = state.drill.depth in ("dicom", "pacs")
    decode = decode_set(state.scope.entries, state.drill.decode_files, state.result.seed) if parse else set()
    checker.provide(state.scope.entries, decode, state.changed)


class _ManifestReader(threading.Thread):
    """Reads and verifies the snapshot's manifest from the copy while restic restores the whole snapshot
    (restic's start, key derivation, runs on one core: the other one reads the manifest), then gives the
    checker its files. A manifest that does not verify, or a snapshot larger than the catalog said, stops
    restic: nothing restored could be vouched for, or the scratch space may not hold it."""

    def __init__(self, state: _Drilling, checker: AlongsideChecker) -> None:
        super().__init__(name="backupctl-drill-manifest", daemon=True)
        self.state, self.checker = state, checker
        self.stop_restore = threading.Event()
        self.found: SnapshotManifest | None = None
        self.scope: Scope | None = None
        self.failure: tuple[str, str] | None = None      # (check, detail)

    def run(self) -> None:
        state = self.state
        assert state.restic is not None and state.snapshot is not None
        try:
            self.found = read_snapshot_manifest(state.restic, state.snapshot, state.trusted)
            self.scope = choose_scope(self.found.manifest, state.drill.scope, state.drill.studies, state.rng)
        except _ReadFailure as exc:
            self._fail("manifest", exc.one_line())
            return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread, which decides
            self._fail("manifest", f"the manifest could not be read: {exc!r}")
            return
        beyond = self.scope.bytes - state.reserved
        free = shutil.disk_usage(state.scratch).free
        if beyond > 0 and free < beyond + SPACE_MARGIN_BYTES:
            self._fail("space", f"the snapshot holds {self.scope.bytes >> 20} MiB, {beyond >> 20} MiB more than "
                                f"the catalog recorded; {free >> 20} MiB left free in {state.scratch.parent}")
            return
        state.manifest, state.scope = self.found.manifest, self.scope
        _provide(state, self.checker)

    def _fail(self, check: str, detail: str) -> None:
        self.failure = (check, detail)
        self.stop_restore.set()


def _record_read_alongside(state: _Drilling, reader: _ManifestReader) -> None:
    if reader.failure is not None:
        check, detail = reader.failure
        state.check(check, False, detail)     # stops the drill
    assert reader.found is not None and reader.scope is not None
    _record_manifest(state, reader.found, reader.scope)


def _restore(state: _Drilling, reader: _ManifestReader | None) -> None:
    """restic restores the whole snapshot, or the files of the scope's studies (in calls of at most
    MAX_PATTERNS_PER_CALL patterns); a file restic cannot restore is recorded, not raised. `reader`: the
    manifest being read meanwhile, which may stop restic."""
    assert state.restic is not None and state.snapshot is not None
    includes = [] if state.scope is None or state.scope.whole else _patterns(state, state.scope.studies)
    calls = [includes[i:i + MAX_PATTERNS_PER_CALL] for i in range(0, len(includes), MAX_PATTERNS_PER_CALL)] or [[]]
    for chunk in calls:
        try:
            failed = state.restic.restore(state.snapshot.id, state.target, includes=chunk, keep_going=True,
                                          progress=state.progress,
                                          stop=reader.stop_restore if reader is not None else None)
        except Interrupted:
            if reader is not None and reader.stop_restore.is_set():
                return   # stopped because of what the manifest said: recorded by the caller
            raise
        for path, error in failed:
            state.result.problems.append(Problem("restore", ERROR, "restore-error", path, error))


def _record_restore_check(state: _Drilling) -> None:
    errors = [p for p in state.result.problems if p.check == "restore"]
    state.result.add_check(Check("restore", "fail" if errors else "pass", failed=len(errors),
                                 detail=f"restic could not restore {len(errors)} file(s)" if errors
                                 else "restic restored every file it was asked for"))


def _record_checks(state: _Drilling, entries: list[Entry], outcome: Outcome, parse: bool) -> None:
    """The 'hash' and 'dicom' checks, and the studies, from each file's check."""
    hashed = [f for c in outcome.checks for f in c.hash] + outcome.unlisted
    _add_findings(state, "hash", hashed, checked=len(entries), outside={f.subject for f in outcome.unlisted})
    content = [(e, c) for e, c in zip(entries, outcome.checks, strict=True) if e.sha256 is not None]
    state.result.files, state.result.bytes = len(content), sum(e.size for e, _ in content)
    if parse:
        _add_findings(state, "dicom", [f for c in outcome.checks for f in c.dicom],
                      checked=sum(1 for c in outcome.checks if c.parsed), decoding=_decoding(outcome))
    _record_studies(state, entries, outcome, record_reads=parse)


def _decoding(outcome: Outcome) -> str:
    """What the pixel decodes covered, per transfer syntax, and every syntax no installed decoder covers
    (a gap the report names rather than passes over)."""
    decoded: dict[str, int] = {}
    for c in outcome.checks:
        if c.decoded is not None:
            decoded[c.decoded] = decoded.get(c.decoded, 0) + 1
    gaps: dict[str, int] = {}
    for f in (f for c in outcome.checks for f in c.dicom if f.kind == "not-decoded"):
        syntax = f.detail.rsplit("transfer syntax ", 1)[-1]
        gaps[syntax] = gaps.get(syntax, 0) + 1
    words = []
    if decoded:
        words.append(f"pixel data of {sum(decoded.values())} file(s) decoded ("
                     + ", ".join(f"{name} {n}" for name, n in sorted(decoded.items())) + ")")
    if gaps:
        words.append("not decoded, no decoder installed: "
                     + ", ".join(f"{name} ({n} file(s))" for name, n in sorted(gaps.items())))
    return "; ".join(words)


_WHAT = {"hash": "match the signed manifest (SHA-256)", "dicom": "parse as complete DICOM with the manifest's UIDs"}


def _add_findings(state: _Drilling, check: str, findings: list[Finding], checked: int, decoding: str = "",
                  outside: set[str] | frozenset[str] = frozenset()) -> None:
    result = state.result
    for f in findings:
        if f.severity in (ERROR, WARNING):
            result.problems.append(Problem(check, f.severity, f.kind, f.subject, f.detail))
    before = result.check(check)
    total = checked + (before.checked if before else 0)
    mine = [p for p in result.problems if p.check == check]
    errors = sum(1 for p in mine if p.severity == ERROR)
    detail = summary_line(total, mine, _WHAT.get(check, "passed"), outside)
    if decoding:
        detail += f"; {decoding}"
    result.add_check(Check(check, "fail" if errors else "pass", total, errors, detail))


def summary_line(total: int, problems: list[Problem], what: str,
                 outside: set[str] | frozenset[str] = frozenset()) -> str:
    """One line that stays true: how many of the `total` files checked passed clean, then the failed and
    the warned ones, each with their counts by kind. 'all N' only when not one file has a problem.
    `outside`: files a problem names that are not among those checked (restored beyond the manifest)."""
    def by_kind(severity: str) -> tuple[int, str]:
        found = [p for p in problems if p.severity == severity]
        files = len({p.path or f"#{i}" for i, p in enumerate(found)})
        kinds: dict[str, int] = {}
        for p in found:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        return files, ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))

    failed, failed_kinds = by_kind(ERROR)
    warned, warned_kinds = by_kind(WARNING)
    flawed = len({p.path or f"#{i}" for i, p in enumerate(problems)} - set(outside))
    clean = max(0, total - flawed)
    if not problems:
        return f"all {total} file(s) {what}"
    words = []
    if failed:
        words.append(f"{failed} of {total} file(s) failed: {failed_kinds}")
    if warned:
        words.append(f"{warned} file(s) with warnings: {warned_kinds}")
    return f"{clean} of {total} file(s) {what}; " + "; ".join(words)


def _record_studies(state: _Drilling, entries: list[Entry], outcome: Outcome, record_reads: bool) -> None:
    """Each study's outcome and when its last file was verified; the first study verified is the drill's
    time to the first verified study (what a radiologist waits for while the archive comes back)."""
    assert state.scope is not None
    scope, result = state.scope, state.result
    ok: dict[str, bool] = dict.fromkeys(scope.studies, True)
    done: dict[str, float] = dict.fromkeys(scope.studies, 0.0)
    for e, check, at in zip(entries, outcome.checks, outcome.at, strict=True):
        if e.kind == DICOM and e.study in ok:
            ok[e.study] = ok[e.study] and not any(f.severity == ERROR for f in check.findings)
            done[e.study] = max(done[e.study], at)
    if record_reads and state.snapshot is not None:
        # a drill's full check counts for coverage like `verify restore` (when each study was last proven)
        verify_rows.record_study_reads(state.catalog, ok, state.snapshot.id, result.run_id)
    verified = sorted((at, uid) for uid, at in done.items() if ok[uid])
    if verified:
        result.first_study_seconds, result.first_study_uid = verified[0]
    for uid in scope.studies:
        # a whole-snapshot drill keeps the first study and the failed ones, not every study of the archive
        if scope.whole and ok[uid] and uid != result.first_study_uid:
            continue
        files = scope.by_study[uid]
        result.studies.append(StudyResult(uid, len(files), sum(e.size for e in files), ok[uid],
                                          done[uid] if ok[uid] else None))


def _pacs(state: _Drilling) -> None:
    """Depth 'pacs': ingest the restored DICOM files into a scratch PACS, then query every study."""
    assert state.scope is not None
    make = pacs_step.factory()
    assert make is not None
    files = [(e.path, restored_path(state.target, e.path)) for e in state.scope.entries if e.kind == DICOM]
    studies = {uid: len(entries) for uid, entries in state.scope.by_study.items()}
    pacs = make(state.config, state.scratch / "pacs")
    try:
        for part, run in (("ingest", lambda: pacs.ingest(files, state.progress)),
                          ("query", lambda: pacs.query(studies, state.progress))):
            with state.clock.phase(part) as phase:
                outcome = run()
                phase.files, phase.bytes = outcome.files or outcome.checked, outcome.bytes
            _add_findings(state, part, [Finding(f.severity, f.kind, f.path or "-", f.detail)
                                        for f in outcome.findings], outcome.checked)
    finally:
        pacs.close()


# the end -----------------------------------------------------------------------------------------------------


def _finish(state: _Drilling) -> None:
    """Skip what did not run, measure recovery time against the RTO, extrapolate a sample."""
    result, clock, drill = state.result, state.clock, state.drill
    if drill.depth != "pacs":
        clock.skip("ingest", f"depth '{drill.depth}'")
        clock.skip("query", f"depth '{drill.depth}'")
    result.phases = list(clock.phases.values())
    verified = [p for p in ("verify", "ingest", "query") if clock.phases[p].status == "ok"]
    if result.error or not verified or state.scope is None:
        return
    result.recovery_seconds = clock.recovery_ended
    if not state.scope.whole:
        result.estimated_full_seconds = _extrapolate(state)
    sampled = drill.scope.startswith("sample:")
    result.rto_basis = "estimate" if sampled else "measured"
    compared = result.estimated_full_seconds if sampled else result.recovery_seconds
    if compared is None:
        return
    result.rto_met = compared <= result.rto_seconds
    how = "estimated for the whole snapshot" if sampled else "measured"
    result.add_check(Check("rto", "pass" if result.rto_met else "fail", 1, int(not result.rto_met),
                           f"recovery {duration_text(compared)} ({how}), target {duration_text(result.rto_seconds)}"))


def _extrapolate(state: _Drilling) -> float | None:
    """The whole snapshot's recovery time from the sample's measured throughput, phase by phase: restore and
    verify (the checks run during both) scale with bytes, ingest and query with DICOM files; fetch and select
    happen once either way."""
    scope, manifest, phases = state.scope, state.manifest, state.clock.phases
    assert scope is not None and manifest is not None
    if not scope.bytes or not scope.files:
        return None
    all_dicom = sum(1 for e in manifest.entries if e.kind == DICOM)
    sample_dicom = sum(1 for e in scope.entries if e.kind == DICOM) or 1
    by_bytes = (state.result.archive_bytes or 0) / scope.bytes
    by_dicom = all_dicom / sample_dicom
    once = phases["fetch"].seconds + phases["select"].seconds
    scaled = (phases["restore"].seconds + phases["verify"].seconds) * by_bytes + \
        (phases["ingest"].seconds + phases["query"].seconds) * by_dicom
    return once + scaled


def describe_seed(result: DrillResult) -> str:
    return f"rerun with `backupctl drill run {result.name} --seed {result.seed}` to repeat its choices"
