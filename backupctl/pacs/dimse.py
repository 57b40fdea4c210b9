"""Any PACS over DICOM networking (DIMSE): C-STORE with storage commitment, and C-FIND query-back.

`send_dimse` stores files as a C-STORE SCU (pynetdicom). Presentation contexts are proposed per SOP class
found in the files: one context per compressed transfer syntax seen (so a PACS that takes it gets the file
as archived), and one with explicit and implicit little endian for every SOP class (what every PACS takes).
A compressed file whose syntax the PACS refused is decompressed with pydicom's decoders and sent
uncompressed; a file that cannot be decoded, or whose SOP class the PACS refused, is reported as refused.

Storage commitment (Storage Commitment Push Model, N-ACTION) is asked for everything stored; the PACS
answers with an N-EVENT-REPORT either on the same association or, as most PACS (Orthanc among them) do, on
a new association to our AE. For the latter backupctl listens on `commitment_port`, which the PACS must
know for our AE title. Only instances the PACS committed count as "committed".
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.errors import DicomNetworkError, UsageError
from backupctl.progress import NullProgress, Progress

log = logging.getLogger(__name__)
# pynetdicom logs each rejection and abort at ERROR on its own; backupctl turns them into one-line errors
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
UNCOMPRESSED = {EXPLICIT_LE, IMPLICIT_LE, "1.2.840.10008.1.2.2"}
COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"       # Study Root Query/Retrieve Information Model - FIND
VERIFICATION = "1.2.840.10008.1.1"
MAX_CONTEXTS = 128                                # the association's limit (odd context IDs 1..255)
WARNINGS = {0xB000, 0xB006, 0xB007}               # stored, with coercion or elements discarded
ALREADY = {0x0111}                                # "duplicate SOP instance": some PACS answer so


@dataclass(frozen=True)
class DicomTarget:
    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomTarget:
        """AET@HOST:PORT (an IPv6 host in brackets)."""
        aet, at, rest = text.rpartition("@")
        host, colon, port = rest.rpartition(":")
        host = host.strip("[]")
        if not at or not colon or not aet or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--to-dicom wants AET@HOST:PORT, got {text!r}", hint="e.g. PACS@10.0.0.5:104")
        if len(aet) > 16 or not aet.isascii() or "\\" in aet or aet.strip() != aet:
            raise UsageError(f"AE title {aet!r} is not valid (at most 16 ASCII characters, no backslash)")
        return cls(aet, host, int(port))

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass
class Instance:
    path: Path
    sop_class: str
    sop_instance: str
    syntax: str
    study: str


@dataclass
class DimseReport:
    target: str
    files: int = 0
    stored: int = 0
    already: int = 0
    warnings: int = 0
    transcoded: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)   # file, status (hex or None), reason
    retries: int = 0
    associations: int = 0
    bytes: int = 0
    commitment: str = "off"            # off | committed | partial | timeout
    committed: int = 0
    not_committed: list[dict[str, Any]] = field(default_factory=list)   # sop_instance, reason
    seconds: float = 0.0
    per_study: dict[str, int] = field(default_factory=dict)   # instances in the files, by study

    @property
    def sent(self) -> int:
        return self.stored + self.already


def read_instances(paths: Iterable[Path]) -> tuple[list[Instance], list[dict[str, Any]]]:
    """Headers of the files (up to the pixels); files pydicom cannot read come back as refused."""
    from pydicom import dcmread

    found: list[Instance] = []
    unreadable: list[dict[str, Any]] = []
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True)
            syntax = str(ds.file_meta.TransferSyntaxUID)
            found.append(Instance(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax,
                                  str(ds.get("StudyInstanceUID", ""))))
        except Exception as exc:           # noqa: BLE001 - any parse failure makes the file unsendable
            unreadable.append({"file": str(path), "status": None,
                               "reason": f"not readable as DICOM: {type(exc).__name__}"})
    return found, unreadable


def _contexts(instances: list[Instance]) -> list[tuple[str, list[str]]]:
    """(abstract syntax, transfer syntaxes) to propose: the files' own compressed syntaxes first, then an
    uncompressed context per SOP class (enough on its own to send every file)."""
    classes = sorted({i.sop_class for i in instances})
    compressed = sorted({(i.sop_class, i.syntax) for i in instances if i.syntax not in UNCOMPRESSED})
    plain = [(c, [EXPLICIT_LE, IMPLICIT_LE]) for c in classes]
    if len(plain) > MAX_CONTEXTS - 1:
        raise UsageError(f"the files hold {len(plain)} SOP classes; one association proposes at most "
                         f"{MAX_CONTEXTS - 1}", hint="restore in parts with --include")
    room = MAX_CONTEXTS - 1 - len(plain)           # one context is kept for storage commitment
    return [(c, [ts]) for c, ts in compressed[:room]] + plain


class _Reports:
    """N-EVENT-REPORTs of storage commitment, by Transaction UID, from any association."""

    def __init__(self) -> None:
        self.done = threading.Condition()
        self.by_transaction: dict[str, tuple[int, Any]] = {}

    def handler(self, event: Any) -> tuple[int, None]:
        ds = event.event_information
        uid = str(ds.get("TransactionUID", ""))
        with self.done:
            self.by_transaction[uid] = (int(event.request.EventTypeID or 0), ds)
            self.done.notify_all()
        return 0x0000, None

    def wait(self, uid: str, timeout: float) -> tuple[int, Any] | None:
        with self.done:
            self.done.wait_for(lambda: uid in self.by_transaction, timeout=timeout)
            return self.by_transaction.get(uid)


def _ae(calling_aet: str, contexts: list[tuple[str, list[str]]], *, commitment: bool) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    if commitment:
        ae.add_requested_context(COMMITMENT_SOP_CLASS, [EXPLICIT_LE, IMPLICIT_LE])
    return ae


def tls_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """DICOM TLS (the secure transport connection profile): the PACS's certificate checked against `ca` (the
    system's trust store without it) and its host name; `cert`/`key` present ours when the PACS asks."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA file {ca}: {getattr(exc, 'strerror', None) or exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert}: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx


def _associate(ae: Any, target: DicomTarget, *, handlers: list[Any], retries: int,
               report: DimseReport | None = None, tls: ssl.SSLContext | None = None) -> Any:
    """An established association, retrying refusals that may pass (unreachable, transient rejection)."""
    delay = 1.0
    for attempt in range(retries + 1):
        assoc = ae.associate(target.host, target.port, ae_title=target.aet, evt_handlers=handlers,
                             tls_args=(tls, target.host) if tls else None)
        if assoc.is_established:
            if report is not None:
                report.associations += 1
            return assoc
        if assoc.is_rejected and assoc.acceptor.primitive is not None:
            result = assoc.acceptor.primitive.result
            reason = _rejection(assoc.acceptor.primitive.result_source, assoc.acceptor.primitive.diagnostic)
            if result == 0x01:                 # rejected-permanent: asking again gets the same answer
                raise DicomNetworkError(f"{target} rejected the association: {reason}",
                                        hint="check the called AE title and that the PACS knows ours")
            why = f"rejected the association (transient): {reason}"
        else:
            why = _unreachable(target, tls) or ("aborted the association" if assoc.is_aborted
                                           else "did not answer (not a DICOM port?)")
        if attempt == retries:
            raise DicomNetworkError(f"{target} {why}" + (f" after {retries + 1} attempts" if retries else ""))
        if report is not None:
            report.retries += 1
        log.info("%s %s; retrying in %.0f s", target, why, delay)
        time.sleep(delay)                      # a back-off before asking a busy PACS again, not a sync
        delay = min(delay * 2, 16.0)
    raise AssertionError("unreachable")


def _unreachable(target: DicomTarget, tls: ssl.SSLContext | None = None) -> str | None:
    """Why a TCP connection (and TLS handshake) fails (pynetdicom reports both as an abort), or None."""
    import socket

    try:
        with socket.create_connection((target.host, target.port), timeout=10) as sock:
            if tls is not None:
                try:
                    with tls.wrap_socket(sock, server_hostname=target.host):
                        return None
                except ssl.SSLCertVerificationError as exc:
                    raise DicomNetworkError(f"{target}: TLS certificate not trusted: {exc.verify_message}",
                                            hint="check the CA file (--tls-ca) and the PACS's host name") from None
                except (ssl.SSLError, OSError) as exc:
                    return f"failed the TLS handshake: {getattr(exc, 'reason', None) or exc}"
            return None
    except OSError as exc:
        return f"did not answer: {exc.strerror or type(exc).__name__}"


def _rejection(source: int, diagnostic: int) -> str:
    reasons = {(1, 2): "application context not supported", (1, 3): "calling AE title not recognised",
               (1, 7): "called AE title not recognised", (2, 2): "protocol version not supported",
               (3, 1): "temporary congestion", (3, 2): "local limit exceeded"}
    return reasons.get((source, diagnostic), f"source {source}, reason {diagnostic}")


def echo(target: DicomTarget, *, calling_aet: str, retries: int = 0, tls: ssl.SSLContext | None = None) -> None:
    """C-ECHO: the target answers DICOM and accepts our AE title, before anything is restored."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(VERIFICATION)
    assoc = _associate(ae, target, handlers=[], retries=retries, tls=tls)
    try:
        if not assoc.accepted_contexts:
            raise DicomNetworkError(f"{target} refused the Verification SOP class (C-ECHO)")
        status = assoc.send_c_echo()
        if not status or status.Status != 0:
            raise DicomNetworkError(f"{target} did not answer C-ECHO"
                                    + (f" (status 0x{status.Status:04X})" if status else ""))
    finally:
        assoc.release()


def send_dimse(paths: list[Path], target: DicomTarget, *, calling_aet: str = "BACKUPCTL",
               commitment: bool = True, commitment_port: int | None = None, commitment_timeout: float = 60.0,
               retries: int = 3, progress: Progress | None = None, tls: ssl.SSLContext | None = None) -> DimseReport:
    """C-STORE every file, then ask for storage commitment of what was stored (unless `commitment` is off)."""
    from pynetdicom import evt

    progress = progress or NullProgress()
    began = time.monotonic()
    report = DimseReport(str(target), files=len(paths))
    instances, unreadable = read_instances(paths)
    report.refused.extend(unreadable)
    report.per_study = dict(Counter(i.study for i in instances if i.study))
    contexts = _contexts(instances)
    ae = _ae(calling_aet, contexts, commitment=commitment)
    reports = _Reports()
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handler)] if commitment else []
    server = None
    if commitment and commitment_port is not None:
        server = _listen(calling_aet, commitment_port, reports)
    try:
        stored = _store_all(ae, target, instances, report, handlers, retries, progress, tls)
        if commitment and stored:
            _commit(ae, target, stored, report, reports, handlers, retries, commitment_timeout,
                    listening=server is not None, tls=tls)
        elif commitment:
            report.commitment = "committed"          # nothing stored: nothing to commit
    finally:
        if server is not None:
            server.shutdown()
    report.seconds = time.monotonic() - began
    return report


def _listen(calling_aet: str, port: int, reports: _Reports) -> Any:
    """Our AE on `port`, for the PACS's N-EVENT-REPORT on a new association."""
    from pynetdicom import AE, evt

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_supported_context(COMMITMENT_SOP_CLASS, [EXPLICIT_LE, IMPLICIT_LE], scu_role=True, scp_role=True)
    ae.add_supported_context(VERIFICATION)
    try:
        return ae.start_server(("", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    except OSError as exc:
        raise DicomNetworkError(f"cannot listen on port {port} for storage commitment reports: {exc.strerror}",
                                hint="choose another --commitment-port") from None


def _store_all(ae: Any, target: DicomTarget, instances: list[Instance], report: DimseReport,
               handlers: list[Any], retries: int, progress: Progress, tls: ssl.SSLContext | None) -> list[Instance]:
    stored: list[Instance] = []
    pending = list(instances)
    failures = 0
    with progress.task(f"C-STORE to {target}", total=len(instances), unit="files") as task:
        while pending:
            assoc = _associate(ae, target, handlers=handlers, retries=retries, report=report, tls=tls)
            try:
                while pending and assoc.is_established:
                    inst = pending[0]
                    outcome = _store_one(assoc, inst, report)
                    if outcome is None:                    # the association broke under this file
                        break
                    pending.pop(0)
                    task.advance()
                    if outcome:
                        stored.append(inst)
            finally:
                if assoc.is_established:
                    assoc.release()
            if pending:
                failures += 1
                report.retries += 1
                if failures > retries:
                    raise DicomNetworkError(f"{target} broke the association {failures} times; "
                                            f"{len(pending)} of {len(instances)} files not sent")
    return stored


def _store_one(assoc: Any, inst: Instance, report: DimseReport) -> bool | None:
    """True when the PACS has the instance, False when refused, None when the association broke."""
    from pydicom import dcmread

    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    payload: Any = None
    if (inst.sop_class, inst.syntax) in accepted:
        payload = str(inst.path)                     # sent as archived, not decoded
    elif not any(c == inst.sop_class for c, _ in accepted):
        report.refused.append({"file": str(inst.path), "status": None,
                               "reason": f"the PACS does not accept SOP class {inst.sop_class}"})
        return False
    else:
        ds = dcmread(inst.path)
        if inst.syntax not in UNCOMPRESSED:
            try:
                ds.decompress()
            except Exception as exc:       # noqa: BLE001 - no decoder, or corrupt pixel data
                report.refused.append({"file": str(inst.path), "status": None,
                                       "reason": f"the PACS refused transfer syntax {inst.syntax} and the "
                                                 f"file cannot be decompressed: {exc}"[:300]})
                return False
            report.transcoded += 1
        payload = ds
    status = assoc.send_c_store(payload)
    if not status or "Status" not in status:
        return None
    code = int(status.Status)
    if code == 0x0000 or code in WARNINGS:
        report.stored += 1
        report.warnings += code in WARNINGS
    elif code in ALREADY:
        report.already += 1
    else:
        report.refused.append({"file": str(inst.path), "status": f"0x{code:04X}",
                               "reason": str(status.get("ErrorComment", "")) or _status_text(code)})
        return False
    report.bytes += inst.path.stat().st_size
    return True


def _status_text(code: int) -> str:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

    return STORAGE_SERVICE_CLASS_STATUS.get(code, ("", "refused"))[1] or "refused"


def _commit(ae: Any, target: DicomTarget, stored: list[Instance], report: DimseReport, reports: _Reports,
            handlers: list[Any], retries: int, timeout: float, *, listening: bool,
            tls: ssl.SSLContext | None = None) -> None:
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    request = Dataset()
    request.TransactionUID = generate_uid()
    items = []
    for inst in stored:
        item = Dataset()
        item.ReferencedSOPClassUID = inst.sop_class
        item.ReferencedSOPInstanceUID = inst.sop_instance
        items.append(item)
    request.ReferencedSOPSequence = items
    assoc = _associate(ae, target, handlers=handlers, retries=retries, report=report, tls=tls)
    try:
        if not any(c.abstract_syntax == COMMITMENT_SOP_CLASS for c in assoc.accepted_contexts):
            raise DicomNetworkError(f"{target} does not offer storage commitment; {len(stored)} instances were "
                                    "stored but none committed", hint="use --no-commitment for a PACS without it")
        status, _ = assoc.send_n_action(request, 1, COMMITMENT_SOP_CLASS, COMMITMENT_INSTANCE)
        if not status or int(status.get("Status", 0xFFFF)) != 0:
            code = f"0x{int(status.Status):04X}" if status and "Status" in status else "no answer"
            raise DicomNetworkError(f"{target} refused the storage commitment request ({code})")
        # a PACS may report on this association before releasing it: wait here while it is open
        got = reports.wait(request.TransactionUID, timeout if not listening else min(timeout, 2.0))
    finally:
        if assoc.is_established:
            assoc.release()
    if got is None and listening:
        got = reports.wait(request.TransactionUID, timeout)
    if got is None:
        report.commitment = "timeout"
        report.not_committed = [{"sop_instance": i.sop_instance, "reason": "no report"} for i in stored]
        return
    _, ds = got
    failed = {str(x.ReferencedSOPInstanceUID): int(x.get("FailureReason", 0x0110))
              for x in ds.get("FailedSOPSequence", [])}
    ok = {str(x.ReferencedSOPInstanceUID) for x in ds.get("ReferencedSOPSequence", [])}
    report.committed = sum(1 for i in stored if i.sop_instance in ok and i.sop_instance not in failed)
    report.not_committed = [{"sop_instance": i.sop_instance,
                             "reason": f"0x{failed[i.sop_instance]:04X}" if i.sop_instance in failed
                             else "not in the report"}
                            for i in stored if i.sop_instance in failed or i.sop_instance not in ok]
    report.commitment = "committed" if not report.not_committed else "partial"


# query-back --------------------------------------------------------------------------------------------


def query_studies(target: DicomTarget, expected: dict[str, int], *, calling_aet: str = "BACKUPCTL",
                  retries: int = 1, tls: ssl.SSLContext | None = None) -> list[dict[str, Any]]:
    """C-FIND at STUDY level for each study: NumberOfStudyRelatedInstances against `expected`."""
    from pydicom.dataset import Dataset

    ae = _ae(calling_aet, [(STUDY_FIND, [EXPLICIT_LE, IMPLICIT_LE])], commitment=False)
    rows: list[dict[str, Any]] = []
    assoc = _associate(ae, target, handlers=[], retries=retries, tls=tls)
    try:
        if not assoc.accepted_contexts:
            raise DicomNetworkError(f"{target} refused C-FIND (Study Root); no query-back possible")
        for study, want in sorted(expected.items()):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study
            query.NumberOfStudyRelatedInstances = ""
            found: int | None = None
            problem = None
            for status, identifier in assoc.send_c_find(query, STUDY_FIND):
                if not status or "Status" not in status:
                    problem = "no answer"
                    break
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    value = identifier.get("NumberOfStudyRelatedInstances")
                    found = (found or 0) + (int(value) if value not in (None, "") else 0)
                elif code != 0x0000:
                    problem = f"C-FIND status 0x{code:04X}"
            rows.append({"study": study, "expected": want, "found": found,
                         "ok": found == want and problem is None,
                         **({"problem": problem} if problem else {})})
    finally:
        if assoc.is_established:
            assoc.release()
    return rows
