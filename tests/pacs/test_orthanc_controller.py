"""The throw-away Orthanc controller and REST client, on a real Orthanc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupctl.dicom.synth import WrittenInstance
from backupctl.errors import OrthancHttpError, OrthancNotInstalled, OrthancStartError, SecretError
from backupctl.pacs.orthanc import (
    OrthancClient,
    OrthancProcess,
    index_lock_holder,
    read_credentials,
    redact_url,
)
from backupctl.process import pid_alive

pytestmark = pytest.mark.orthanc


def test_private_orthanc_starts_checks_and_stops_without_orphan(
        tmp_path: Path, pacs_archive: tuple[Path, list[WrittenInstance]]) -> None:
    _, written = pacs_archive
    with OrthancProcess(tmp_path / "o") as orthanc:
        pid = orthanc.pid
        assert pid and pid_alive(pid)
        assert index_lock_holder(orthanc.index / "index") == pid   # it owns its index
        client = orthanc.api()
        for inst in written[:3]:
            assert client.upload(inst.path.read_bytes())["Status"] == "Success"
        assert client.upload(written[0].path.read_bytes())["Status"] == "AlreadyStored"
        assert client.counts()["instances"] == 3
        ids = client.get("/instances")
        assert [client.verify_md5(i) for i in ids] == [None, None, None]
        # a damaged storage file is seen by the MD5 check (cache 0: Orthanc reads the disk)
        info = client.get(f"/instances/{ids[0]}/attachments/dicom/info")
        stored = orthanc.storage / info["Uuid"][:2] / info["Uuid"][2:4] / info["Uuid"]
        data = bytearray(stored.read_bytes())
        data[-1] ^= 0xFF
        stored.write_bytes(bytes(data))
        assert client.verify_md5(ids[0]) is not None and client.verify_md5(ids[1]) is None
        # authentication is on: no credentials, no answer
        with pytest.raises(OrthancHttpError) as denied:
            OrthancClient(orthanc.url).system()
        assert denied.value.status == 401
        # a file that is not DICOM is refused, and said so
        with pytest.raises(OrthancHttpError):
            client.upload(b"not dicom at all")
        creds = (orthanc.config_dir / "credentials.json")
        assert creds.stat().st_mode & 0o077 == 0
        assert orthanc.credentials.password not in (orthanc.config_dir / "orthanc.json").read_text()
    assert not pid_alive(pid) or Path(f"/proc/{pid}").exists() is False
    assert index_lock_holder(orthanc.index / "index") is None
    assert orthanc.credentials.password not in orthanc.log_path.read_text()
    assert "Orthanc has stopped" in orthanc.log_path.read_text()     # a clean shutdown, asked over REST


def test_missing_orthanc_binary_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPCTL_ORTHANC", str(tmp_path / "no-such-Orthanc"))
    with pytest.raises(OrthancNotInstalled) as exc:
        OrthancProcess(tmp_path / "o").start()
    assert "not installed" in exc.value.one_line() and "apt-get install orthanc" in exc.value.one_line()


def test_orthanc_failing_to_start_leaves_no_process(tmp_path: Path) -> None:
    # an index that is not an SQLite database: Orthanc itself exits while starting
    (tmp_path / "o" / "index").mkdir(parents=True)
    (tmp_path / "o" / "index" / "index").write_bytes(b"this is not a database" * 100)
    orthanc = OrthancProcess(tmp_path / "o", start_timeout=20)
    with pytest.raises(OrthancStartError) as exc:
        orthanc.start()
    assert "Orthanc" in exc.value.one_line()
    assert orthanc.proc is None and not _orthanc_children()


def test_orthanc_hanging_at_start_is_killed(tmp_path: Path) -> None:
    # a "binary" that never answers HTTP: the deadline expires, the process group is killed
    fake = tmp_path / "fake-orthanc"
    fake.write_text("#!/bin/sh\nsleep 300\n")
    fake.chmod(0o755)
    orthanc = OrthancProcess(tmp_path / "o", binary=fake, start_timeout=1.0)
    with pytest.raises(OrthancStartError) as exc:
        orthanc.start()
    assert "not ready in time" in exc.value.one_line()
    assert orthanc.proc is None
    assert not [p for p in _children() if "sleep" in _cmdline(p)]


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "creds"
    f.write_text("alice:secret\n")
    f.chmod(0o644)
    with pytest.raises(SecretError) as exc:
        read_credentials(f)
    assert "chmod 600" in exc.value.one_line() and "secret" not in exc.value.one_line()
    f.chmod(0o600)
    creds = read_credentials(f)
    assert creds is not None and creds.username == "alice" and "secret" not in repr(creds)


def test_urls_are_shown_without_credentials() -> None:
    assert redact_url("https://bob:hunter2@pacs.example:8042/orthanc?token=abc") == "https://pacs.example:8042/orthanc"
    client = OrthancClient("http://bob:hunter2@127.0.0.1:9")
    assert "hunter2" not in repr(client) and client.credentials is not None


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(stat[1]) == me:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _orthanc_children() -> list[int]:
    return [p for p in _children() if "Orthanc" in _cmdline(p)]


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    # a process that ignores SIGTERM and has no REST API: stop() still reaps it
    fake = tmp_path / "stubborn"
    fake.write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n")
    fake.chmod(0o755)
    orthanc = OrthancProcess(tmp_path / "o", binary=fake, start_timeout=0.5)
    with pytest.raises(OrthancStartError):
        orthanc.start()
    assert orthanc.proc is None and not [p for p in _children() if "stubborn" in _cmdline(p)]
