"""The tamper-evident audit trail: every command leaves a record, tampering is named, a cut tail is caught
against the S3 checkpoint, anomaly rules fire on a burst only, the DICOM audit XML is complete, forwarding to
a real rsyslog survives its outage, and neither the repository password nor a patient ID is written anywhere."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backupctl.audit as audit
from backupctl.audit.dicom import audit_message, missing_fields
from backupctl.audit.log import Record, log_path, read_lines, verify_chain
from backupctl.audit.rules import evaluate
from backupctl.config import AuditRules, Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from tests.audit_support import Rsyslog, make_ca, rsyslogd
from tests.helpers import CONFIG_TEXT, make_installation
from tests.s3.conftest import Engine, moto_engine, s3_target_toml, unique_bucket  # noqa: F401 - fixture


def run_cli(capsys: pytest.CaptureFixture[str], config: Config, *args: str) -> tuple[int, str]:
    from backupctl.cli import run

    capsys.readouterr()
    code = run(["--config", str(config.path), "--quiet", *args])
    return code, capsys.readouterr().out


def lines_of(config: Config) -> list[bytes]:
    return read_lines(log_path(config.state_dir))


def write_lines(config: Config, lines: list[bytes]) -> None:
    log_path(config.state_dir).write_bytes(b"".join(line + b"\n" for line in lines))


def audit_text(config_text: str, body: str) -> str:
    return f"{config_text}\n[audit]\n{body}\n"


@pytest.fixture
def small(tmp_path: Path) -> Config:
    """An installation whose log holds a handful of records (commands run through the real CLI edge)."""
    return make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                   instances_per_series=1, rows=8, columns=8, seed=5))


# the edge ------------------------------------------------------------------------------------------------


def test_every_command_outcome_is_recorded_at_the_cli_edge(small: Config, capsys: pytest.CaptureFixture[str]):
    assert run_cli(capsys, small, "snapshots", "--json")[0] == 0
    assert run_cli(capsys, small, "backup", "run", "no-such-job")[0] == 2
    assert run_cli(capsys, small, "verify", "--level", "no-such-level")[0] != 0
    assert run_cli(capsys, small, "restore", "--bogus-flag")[0] == 2
    records = [Record.parse(line) for line in lines_of(small)]
    by_action = {r.action: r for r in records}
    assert by_action["config change"].details["first_seen"] is True
    assert by_action["snapshots"].outcome == "ok"
    refused = by_action["backup run"]
    assert (refused.outcome, refused.ids.get("job"), refused.details["error"]) == ("refused", "no-such-job",
                                                                                    "ConfigError")
    assert by_action["restore"].outcome == "refused"
    # help and a bare group did nothing, so they leave nothing
    count = len(lines_of(small))
    run_cli(capsys, small, "audit")
    run_cli(capsys, small, "restore", "--help")
    assert len(lines_of(small)) == count
    # a broken configuration still leaves its record in the state folder the file names
    text = small.path.read_text()
    small.path.write_text(text + "\n[no_such_section]\nx = 1\n")
    assert run_cli(capsys, small, "snapshots")[0] == 2
    broken = Record.parse(lines_of(small)[-1])
    assert (broken.action, broken.outcome, broken.details["config"]) == ("snapshots", "refused", "invalid")
    small.path.write_text(text)
    records = [Record.parse(line) for line in lines_of(small)]
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert verify_chain(log_path(small.state_dir)).ok
    assert oct(log_path(small.state_dir).stat().st_mode & 0o777) == "0o600"
    # a changed job file is a record of its own, with the new digest
    (small.base / "jobs" / "pacs.toml").write_text((small.base / "jobs" / "pacs.toml").read_text() + "tags = []\n")
    run_cli(capsys, small, "snapshots", "--json")
    change = [Record.parse(line) for line in lines_of(small)][-2]
    assert change.action == "config change" and change.details["changed"] == ["jobs/pacs.toml"]


def test_a_command_that_crashes_is_still_recorded(small: Config, monkeypatch: pytest.MonkeyPatch):
    from backupctl.cli import common, run

    def bug() -> Config:
        raise RuntimeError("a bug")

    monkeypatch.setattr(common, "load", bug)   # fault injection: a programming error inside a command
    with pytest.raises(RuntimeError):
        run(["--config", str(small.path), "--quiet", "snapshots", "--json"])
    last = Record.parse(lines_of(small)[-1])
    assert (last.action, last.outcome, last.details["error"]) == ("snapshots", "failed", "RuntimeError")


# tampering -----------------------------------------------------------------------------------------------


def _six_records(config: Config, capsys: pytest.CaptureFixture[str]) -> list[bytes]:
    for _ in range(5):
        run_cli(capsys, config, "snapshots", "--json")
    lines = lines_of(config)
    assert len(lines) >= 6 and verify_chain(log_path(config.state_dir)).ok
    return lines


def _verify_json(capsys: pytest.CaptureFixture[str], config: Config, *extra: str) -> tuple[int, dict]:
    code, out = run_cli(capsys, config, "audit", "verify", "--json", *extra)
    return code, json.loads(out)


def test_an_edited_record_is_named(small: Config, capsys: pytest.CaptureFixture[str]):
    lines = _six_records(small, capsys)
    lines[2] = lines[2].replace(b'"actor":"', b'"actor":"someone-else-')
    write_lines(small, lines)
    code, report = _verify_json(capsys, small, "--offline")
    assert code == 1 and report["broken_record"] == 3
    assert "record 3 was altered" in report["broken"]


def test_a_deleted_record_is_named(small: Config, capsys: pytest.CaptureFixture[str]):
    lines = _six_records(small, capsys)
    del lines[3]
    write_lines(small, lines)
    code, report = _verify_json(capsys, small, "--offline")
    assert code == 1 and report["broken_record"] == 4
    assert "record 4 was deleted" in report["broken"]


def test_reordered_records_are_named(small: Config, capsys: pytest.CaptureFixture[str]):
    lines = _six_records(small, capsys)
    lines[1], lines[2] = lines[2], lines[1]
    write_lines(small, lines)
    code, report = _verify_json(capsys, small, "--offline")
    assert code == 1 and report["broken_record"] == 2
    assert "record 2 was moved" in report["broken"]


def test_an_untouched_log_verifies(small: Config, capsys: pytest.CaptureFixture[str]):
    _six_records(small, capsys)
    assert run_cli(capsys, small, "unlock")[0] == 0     # not read-only: seals the log with a checkpoint
    code, report = _verify_json(capsys, small, "--offline")
    assert code == 0 and report["ok"] and report["local_checkpoint"]["signature_ok"]
    assert report["local_checkpoint"]["count"] == report["records"]


def test_a_cut_tail_is_caught_against_the_s3_checkpoint(tmp_path: Path, moto_engine: Engine,  # noqa: F811
                                                        capsys: pytest.CaptureFixture[str]):
    text = CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket("audit")) + \
        '\n[audit]\ncheckpoint_target = "vault"\n'
    config = make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                     instances_per_series=1, rows=8, columns=8, seed=5),
                               config_text=text)
    assert run_cli(capsys, config, "target", "init", "vault")[0] == 0
    for _ in range(3):
        run_cli(capsys, config, "snapshots", "--json")
    run_cli(capsys, config, "unlock")        # a command that is not read-only: it seals the log
    code, report = _verify_json(capsys, config)
    assert code == 0, report
    assert report["s3_checkpoint"]["count"] >= 6 and report["s3_checkpoint"]["signature_ok"]
    sealed = len(lines_of(config))     # `audit verify` recorded itself, then sealed the log again
    # the attacker cuts the last three records and removes the local checkpoint too
    lines = lines_of(config)[:sealed - 3]
    write_lines(config, lines)
    (config.state_dir / "audit" / "checkpoint.json").unlink()
    assert verify_chain(log_path(config.state_dir)).ok        # the chain alone cannot tell
    code, report = _verify_json(capsys, config)
    assert code == 1
    assert report["broken_record"] == sealed - 2
    assert f"records {sealed - 2} to {sealed} missing" in report["broken"]


def _rechain(lines: list[bytes]) -> list[bytes]:
    """What an attacker holding the host does after editing a record: recompute every `prev` after it."""
    import hashlib

    out: list[bytes] = []
    for line in lines:
        data = json.loads(line)
        data["prev"] = hashlib.sha256(out[-1]).hexdigest() if out else "0" * 64
        out.append(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    return out


def test_a_rewritten_and_resealed_history_is_caught_against_every_checkpoint(
        tmp_path: Path, moto_engine: Engine, capsys: pytest.CaptureFixture[str]):  # noqa: F811
    text = CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket("audit")) + \
        '\n[audit]\ncheckpoint_target = "vault"\n'
    config = make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                     instances_per_series=1, rows=8, columns=8, seed=5),
                               config_text=text)
    assert run_cli(capsys, config, "target", "init", "vault")[0] == 0
    for _ in range(3):
        run_cli(capsys, config, "unlock")
    lines = lines_of(config)
    lines[2] = lines[2].replace(b'"actor":"', b'"actor":"nobody-', 1)
    write_lines(config, _rechain(lines))
    (config.state_dir / "audit" / "checkpoint.json").unlink()
    assert verify_chain(log_path(config.state_dir)).ok
    run_cli(capsys, config, "unlock")           # seals the rewritten log, signed with the host's key
    code, report = _verify_json(capsys, config, "--all-checkpoints")
    assert code == 1 and report["s3_checkpoint"]["checked"] >= 4
    assert "was rewritten: its hash differs from the checkpoint" in report["broken"]
    assert report["broken_record"] == 3 and report["broken"].startswith("record 3 (or one before it)")


# anomaly rules -------------------------------------------------------------------------------------------


def _record(action: str, when: datetime, actor: str = "alice", seq: int = 1) -> Record:
    return Record(seq=seq, time=when.isoformat(), action=action, outcome="ok", actor=actor, host="h", pid=1,
                  prev="0" * 64)


def test_restores_outside_working_hours_alert_and_a_normal_day_does_not():
    rules = AuditRules(timezone="Europe/Berlin")
    sunday_night = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)
    tuesday = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    assert [m.rule for m in evaluate(rules, _record("restore", sunday_night), [])] == ["off-hours"]
    day = [_record("restore" if i % 2 else "find", tuesday + timedelta(minutes=7 * i), seq=i) for i in range(8)]
    assert all(evaluate(rules, r, day[:i + 1]) == [] for i, r in enumerate(day))
    assert evaluate(rules, _record("backup run", sunday_night), []) == []


def test_refused_deletes_exports_and_repeated_wrong_passwords_alert():
    rules = AuditRules()
    tuesday = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    refused = Record(seq=1, time=tuesday.isoformat(), action="s3 delete refused", outcome="refused", actor="bob",
                     host="h", pid=1, prev="0" * 64, details={"refused_deletes": 2})
    assert [m.rule for m in evaluate(rules, refused, [refused])] == ["refused-delete"]
    assert [m.rule for m in evaluate(rules, _record("keys export-kit", tuesday), [])] == ["export"]
    wrong = [Record(seq=i, time=(tuesday + timedelta(minutes=i)).isoformat(), action="backup run",
                    outcome="refused", actor="mallory", host="h", pid=1, prev="0" * 64,
                    details={"error": "WrongPassword"}) for i in range(4)]
    fired = [[m.rule for m in evaluate(rules, r, wrong[:i + 1])] for i, r in enumerate(wrong)]
    assert fired == [[], [], ["failed-authentication"], []]


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_burst_of_restores_is_one_security_alert_sent_to_the_webhook(tmp_path: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url_file = tmp_path / "webhook-url"
        url_file.write_text(f"http://127.0.0.1:{server.server_address[1]}/hook\n")
        url_file.chmod(0o600)
        text = (CONFIG_TEXT + f'\n[notify]\nwebhook_url_file = "{url_file}"\nretries = 0\n'
                '\n[audit.rules]\nworking_hours = "00:00-24:00"\nworking_days = [1, 2, 3, 4, 5, 6, 7]\n'
                'max_per_hour = 5\n')
        config = make_installation(tmp_path / "site", config_text=text)
        for i in range(5):
            audit.record(config, "restore", "ok", snapshot=f"abc{i}")
        assert [r for r in audit_records(config) if r.action == "security alert"] == []
        assert _Hook.received == []
        for i in range(3):
            audit.record(config, "restore", "ok", snapshot=f"def{i}")
        alerts = [r for r in audit_records(config) if r.action == "security alert"]
        assert [a.details["rule"] for a in alerts] == ["burst"]
        assert alerts[0].details["about"] == 6
        assert [h["name"] for h in _Hook.received] == ["burst"] and "6 restores" in _Hook.received[0]["error"]
        assert verify_chain(log_path(config.state_dir)).ok
    finally:
        server.shutdown()


def audit_records(config: Config) -> list[Record]:
    return [Record.parse(line) for line in lines_of(config)]


# DICOM audit messages ------------------------------------------------------------------------------------

EXPECTED_EVENTS = {
    "backup run": ("110104", "C"), "replicate": ("110106", "R"), "restore": ("110107", "C"),
    "find": ("110112", "E"), "audit verify": ("110101", "R"), "security alert": ("110113", "E"),
    "scheduler run": ("110100", "E"), "forget": ("110103", "D"), "pacs restore": ("110104", "C"),
}


@pytest.mark.parametrize("action", sorted(EXPECTED_EVENTS))
def test_the_dicom_audit_message_parses_and_carries_the_required_fields(action: str):
    record = Record(seq=7, time="2026-12-04T10:00:00.000000+00:00", action=action, outcome="ok", actor="alice",
                    host="backup-host", pid=42, prev="0" * 64,
                    ids={"snapshot": "abcd1234", "target": "vault", "patient": "f" * 64,
                         "studies": ["1.2.3.4"]},
                    details={"rule": "burst", "text": "too many"} if action == "security alert" else {})
    root = ET.fromstring(audit_message(record, site="HOSP", log_uri="file:///var/audit.log"))
    assert missing_fields(ET.tostring(root, encoding="unicode")) == []
    event = root.find("EventIdentification")
    assert event is not None
    assert (event.find("EventID").get("csd-code"), event.get("EventActionCode")) == EXPECTED_EVENTS[action]
    assert event.get("EventDateTime") == record.time and event.get("EventOutcomeIndicator") == "0"
    users = {p.get("UserID") for p in root.findall("ActiveParticipant")}
    assert "alice" in users
    assert root.find("AuditSourceIdentification").get("AuditEnterpriseSiteID") == "HOSP"
    requestors = [p for p in root.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
    assert len(requestors) == 1 and requestors[0].find("RoleIDCode") is not None
    if action in ("restore", "backup run", "replicate", "pacs restore", "find"):
        patients = [o for o in root.findall("ParticipantObjectIdentification")
                    if o.get("ParticipantObjectTypeCode") == "1"]
        assert [p.get("ParticipantObjectID") for p in patients] == ["f" * 64]
        assert patients[0].find("ParticipantObjectIDTypeCode").get("csd-code") == "2"
    if action == "find":
        assert root.find("ParticipantObjectIdentification/ParticipantObjectQuery") is not None
    if action in ("replicate", "restore"):            # Export and Import name the media
        media = [p for p in root.findall("ActiveParticipant") if p.find("MediaIdentifier") is not None]
        assert [m.get("UserID") for m in media] == ["vault"]
    if action == "security alert":
        detail = root.find("ParticipantObjectIdentification/ParticipantObjectDetail")
        assert detail is not None and detail.get("type") == "Alert Description"
        assert base64.b64decode(detail.get("value")).decode() == "too many"
    if action in ("security alert", "audit verify"):
        assert root.find("EventIdentification/EventTypeCode") is not None or action == "audit verify"
        assert root.find("ParticipantObjectIdentification").get("ParticipantObjectTypeCodeRole") == "13"


def test_a_failed_login_is_a_user_authentication_event():
    record = Record(seq=1, time="2026-12-04T10:00:00+00:00", action="backup run", outcome="refused", actor="bob",
                    host="h", pid=1, prev="0" * 64, details={"error": "WrongPassword"})
    root = ET.fromstring(audit_message(record))
    assert root.find("EventIdentification/EventID").get("csd-code") == "110114"
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "4"


# forwarding to a real rsyslog ----------------------------------------------------------------------------

needs_rsyslog = pytest.mark.skipif(rsyslogd() is None, reason="rsyslog is not installed "
                                   "(scripts/install-system-deps.sh installs rsyslog and rsyslog-gnutls)")


@needs_rsyslog
def test_records_queue_while_the_receiver_is_down_and_arrive_in_order(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]):
    ca = make_ca(tmp_path / "ca")
    receiver = Rsyslog(tmp_path / "rsyslog", ca)
    text = audit_text(CONFIG_TEXT, f'forward = "{receiver.url}"\nca_bundle = "{ca.ca_cert}"')
    config = make_installation(tmp_path / "site", config_text=text)
    receiver.start()
    try:
        assert run_cli(capsys, config, "snapshots", "--json")[0] == 0
        first = receiver.wait_for(2)          # the config change and the command
        assert len(first) == 2 and all(line.startswith("backupctl IHE+RFC-3881 ") for line in first)
        receiver.stop()
        for args in (("runs", "--json"), ("backup", "run", "missing-job"), ("audit", "show", "--json")):
            run_cli(capsys, config, *args)
        queued = [r.action for r in audit_records(config)][-3:]
        assert queued == ["runs", "backup run", "audit show"]
        assert receiver.lines() == first
        receiver.start()
        code, out = run_cli(capsys, config, "audit", "forward", "--json")
        assert code == 0 and json.loads(out)["sent"] == 3
        # `audit forward` then records itself, and that record goes out too
        written = audit_records(config)
        assert [r.action for r in written][-1] == "audit forward"
        lines = receiver.wait_for(len(written))
    finally:
        receiver.stop()
    messages = [ET.fromstring(line.split("\ufeff", 1)[1]) for line in lines]
    times = [m.find("EventIdentification").get("EventDateTime") for m in messages]
    assert times == [r.time for r in written]          # every record, once, in order
    outcomes = [m.find("EventIdentification").get("EventOutcomeIndicator") for m in messages[2:5]]
    assert outcomes == ["0", "4", "0"]          # runs ok, backup run refused, audit show ok


@needs_rsyslog
@pytest.mark.xfail(strict=False, reason="known defect (issue 19 left open): with TLS 1.3 rsyslog sometimes closes a "
                   "connection whose client certificate it refused without an alert, which reads like a clean close "
                   "after delivery, so one batch counts as sent; syslog over TLS has no acknowledgement to tell")
def test_a_repository_that_requires_node_authentication_gets_the_client_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    ca = make_ca(tmp_path / "ca")
    receiver = Rsyslog(tmp_path / "rsyslog", ca, auth="x509/certvalid")
    base = f'forward = "{receiver.url}"\nca_bundle = "{ca.ca_cert}"'
    config = make_installation(tmp_path / "site", config_text=audit_text(CONFIG_TEXT, base))
    receiver.start()
    try:
        assert run_cli(capsys, config, "snapshots", "--json")[0] == 0
        code, out = run_cli(capsys, config, "audit", "forward", "--json")
        refused = json.loads(out)
        assert code == 1 and refused["sent"] == 0 and refused["pending"] == 2   # no client certificate
        assert receiver.lines() == []
        config.path.write_text(audit_text(CONFIG_TEXT, f'{base}\nclient_cert = "{ca.client_pem}"'))
        ca.client_pem.chmod(0o644)                  # its private key readable by others: refused
        assert run_cli(capsys, config, "audit", "forward", "--json")[0] == 2
        ca.client_pem.chmod(0o600)
        code, out = run_cli(capsys, config, "audit", "forward", "--json")
        result = json.loads(out)
        assert code == 0 and result["sent"] >= 2 and result["pending"] == 0
        written = audit_records(load_config(config.path))
        received = receiver.wait_for(len(written))
    finally:
        receiver.stop()
    assert [line.split()[0] for line in received] == ["backupctl"] * len(written)


# no secrets, no patient identifiers ----------------------------------------------------------------------


@needs_rsyslog
def test_neither_the_password_nor_a_patient_id_is_written_anywhere(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]):
    ca = make_ca(tmp_path / "ca")
    receiver = Rsyslog(tmp_path / "rsyslog", ca)
    text = audit_text(CONFIG_TEXT, f'forward = "{receiver.url}"\nca_bundle = "{ca.ca_cert}"')
    archive = tmp_path / "site" / "archive"
    spec = ArchiveSpec(patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=2,
                       rows=8, columns=8, seed=11)
    patients = sorted({w.patient_id for w in write_archive(archive, spec)})
    config = make_installation(tmp_path / "site", spec, config_text=text)
    password = config.resolve(config.settings.staging.password_file).read_text().strip()
    assert len(password) >= 16 and patients
    receiver.start()
    try:
        outputs = []
        for args in (("media", "init", "offline", "--label", "DISK-A", "--json"),
                     ("backup", "run", "pacs", "--json"), ("snapshots", "--json"),
                     ("restore", "latest", "--to", str(tmp_path / "restored"), "--json"),
                     ("audit", "show", "--json")):
            code, out = run_cli(capsys, config, *args)
            outputs.append(out)
        # an action that names a patient (a lookup) records only the catalog's keyed hash
        audit.record(load_config(config.path), "find", "ok", patient=patients[0])
        audit.forward(config)
        count = len(lines_of(config))
        received = receiver.wait_for(count)
    finally:
        receiver.stop()
    assert len(received) == count
    log_text = log_path(config.state_dir).read_text()
    everything = "\n".join([log_text, *received, *outputs])
    assert password not in everything
    for patient in patients:
        assert patient not in everything
    lookup = audit_records(config)[-1]
    assert lookup.action == "find" and len(lookup.ids["patient"]) == 64
    by_action = {r.action: r for r in audit_records(config)}
    assert {"backup run", "restore", "media init"} <= set(by_action)
    made = by_action["backup run"].ids["snapshot"]          # the snapshot the backup made, noted by the action
    assert len(made) == 64 and by_action["restore"].ids["snapshot"] == made    # `latest`, resolved


# the demo's audit key ------------------------------------------------------------------------------------


def test_the_demo_audit_step_verifies_forwards_and_catches_a_tampered_copy(tmp_path: Path,
                                                                          moto_engine: Engine):  # noqa: F811
    from backupctl.actions.backup import run_backup
    from backupctl.demo import DemoContext, step_audit
    from backupctl.progress import default_progress
    from backupctl.s3.bucket import init_bucket
    from backupctl.s3.client import connect

    text = CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket("demo-audit"))
    config = make_installation(tmp_path, ArchiveSpec(patients=1, studies_per_patient=1, series_per_study=1,
                                                     instances_per_series=2, rows=8, columns=8, seed=9),
                               config_text=text)
    vault = config.target("vault")
    init_bucket(connect("vault", vault, config.resolve))  # type: ignore[arg-type]
    assert run_backup(config, "pacs", replicate=False).snapshot_id
    ctx = DemoContext(workdir=tmp_path, progress=default_progress(quiet=True), config=config, job="pacs")
    with ctx.resources:
        result = step_audit(ctx)
    assert result["ok"], result
    assert result["forwarded"] == result["records"] >= 5
    assert result["checkpoint_in_s3"] and result["chain_verified"]
    assert result["tampered_copy_caught"] and "record 2 was altered" in result["details"]["tampered_copy"]
    assert {"restore", "backup run", "unlock"} <= set(result["details"]["actions"])


def test_udp_and_tcp_destinations_and_the_syslog_export(small: Config, capsys: pytest.CaptureFixture[str]):
    import socket

    from backupctl.audit.receiver import SyslogReceiver

    run_cli(capsys, small, "snapshots", "--json")
    code, out = run_cli(capsys, small, "audit", "export", "--syslog")
    exported = out.splitlines()
    assert code == 0 and len(exported) == 2
    assert all(line.startswith("<85>1 ") and " backupctl " in line and " IHE+RFC-3881 - \ufeff<AuditMessage>"
               in line for line in exported)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        text = small.path.read_text() + f'\n[audit]\nforward = "udp://127.0.0.1:{udp.getsockname()[1]}"\n'
        small.path.write_text(text)
        config = load_config(small.path)
        audit.record(config, "restore", "ok", snapshot="cafe0001")
        datagrams = [udp.recv(65535) for _ in range(len(lines_of(config)))]
    assert [d.split(b" ", 1)[0] for d in datagrams[:1]] == [b"<85>1"]    # no octet count over UDP
    assert b"cafe0001" in datagrams[-1]
    receiver = SyslogReceiver()
    try:
        small.path.write_text(text.replace(text[text.index("forward"):], f'forward = "{receiver.url}"\n'))
        config = load_config(small.path)
        (config.state_dir / "audit" / "forward.cursor").unlink()
        result = audit.forward(config, force=True)
        assert result is not None and result.ok and result.sent == len(lines_of(config))
        deadline = time.monotonic() + 30
        while len(receiver.messages) < result.sent and time.monotonic() < deadline:
            time.sleep(0.05)   # polling: the receiver's thread appends as messages arrive
        assert len(receiver.messages) == result.sent
        assert all(m.startswith(b"<") for m in receiver.messages)
    finally:
        receiver.close()


def test_the_checkpoint_target_must_be_an_s3_target(tmp_path: Path):
    from backupctl.errors import ConfigError

    config = make_installation(tmp_path)
    config.path.write_text(config.path.read_text() + '\n[audit]\ncheckpoint_target = "offline"\n')
    with pytest.raises(ConfigError, match="audit.checkpoint_target: expected the name of an s3 target"):
        load_config(config.path)
    config.path.write_text(config.path.read_text().replace('"offline"\n', '"offline"\nforward = "http://x:1"\n'))
    with pytest.raises(ConfigError, match="audit.forward"):
        load_config(config.path)


# concurrency and interruption ----------------------------------------------------------------------------


def test_appends_from_several_processes_keep_one_unbroken_chain(tmp_path: Path):
    import subprocess
    import sys

    log = tmp_path / "state" / "audit" / "audit.log"
    script = ("import sys\nfrom pathlib import Path\nfrom backupctl.audit.log import append\n"
              "for i in range(25):\n"
              "    append(Path(sys.argv[1]), f'writer {sys.argv[2]}', 'ok', actor='t', ids={'i': i})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(log), str(n)], stdin=subprocess.DEVNULL)
               for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    chain = verify_chain(log)
    assert chain.ok, chain.broken
    assert chain.count == 100
    per_writer = {}
    for line in read_lines(log):
        record = Record.parse(line)
        per_writer.setdefault(record.action, []).append(record.ids["i"])
    assert all(order == list(range(25)) for order in per_writer.values()) and len(per_writer) == 4


@pytest.mark.slow
def test_an_interrupted_backup_is_recorded_as_interrupted(installation: Config, tmp_path: Path):
    import signal

    from tests.helpers import wait_for
    from tests.test_interrupts import _big_source, _packs_written, _restic_child, _start_backup

    _big_source(installation, tmp_path)
    proc = _start_backup(installation)
    wait_for(lambda: _restic_child(proc.pid), what="restic to start")
    wait_for(lambda: _packs_written(installation), what="restic to write a pack")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = Record.parse(lines_of(installation)[-1])
    assert (last.action, last.outcome, last.ids["job"]) == ("backup run", "interrupted", "pacs")
    assert last.details["error"] in ("Interrupted", "Terminated", "KeyboardInterrupt")


def test_audit_show_filters_by_time_action_and_actor(small: Config, capsys: pytest.CaptureFixture[str]):
    run_cli(capsys, small, "snapshots", "--json")
    run_cli(capsys, small, "backup", "run", "no-such-job")
    audit.record(small, "restore", "ok", actor="console:alice", snapshot="beef0001")

    def shown(*args: str) -> list[dict]:
        code, out = run_cli(capsys, small, "audit", "show", "--json", *args)
        assert code == 0
        return json.loads(out)["records"]

    assert [r["action"] for r in shown("--action", "backup")] == ["backup run"]
    assert [r["ids"]["snapshot"] for r in shown("--actor", "console:alice")] == ["beef0001"]
    assert len(shown("--since", "1h")) >= 4
    assert shown("--since", "2999-01-01") == []
    assert all(len(r["hash"]) == 64 for r in shown())
    assert run_cli(capsys, small, "audit", "show", "--since", "yesterday-ish")[0] == 2


def test_clear_patient_ids_only_where_the_repository_is_cleared_for_them(tmp_path: Path):
    from backupctl.signing import load_signing_key, patient_hash

    default = make_installation(tmp_path / "a")
    audit.record(default, "find", "ok", patient="SYN-PATIENT-1", password_file="x")
    stored = audit_records(default)[-1].ids
    key = load_signing_key(default.signing_key).patient_hash_key()
    assert stored == {"patient": patient_hash(key, "SYN-PATIENT-1")}      # the catalog's pseudonym; no secret
    cleared = make_installation(tmp_path / "b", config_text=audit_text(CONFIG_TEXT, "include_patient_ids = true"))
    audit.record(cleared, "find", "ok", patient="SYN-PATIENT-1")
    assert audit_records(cleared)[-1].ids == {"patient": "SYN-PATIENT-1"}
