"""Drill depth `pacs`: prove the restored studies are back in a PACS and queryable, not only files on disk.

`run_pacs_drill(restored, workdir, expected=...)` starts a throw-away Orthanc (free ports, own config and
folders, authentication on, storage cache 0, DICOM on for the C-FIND check with called-AET checks), then:

- start:  on the restored Orthanc index + storage when the snapshot is an `orthanc` source copy (it has a
          `backupctl-orthanc.json` marker), else an empty instance;
- ingest: (files mode) every restored DICOM file over REST, concurrently, each answer's Status checked;
- query:  `/statistics`; per study via REST (`/tools/find`, `/studies/{id}/instances`) the set of SOP
          Instance UIDs against the expected set; per study via dcmtk `findscu` (an independent DICOM
          client) the number of instances (`NumberOfStudyRelatedInstances`), counting responses since
          findscu exits 0 even when the association is rejected;
- verify: Orthanc's MD5 check of every stored attachment (read from disk: cache 0), and a sample of
          downloaded instances hashed against the expected hashes;
- stop:   always, also on errors and Ctrl+C; the result says what was found and how long each phase took.

What is expected comes from the snapshot's manifest (the drill runner passes it); without one it is read
from the restored files, with a warning that a file missing from the restore cannot then be noticed.
Nothing here raises for a failed check: findings say what is wrong, naming the study.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupctl import process
from backupctl.errors import BackupctlError, OrthancError, OrthancHttpError
from backupctl.pacs.ingest import dataset_sha256, iter_dicom_files, send_files
from backupctl.pacs.orthanc import OrthancClient, OrthancProcess, find_dcmtk, find_orthanc
from backupctl.pacs.source import MARKER
from backupctl.progress import NullProgress, Progress

log = logging.getLogger("backupctl.pacs.drill")

ERROR, WARNING = "error", "warning"
DRILL_AET = "BACKUPCTLDRILL"
SCU_AET = "BACKUPCTLSCU"
MAX_FINDINGS_PER_KIND = 50


# what is expected --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedInstance:
    sop_uid: str
    study_uid: str
    series_uid: str | None = None
    patient: str | None = None          # an identifier of the patient (the manifest's is a keyed hash)
    sha256: str | None = None           # of the whole file
    dataset_sha256: str | None = None   # of the dataset without file meta
    path: str | None = None


@dataclass
class ExpectedArchive:
    instances: dict[str, ExpectedInstance] = field(default_factory=dict)
    source: str = "manifest"            # manifest | restored-files

    def add(self, inst: ExpectedInstance) -> None:
        self.instances[inst.sop_uid] = inst

    def studies(self) -> dict[str, dict[str, ExpectedInstance]]:
        out: dict[str, dict[str, ExpectedInstance]] = {}
        for inst in self.instances.values():
            out.setdefault(inst.study_uid, {})[inst.sop_uid] = inst
        return out

    def counts(self) -> dict[str, int]:
        values = self.instances.values()
        return {"patients": len({i.patient for i in values if i.patient}),
                "studies": len({i.study_uid for i in values}),
                "series": len({i.series_uid for i in values if i.series_uid}),
                "instances": len(self.instances)}


def expected_from_files(paths: Iterable[Path], source: str = "restored-files") -> ExpectedArchive:
    """Parse DICOM files for their UIDs and hashes (when there is no manifest)."""
    from pydicom import dcmread

    expected = ExpectedArchive(source=source)
    for path in paths:
        data = path.read_bytes()
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any unreadable file is simply not expected
            continue
        sop, study = str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
        if not sop or not study:
            continue
        expected.add(ExpectedInstance(sop, study, str(ds.get("SeriesInstanceUID", "")) or None,
                                      str(ds.get("PatientID", "")) or None, hashlib.sha256(data).hexdigest(),
                                      dataset_sha256(data), str(path)))
    return expected


def expected_from_manifest(entries: Iterable[Any]) -> ExpectedArchive:
    """From manifest entries (objects with `.path`, `.sha256` and `.dicom` facts: sop_instance, study,
    series, patient), as the verify capability writes them into every snapshot."""
    expected = ExpectedArchive(source="manifest")
    for e in entries:
        facts = getattr(e, "dicom", None) or {}
        sop, study = facts.get("sop_instance"), facts.get("study")
        if sop and study:
            expected.add(ExpectedInstance(sop, study, facts.get("series"), facts.get("patient"),
                                          getattr(e, "sha256", None), None, getattr(e, "path", None)))
    return expected


# what is found -----------------------------------------------------------------------------------------


@dataclass
class PacsFinding:
    severity: str                 # error | warning
    kind: str                     # missing-study | missing-instances | unexpected | rejected | md5 | ...
    subject: str                  # a study UID (or a file, or '-')
    detail: str = ""


@dataclass
class PacsDrillResult:
    mode: str = "ingest"                           # ingest | orthanc-index
    ok: bool = False
    error: str | None = None                       # the drill could not run (Orthanc missing, ...)
    phases: dict[str, float] = field(default_factory=dict)   # start, ingest, query, verify, stop (seconds)
    expected: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)      # /statistics
    expected_source: str = "manifest"
    ingested: int = 0
    ingest_bytes: int = 0
    rejected: int = 0
    matched_instances: int = 0                     # expected SOP UIDs the PACS holds
    findscu_studies: int | None = None
    md5_checked: int = 0
    md5_failed: int = 0
    sampled: int = 0
    sample_mismatched: int = 0
    orthanc_pid: int | None = None
    findings: list[PacsFinding] = field(default_factory=list)

    def add(self, severity: str, kind: str, subject: str, detail: str = "") -> None:
        if sum(1 for f in self.findings if f.kind == kind) < MAX_FINDINGS_PER_KIND:
            self.findings.append(PacsFinding(severity, kind, subject, detail))

    @property
    def errors(self) -> list[PacsFinding]:
        return [f for f in self.findings if f.severity == ERROR]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phases"] = {k: round(v, 4) for k, v in self.phases.items()}
        return data


def find_orthanc_layout(restored: Path) -> Path | None:
    """The folder holding an Orthanc source copy (config/, index/, storage/ and the marker), if any."""
    for marker in restored.rglob(MARKER):
        try:
            if json.loads(marker.read_text()).get("kind") == "orthanc":
                return marker.parent
        except (OSError, ValueError):
            continue
    return None


@contextmanager
def _phase(result: PacsDrillResult, name: str) -> Iterator[None]:
    began = time.monotonic()
    try:
        yield
    finally:
        result.phases[name] = result.phases.get(name, 0.0) + time.monotonic() - began


def run_pacs_drill(restored: Path, workdir: Path, *, expected: ExpectedArchive | None = None,
                   progress: Progress | None = None, sample: int = 5, concurrency: int = 4,
                   use_findscu: bool = True, start_timeout: float = 60.0) -> PacsDrillResult:
    """Start a throw-away Orthanc on `restored` (see the module docstring), check it, stop it.

    `workdir` is an empty scratch folder (Orthanc's config, log, and in files mode its storage); it is
    left for the caller to remove. Returns findings and phase timings; never leaves a process behind."""
    progress = progress or NullProgress()
    layout = find_orthanc_layout(restored)
    result = PacsDrillResult(mode="orthanc-index" if layout else "ingest")
    try:
        find_orthanc()
        if use_findscu:
            find_dcmtk("findscu")
    except BackupctlError as exc:
        result.error = exc.one_line()
        result.add(ERROR, "pacs-unavailable", "-", result.error)
        return result
    files = list(iter_dicom_files(layout / "storage" if layout else restored))
    if expected is None:
        expected = expected_from_files(files)
        result.add(WARNING, "no-manifest", "-", "expected instances taken from the restored files: "
                   "a file missing from the restore cannot be noticed")
    result.expected, result.expected_source = expected.counts(), expected.source
    orthanc = OrthancProcess(workdir / "orthanc", dicom=use_findscu, aet=DRILL_AET, dicom_clients=(SCU_AET,),
                             name="backupctl-drill",
                             storage=layout / "storage" if layout else None,
                             index=layout / "index" if layout else None, start_timeout=start_timeout,
                             disposable=True)
    try:
        with _phase(result, "start"):
            orthanc.start()
        result.orthanc_pid = orthanc.pid
        client = orthanc.api()
        if layout is None:
            with _phase(result, "ingest"):
                _ingest(client, files, result, concurrency, progress)
        with _phase(result, "query"):
            held = _query(client, expected, result)
            if use_findscu:
                _findscu_check(orthanc, expected, result)
        with _phase(result, "verify"):
            _verify(client, expected, held, result, sample, concurrency, progress)
    except BackupctlError as exc:
        result.error = exc.one_line()
        result.add(ERROR, "pacs-failed", "-", result.error)
    finally:
        with _phase(result, "stop"):
            orthanc.stop()
    result.ok = result.error is None and not result.errors
    return result


def _ingest(client: OrthancClient, files: list[Path], result: PacsDrillResult, concurrency: int,
            progress: Progress) -> None:
    report = send_files(client, files, total=len(files), concurrency=concurrency, progress=progress)
    result.ingested, result.ingest_bytes, result.rejected = report.sent, report.bytes, len(report.rejected)
    for r in report.rejected:
        result.add(ERROR, "rejected", str(r.path), r.reason)


def _query(client: OrthancClient, expected: ExpectedArchive, result: PacsDrillResult) -> dict[str, tuple[str, str]]:
    """Compare what the PACS holds, study by study, with what is expected. Returns SOP UID ->
    (Orthanc instance id, study UID) of everything held."""
    result.found = client.counts()
    held: dict[str, tuple[str, str]] = {}
    by_study: dict[str, set[str]] = {}
    for study in client.find("Study", expand=True):
        uid = study["MainDicomTags"].get("StudyInstanceUID", "")
        sops = by_study.setdefault(uid, set())
        for inst in client.study_instances(study["ID"]):
            sop = inst["MainDicomTags"].get("SOPInstanceUID", "")
            sops.add(sop)
            held[sop] = (inst["ID"], uid)
    if len(held) != result.found["instances"]:
        result.add(ERROR, "count-mismatch", "-", f"/statistics counts {result.found['instances']} instances, "
                   f"the studies list {len(held)}")
    for study_uid, wanted in sorted(expected.studies().items()):
        there = by_study.get(study_uid, set())
        missing = sorted(set(wanted) - there)
        patient = next(iter(wanted.values())).patient
        who = f" (patient {patient[:16]})" if patient else ""
        if not there:
            result.add(ERROR, "missing-study", study_uid,
                       f"study{who} is not in the PACS: 0 of {len(wanted)} instances")
        elif missing:
            result.add(ERROR, "missing-instances", study_uid, f"{len(missing)} of {len(wanted)} instances "
                       f"missing{who}, e.g. {missing[0]}")
    result.matched_instances = len(set(expected.instances) & set(held))
    extra = sorted(set(held) - set(expected.instances))
    if extra:
        result.add(WARNING, "unexpected", held[extra[0]][1],
                   f"{len(extra)} instance(s) in the PACS that are not expected, e.g. {extra[0]}")
    return held


def _findscu_check(orthanc: OrthancProcess, expected: ExpectedArchive, result: PacsDrillResult) -> None:
    """Ask the PACS over DICOM (C-FIND, study level) with dcmtk: an independent client's view."""
    counts = findscu_study_counts(orthanc.dicom_port, DRILL_AET)
    result.findscu_studies = len(counts)
    wanted = expected.studies()
    if wanted and not counts:
        result.add(ERROR, "findscu", "-", "findscu got no answer at all (association rejected or PACS down)")
        return
    for study_uid, instances in sorted(wanted.items()):
        got = counts.get(study_uid)
        if got is None:
            result.add(ERROR, "findscu-missing-study", study_uid, "C-FIND does not find the study")
        elif got != len(instances):
            result.add(ERROR, "findscu-count", study_uid, f"C-FIND reports {got} instances, {len(instances)} "
                       "expected")


def findscu_study_counts(port: int, called_aet: str, host: str = "127.0.0.1", calling_aet: str = SCU_AET,
                         timeout: float = 120) -> dict[str, int | None]:
    """Study Instance UID -> NumberOfStudyRelatedInstances, from dcmtk findscu's extracted responses."""
    from pydicom import dcmread

    with tempfile.TemporaryDirectory(prefix="backupctl-findscu-") as out:
        argv = [str(find_dcmtk("findscu")), "-S", "-aet", calling_aet, "-aec", called_aet, "-to", "10",
                "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances",
                "-X", "-od", out, host, str(port)]
        done = process.run(argv, timeout=timeout, kill_grace=0)
        if done.timed_out:
            raise OrthancError(f"findscu did not finish in {timeout:.0f}s")
        if done.returncode != 0:
            log.info("findscu exited %d: %s", done.returncode, done.tail(3, 300))
        counts: dict[str, int | None] = {}
        for rsp in sorted(Path(out).glob("rsp*.dcm")):
            ds = dcmread(rsp)
            value = ds.get("NumberOfStudyRelatedInstances")
            counts[str(ds.StudyInstanceUID)] = int(value) if value not in (None, "") else None
        return counts


def _verify(client: OrthancClient, expected: ExpectedArchive, held: dict[str, tuple[str, str]],
            result: PacsDrillResult, sample: int, concurrency: int, progress: Progress) -> None:
    ids = sorted(held.values())
    with progress.task("PACS: MD5 of stored files", total=len(ids), unit="files") as task, \
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pacs-md5") as pool:
        def check(item: tuple[str, str]) -> tuple[str, str, str | None]:
            problem = client.verify_md5(item[0])
            task.advance()
            return item[0], item[1], problem

        damaged: set[str] = set()
        for instance_id, study_uid, problem in pool.map(check, ids):
            result.md5_checked += 1
            if problem is not None:
                result.md5_failed += 1
                damaged.add(instance_id)
                result.add(ERROR, "md5", study_uid, f"instance {instance_id}: {problem}")
    # the sample is drawn from what the MD5 check passed: a damaged file is already reported
    candidates = sorted(sop for sop in set(held) & set(expected.instances) if held[sop][0] not in damaged)
    for sop in _sample(candidates, sample):
        want = expected.instances[sop]
        try:
            data = client.download(held[sop][0])
        except OrthancHttpError as exc:
            result.add(ERROR, "sample-unreadable", want.study_uid, f"instance {sop}: {exc.message}")
            continue
        result.sampled += 1
        same = (hashlib.sha256(data).hexdigest() == want.sha256 if want.sha256 else
                dataset_sha256(data) == want.dataset_sha256 if want.dataset_sha256 else None)
        if same is False and want.dataset_sha256 and dataset_sha256(data) == want.dataset_sha256:
            same = True   # only the file meta header differs (a C-STORE'd copy)
        if same is False:
            result.sample_mismatched += 1
            result.add(ERROR, "sample-mismatch", want.study_uid, f"instance {sop}: downloaded content differs "
                       "from the expected hash")


def _sample(items: list[str], k: int) -> list[str]:
    """Evenly spread, deterministic: the first, the last and the ones between."""
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return items
    step = (len(items) - 1) / (k - 1) if k > 1 else 0
    return [items[round(i * step)] for i in range(k)]


# the drill runner's step interface (backupctl.drills.pacs_step finds OrthancDrillStep here) -----------


@dataclass
class StepFinding:
    """Same fields as `backupctl.drills.pacs_step.StepFinding`."""

    severity: str
    kind: str
    path: str | None = None
    detail: str = ""


@dataclass
class StepOutcome:
    """Same fields as `backupctl.drills.pacs_step.StepOutcome`."""

    checked: int
    files: int = 0
    bytes: int = 0
    detail: str = ""
    findings: list[StepFinding] = field(default_factory=list)


class OrthancDrillStep:
    """The `pacs` depth as the drill runner drives it: `ingest` restored files into a throw-away Orthanc,
    `query` it per study (REST and C-FIND counts, then the MD5 of every stored file), `close` it.

    The Orthanc starts lazily at the first call, so building the step costs nothing; `close` always
    stops it. Its start time is part of the `ingest` phase."""

    def __init__(self, config: Any, scratch: Path, *, concurrency: int = 4, use_findscu: bool = True,
                 sample: int = 5) -> None:
        self.scratch = scratch
        self.concurrency = concurrency
        self.use_findscu = use_findscu
        self.sample = sample
        self.orthanc: OrthancProcess | None = None
        self.sent: dict[str, tuple[str, Path]] = {}   # Orthanc instance id -> (path in snapshot, restored file)

    def _client(self) -> OrthancClient:
        """The running throw-away Orthanc's client; starts it on first use. A missing or failing Orthanc
        raises (OrthancNotInstalled, OrthancStartError): the runner records the drill as failed with that
        one line, and `close` still runs."""
        if self.orthanc is None:
            find_orthanc()
            if self.use_findscu:
                find_dcmtk("findscu")
            orthanc = OrthancProcess(self.scratch / "orthanc", dicom=self.use_findscu, aet=DRILL_AET,
                                     dicom_clients=(SCU_AET,), name="backupctl-drill", disposable=True)
            orthanc.start()            # on failure it has already stopped what it started
            self.orthanc = orthanc
        return self.orthanc.api()

    def ingest(self, files: list[tuple[str, Path]], progress: Progress) -> StepOutcome:
        client = self._client()
        by_path = {restored: original for original, restored in files}
        report = send_files(client, [restored for _, restored in files], total=len(files),
                            concurrency=self.concurrency, progress=progress)
        findings = [StepFinding(ERROR, "rejected", by_path.get(r.path, str(r.path)), r.reason)
                    for r in report.rejected]
        self.sent = {iid: (by_path.get(path, str(path)), path) for path, iid in report.instance_ids.items()}
        return StepOutcome(len(files), report.sent, report.bytes,
                           f"{report.stored} stored, {report.already} already there, {report.retries} retries",
                           findings)

    def query(self, studies: dict[str, int], progress: Progress) -> StepOutcome:
        client = self._client()
        assert self.orthanc is not None
        findings: list[StepFinding] = []
        try:
            held = self._held_by_study(client)
            dicom = findscu_study_counts(self.orthanc.dicom_port, DRILL_AET) if self.use_findscu else {}
            for uid, count in sorted(studies.items()):
                got = len(held.get(uid, ()))
                if got == 0:
                    findings.append(StepFinding(ERROR, "not-found", uid, f"study not in the PACS: 0 of {count} "
                                                "instances"))
                elif got != count:
                    findings.append(StepFinding(ERROR, "count-mismatch", uid, f"PACS holds {got} instances, "
                                                f"{count} restored"))
                if self.use_findscu and dicom.get(uid) != count and got:
                    findings.append(StepFinding(ERROR, "findscu", uid, f"C-FIND reports {dicom.get(uid)} "
                                                f"instances, {count} restored"))
            ids = sorted((iid, uid) for uid, iids in held.items() for iid in iids)
            with progress.task("PACS: MD5 of stored files", total=len(ids), unit="files") as task, \
                    ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pacs-md5") as pool:
                def md5(item: tuple[str, str]) -> tuple[str, str, str | None]:
                    problem = client.verify_md5(item[0])
                    task.advance()
                    return item[0], item[1], problem

                for iid, uid, problem in pool.map(md5, ids):
                    if problem is not None:
                        findings.append(StepFinding(ERROR, "md5", uid, f"instance {iid}: {problem}"))
            findings += self._sample_downloads(client)
        except BackupctlError as exc:
            findings.append(StepFinding(ERROR, "pacs-failed", None, exc.one_line()))
        return StepOutcome(len(studies), detail=f"{len(studies)} studies queried over REST"
                           + (" and C-FIND" if self.use_findscu else "") + ", MD5 of every stored file, "
                           f"{min(self.sample, len(self.sent))} downloads compared", findings=findings)

    def _sample_downloads(self, client: OrthancClient) -> list[StepFinding]:
        """REST uploads are stored byte-identical: a sample downloaded back must equal the restored file."""
        found = []
        for iid in _sample(sorted(self.sent), self.sample):
            original, restored = self.sent[iid]
            try:
                same = hashlib.sha256(client.download(iid)).digest() == hashlib.sha256(restored.read_bytes()).digest()
            except (OrthancError, OSError) as exc:
                found.append(StepFinding(ERROR, "sample-unreadable", original, str(exc)))
                continue
            if not same:
                found.append(StepFinding(ERROR, "sample-mismatch", original, "the PACS returns other bytes"))
        return found

    @staticmethod
    def _held_by_study(client: OrthancClient) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for study in client.find("Study", expand=True):
            uid = study["MainDicomTags"].get("StudyInstanceUID", "")
            held[uid] = [inst["ID"] for inst in client.study_instances(study["ID"])]
        return held

    def close(self) -> None:
        if self.orthanc is not None:
            self.orthanc.stop()
            self.orthanc = None
