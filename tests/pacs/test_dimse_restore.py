"""`restore --to-dicom AET@HOST:PORT`: C-STORE, storage commitment and C-FIND query-back against a real
Orthanc, and against plain DIMSE receivers that take only some syntaxes or refuse some instances (dcmtk's
storescp, a pynetdicom SCP) standing in for a vendor PACS."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid

from backupctl import process
from backupctl.actions.backup import run_backup
from backupctl.config import Config
from backupctl.pacs.orthanc import find_dcmtk, free_port
from backupctl.pacs.service import ServicePacs
from tests.helpers import assert_one_line_error, cli, make_installation, wait_for
from tests.pacs.conftest import PACS_SPEC

pytestmark = pytest.mark.orthanc

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str, Path]:
    """12 uncompressed instances in 4 studies, plus one RLE-compressed copy of the first (its own UID)."""
    root = tmp_path_factory.mktemp("to-dicom")
    config = make_installation(root, PACS_SPEC)
    archive = root / "archive"
    first = sorted(archive.rglob("*.dcm"))[0]
    ds = dcmread(first)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.compress(RLELossless)
    ds.save_as(archive / "rle.dcm", enforce_file_format=True)
    outcome = run_backup(config, "pacs", replicate=False)
    return config, outcome.snapshot_id, archive


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServicePacs, int]]:
    """An Orthanc that knows our AE (BACKUPCTL) with the port its commitment reports go to."""
    commit_port = free_port()
    pacs = ServicePacs(tmp_path_factory.mktemp("dimse-orthanc"), aet="ORTHANC", any_modality=True).setup()
    cfg_path = pacs.config_dir / "orthanc.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["DicomModalities"]["backupctl"] = {"AET": "BACKUPCTL", "Host": "127.0.0.1", "Port": commit_port,
                                           "AllowStorageCommitment": True, "AllowFind": True}
    cfg["StorageCommitmentReportsSize"] = 100
    cfg_path.write_text(json.dumps(cfg))
    pacs.start()
    try:
        yield pacs, commit_port
    finally:
        pacs.kill()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """dcmtk's storescp with its default: uncompressed transfer syntaxes only."""
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    child = process.start([str(find_dcmtk("storescp")), "-aet", "VENDOR", "-od", str(out), "--fork", str(port)])
    try:
        echo = [str(find_dcmtk("echoscu")), "-aec", "VENDOR", "127.0.0.1", str(port)]
        wait_for(lambda: process.run(echo, timeout=5, kill_grace=0).ok, what="storescp answering C-ECHO")
        yield f"VENDOR@127.0.0.1:{port}", out
    finally:
        child.stop(signal.SIGTERM, 5)


def _run(config: Config, snapshot_id: str, *args: str) -> tuple[int, dict, str]:
    result = cli(config, "restore", snapshot_id[:8], *args, "--json", timeout=300)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_orthanc_stores_commits_and_answers_the_query_back(snapshot: tuple[Config, str, Path],
                                                           orthanc: tuple[ServicePacs, int]) -> None:
    config, snapshot_id, _ = snapshot
    pacs, commit_port = orthanc
    code, out, err = _run(config, snapshot_id, "--to-dicom", f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
                          "--commitment-port", str(commit_port), "--commitment-timeout", "60")
    assert code == 0, err
    report = out["report"]
    assert out["dicom_files"] == 13 and report["stored"] == 13 and report["refused"] == []
    assert report["commitment"] == "committed" and report["committed"] == 13
    assert pacs.client().counts()["instances"] == 13
    assert len(out["query_back"]) == 4 and all(row["ok"] for row in out["query_back"])
    assert sum(row["found"] for row in out["query_back"]) == 13 and out["expected_from"] == "manifest"
    assert out["ok"] is True


def test_commitment_that_never_arrives_is_one_line_and_a_failure(snapshot: tuple[Config, str, Path],
                                                                 orthanc: tuple[ServicePacs, int]) -> None:
    config, snapshot_id, _ = snapshot
    pacs, _ = orthanc
    # without our listening port Orthanc's report goes nowhere: "sent" must not be claimed as committed
    result = cli(config, "restore", snapshot_id[:8], "--to-dicom", f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
                 "--commitment-timeout", "3", "--no-query-back", timeout=300)
    assert_one_line_error(result, 1, "no storage commitment report", "none known committed")


def test_storescp_gets_the_compressed_file_transcoded(snapshot: tuple[Config, str, Path],
                                                      storescp: tuple[str, Path]) -> None:
    config, snapshot_id, _ = snapshot
    target, received = storescp
    code, out, err = _run(config, snapshot_id, "--to-dicom", target, "--no-commitment", "--no-query-back")
    assert code == 0, err
    report = out["report"]
    assert report["stored"] == 13 and report["transcoded"] == 1 and report["commitment"] == "off"
    files = list(received.iterdir())
    assert len(files) == 13
    syntaxes = {str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    assert RLELossless not in syntaxes
    human = cli(config, "restore", snapshot_id[:8], "--to-dicom", target, "--no-commitment", "--no-query-back")
    assert human.returncode == 0 and "storage commitment: off" in human.stdout


def test_a_file_that_cannot_be_transcoded_is_refused_with_the_reason(tmp_path: Path,
                                                                     storescp: tuple[str, Path]) -> None:
    config = make_installation(tmp_path, PACS_SPEC)
    archive = tmp_path / "archive"
    first = sorted(archive.rglob("*.dcm"))[0]
    ds = dcmread(first)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.compress(RLELossless)
    ds.PixelData = ds.PixelData[:40] + b"\xff" * 8      # a corrupt RLE frame: no decoder can undo it
    ds.save_as(archive / "broken-rle.dcm", enforce_file_format=True)
    snapshot_id = run_backup(config, "pacs", replicate=False).snapshot_id
    target, received = storescp
    code, out, err = _run(config, snapshot_id, "--to-dicom", target, "--no-commitment", "--no-query-back")
    assert code == 3, err
    refused = out["report"]["refused"]
    assert [Path(r["file"]).name for r in refused] == ["broken-rle.dcm"]
    assert "cannot be decompressed" in refused[0]["reason"]
    assert len(list(received.iterdir())) == 12


@pytest.fixture
def picky_scp() -> Iterator[str]:
    """A pynetdicom receiver that takes only CT, and refuses each series' first instance with 0xA700."""
    from pynetdicom import AE, evt

    def on_store(event: object) -> int:
        ds = event.dataset                            # type: ignore[attr-defined]
        return 0xA700 if int(ds.InstanceNumber) == 1 else 0x0000

    ae = AE(ae_title="PICKY")
    ae.add_supported_context(CT, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    ae.add_supported_context("1.2.840.10008.1.1")
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield f"PICKY@127.0.0.1:{port}"
    finally:
        server.shutdown()


def test_refused_sop_class_and_refusal_status_are_reported(snapshot: tuple[Config, str, Path],
                                                           picky_scp: str) -> None:
    config, snapshot_id, archive = snapshot
    headers = [dcmread(p, stop_before_pixels=True) for p in archive.rglob("*.dcm")]
    cts = sum(ds.SOPClassUID == CT for ds in headers)
    firsts = sum(ds.SOPClassUID == CT and int(ds.InstanceNumber) == 1 for ds in headers)
    code, out, err = _run(config, snapshot_id, "--to-dicom", picky_scp, "--no-commitment", "--no-query-back")
    assert code == 3, err
    refused = out["report"]["refused"]
    by_status = [r for r in refused if r["status"] == "0xA700"]
    by_class = [r for r in refused if r["status"] is None]
    assert len(by_status) == firsts and 0 < firsts < cts < 13
    assert all(r["reason"] == "Refused: Out of Resources" for r in by_status)
    assert len(by_class) == 13 - cts and all("does not accept SOP class" in r["reason"] for r in by_class)
    assert out["report"]["stored"] == cts - firsts
    human = cli(config, "restore", snapshot_id[:8], "--to-dicom", picky_scp, "--no-commitment", "--no-query-back")
    assert_one_line_error(human, 3, f"refused {len(refused)} of 13 files")


def test_bad_targets_are_one_line_errors(snapshot: tuple[Config, str, Path], orthanc: tuple[ServicePacs, int]) -> None:
    config, snapshot_id, _ = snapshot
    pacs, _ = orthanc
    result = cli(config, "restore", snapshot_id[:8], "--to-dicom", "127.0.0.1:104")
    assert_one_line_error(result, 2, "AET@HOST:PORT")
    result = cli(config, "restore", snapshot_id[:8], "--to-dicom", f"WRONG@127.0.0.1:{pacs.dicom_port}")
    assert_one_line_error(result, 1, "rejected the association", "called AE title not recognised")
    result = cli(config, "restore", snapshot_id[:8], "--to-dicom", f"X@127.0.0.1:{free_port()}")
    assert_one_line_error(result, 1, "did not answer")
    assert not any((config.state_dir / "scratch").iterdir())      # nothing restored, nothing left


class CommittingScp:
    """A pynetdicom PACS: stores everything (aborting the association once, at the third C-STORE), answers
    storage commitment on the same association, with one instance reported as failed (0x0110)."""

    def __init__(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import StorageCommitmentPushModel

        self.stored: set[str] = set()
        self.aborted = False
        ae = AE(ae_title="COMMITTER")
        for uid in (CT, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.1"):
            ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        ae.add_supported_context(StorageCommitmentPushModel, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self.on_store), (evt.EVT_N_ACTION, self.on_action),
            (evt.EVT_DIMSE_SENT, self.on_sent)])
        self.pending: list[object] = []

    def on_store(self, event: object) -> int:
        if len(self.stored) == 2 and not self.aborted:
            self.aborted = True
            event.assoc.abort()                        # type: ignore[attr-defined]
            return 0x0000
        self.stored.add(str(event.dataset.SOPInstanceUID))   # type: ignore[attr-defined]
        return 0x0000

    def on_action(self, event: object) -> tuple[int, None]:
        from pydicom.dataset import Dataset

        request = event.action_information                # type: ignore[attr-defined]
        refs = list(request.ReferencedSOPSequence)
        report = Dataset()
        report.TransactionUID = request.TransactionUID
        report.ReferencedSOPSequence = refs[1:]
        failed = Dataset()
        failed.ReferencedSOPClassUID = refs[0].ReferencedSOPClassUID
        failed.ReferencedSOPInstanceUID = refs[0].ReferencedSOPInstanceUID
        failed.FailureReason = 0x0110
        report.FailedSOPSequence = [failed]
        self.pending.append(report)
        return 0x0000, None

    def on_sent(self, event: object) -> None:
        import threading

        # the report goes out once the N-ACTION response has: as a PACS does, on the same association
        if type(event.message).__name__ == "N_ACTION_RSP" and self.pending:   # type: ignore[attr-defined]
            report = self.pending.pop()
            threading.Thread(target=event.assoc.send_n_event_report, daemon=True, args=(   # type: ignore[attr-defined]
                report, 2, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1")).start()


@pytest.fixture
def committer() -> Iterator[CommittingScp]:
    scp = CommittingScp()
    try:
        yield scp
    finally:
        scp.server.shutdown()


def test_broken_association_is_retried_and_a_failed_commitment_is_reported(
        snapshot: tuple[Config, str, Path], committer: CommittingScp) -> None:
    config, snapshot_id, _ = snapshot
    code, out, err = _run(config, snapshot_id, "--to-dicom", f"COMMITTER@127.0.0.1:{committer.port}",
                          "--no-query-back", "--commitment-timeout", "60")
    assert code == 3, err
    report = out["report"]
    assert committer.aborted and report["retries"] >= 1 and report["associations"] >= 3
    assert report["stored"] == 13 and len(committer.stored) == 13
    assert report["commitment"] == "partial" and report["committed"] == 12
    assert [r["reason"] for r in report["not_committed"]] == ["0x0110"]
    assert "1 instances not committed" in err


def test_query_back_reports_a_study_the_pacs_holds_less_of(snapshot: tuple[Config, str, Path],
                                                           orthanc: tuple[ServicePacs, int]) -> None:
    from backupctl.pacs.dimse import DicomTarget, query_studies

    config, snapshot_id, _ = snapshot
    pacs, commit_port = orthanc
    target = f"ORTHANC@127.0.0.1:{pacs.dicom_port}"
    code, out, err = _run(config, snapshot_id, "--to-dicom", target, "--commitment-port", str(commit_port))
    assert code == 0, err
    expected = {row["study"]: row["expected"] for row in out["query_back"]}
    client = pacs.client()
    study = client.find("Study", {"StudyInstanceUID": sorted(expected)[0]})[0]
    client.request("DELETE", f"/instances/{client.study_instances(study)[0]['ID']}")
    rows = query_studies(DicomTarget.parse(target), expected)
    assert [row["ok"] for row in rows] == [False, True, True, True]
    assert rows[0]["found"] == rows[0]["expected"] - 1


def _make_ca(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl): (ca, cert, key)."""
    folder.mkdir()
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                       "server.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", f"/CN={name} test CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        done = process.run(argv, timeout=60)
        assert done.ok, done.tail()
    return ca, cert, key


@pytest.fixture
def tls_scp(tmp_path: Path) -> Iterator[tuple[str, Path, Path, list[str]]]:
    """A pynetdicom PACS behind DICOM TLS; yields (target, its CA, another CA, stored UIDs)."""
    import ssl

    from pynetdicom import AE, evt

    ca, cert, key = _make_ca(tmp_path / "pki", "PACS")
    other_ca, _, _ = _make_ca(tmp_path / "other", "OTHER")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    stored: list[str] = []

    def on_store(event: object) -> int:
        stored.append(str(event.dataset.SOPInstanceUID))     # type: ignore[attr-defined]
        return 0x0000

    ae = AE(ae_title="TLSPACS")
    for uid in (CT, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.1"):
        ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=server_ctx,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield f"TLSPACS@127.0.0.1:{port}", ca, other_ca, stored
    finally:
        server.shutdown()


def test_dicom_tls_stores_with_the_trusted_ca_and_refuses_an_untrusted_certificate(
        snapshot: tuple[Config, str, Path], tls_scp: tuple[str, Path, Path, list[str]]) -> None:
    config, snapshot_id, _ = snapshot
    target, ca, other_ca, stored = tls_scp
    result = cli(config, "restore", snapshot_id[:8], "--to-dicom", target, "--no-commitment", "--no-query-back",
                 "--tls-ca", str(other_ca))
    assert_one_line_error(result, 1, "TLS certificate not trusted")
    assert stored == []
    code, out, err = _run(config, snapshot_id, "--to-dicom", target, "--no-commitment", "--no-query-back",
                          "--tls-ca", str(ca))
    assert code == 0, err
    assert out["report"]["stored"] == 13 and len(set(stored)) == 13
