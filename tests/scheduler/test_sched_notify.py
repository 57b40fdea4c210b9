"""Webhooks and pings against a real HTTP server on 127.0.0.1: payload, retries, backoff, secrets."""

from __future__ import annotations

import logging
import threading

import pytest

from backupctl.config import NotifyConfig
from backupctl.errors import SecretError
from backupctl.notify import Notice, Notifier, deliver, ping_url, redact

TOKEN = "s3cr3t-t0ken-4f9a"


def notice(event: str = "failure", status: str = "failed") -> Notice:
    return Notice(event=event, kind="backup", name="pacs", execution="e1", status=status,
                  started="2025-01-01T00:00:00+00:00", error="source missing" if status != "success" else None)


def test_webhook_posts_json_with_a_readable_text(installation, receiver) -> None:
    installation.secret("hook", f"{receiver.base}/hook/{TOKEN}\n")
    cfg = NotifyConfig(webhook_url_file="secrets/hook", webhook_events=["failure"])
    results = Notifier(installation.config(), cfg).send(notice())
    assert [r.ok for r in results] == [True]
    [req] = receiver.matching("/hook/")
    body = req.json()
    assert req.headers["Content-Type"] == "application/json"
    assert body["event"] == "failure" and body["ok"] is False and body["name"] == "pacs"
    assert body["text"].endswith("FAILED: source missing")


def test_events_not_asked_for_are_not_sent(installation, receiver) -> None:
    installation.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    cfg = NotifyConfig(webhook_url_file="secrets/hook")  # default: failures only
    assert Notifier(installation.config(), cfg).send(notice("success", "success")) == []
    assert receiver.requests == []


def test_retries_with_backoff_on_5xx_then_delivers(receiver) -> None:
    receiver.statuses = [503, 500]
    result = deliver(f"{receiver.base}/hook", b"{}", "application/json", channel="webhook", timeout=5,
                     retries=3, backoff=0.01)
    assert result.ok and result.attempts == 3 and len(receiver.requests) == 3


def test_no_retry_on_4xx(receiver) -> None:
    receiver.statuses = [404]
    result = deliver(f"{receiver.base}/hook", b"{}", "application/json", channel="webhook", timeout=5,
                     retries=3, backoff=0.01)
    assert not result.ok and result.attempts == 1 and result.status == 404


def test_timeout_is_a_failed_attempt(receiver) -> None:
    receiver.delay = 1.5
    result = deliver(f"{receiver.base}/hook", b"{}", "application/json", channel="webhook", timeout=0.2,
                     retries=1, backoff=0.01)
    assert not result.ok and result.attempts == 2 and "timed out" in (result.error or "").lower()


def test_stop_event_cuts_the_backoff_short(receiver) -> None:
    receiver.statuses = [500] * 5
    stop = threading.Event()
    stop.set()
    result = deliver(f"{receiver.base}/hook", b"{}", "application/json", channel="webhook", timeout=5,
                     retries=5, backoff=60, stop=stop)
    assert not result.ok and result.attempts == 1


def test_ping_urls_follow_healthchecks_convention(installation, receiver) -> None:
    installation.secret("ping", f"{receiver.base}/ping/{TOKEN}")
    notifier = Notifier(installation.config(), NotifyConfig(ping_url_file="secrets/ping"))
    for event, status in (("start", "running"), ("success", "success"), ("failure", "failed")):
        notifier.send(notice(event, status))
    paths = [r.path for r in receiver.requests]
    assert paths == [f"/ping/{TOKEN}/start?rid=e1", f"/ping/{TOKEN}?rid=e1", f"/ping/{TOKEN}/fail?rid=e1"]
    assert ping_url("https://hc.example/p/abc?x=1", "failure", "r") == "https://hc.example/p/abc/fail?x=1&rid=r"


def test_secret_url_never_logged(installation, receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.statuses = [500, 500]
    installation.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    cfg = NotifyConfig(webhook_url_file="secrets/hook", retries=1, backoff_seconds=0.01)
    with caplog.at_level(logging.DEBUG):
        [result] = Notifier(installation.config(), cfg).send(notice())
    assert not result.ok
    assert TOKEN not in caplog.text and TOKEN not in str(result)
    assert "127.0.0.1" in caplog.text and redact(f"{receiver.base}/hook/{TOKEN}").endswith("/…")


def test_secret_file_readable_by_others_is_refused(installation, receiver) -> None:
    path = installation.secret("hook", f"{receiver.base}/hook/{TOKEN}")
    path.chmod(0o644)
    with pytest.raises(SecretError, match="readable by group or others"):
        Notifier(installation.config(), NotifyConfig(webhook_url_file="secrets/hook"))


def test_url_from_environment(installation, receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_HOOK", f"{receiver.base}/env-hook/{TOKEN}")
    Notifier(installation.config(), NotifyConfig(webhook_url_env="PACS_HOOK")).send(notice())
    assert len(receiver.matching("/env-hook/")) == 1
    monkeypatch.delenv("PACS_HOOK")
    with pytest.raises(SecretError, match="PACS_HOOK"):
        Notifier(installation.config(), NotifyConfig(webhook_url_env="PACS_HOOK"))


def test_job_notify_overrides_global_field_by_field(installation) -> None:
    installation.add_settings('[notify]\nwebhook_url_env = "GLOBAL_HOOK"\nretries = 5')
    installation.write_job("pacs", 'sources = ["archive"]\n[notify]\nwebhook_events = ["success", "failure"]\n')
    config = installation.config()
    merged = config.settings.notify.merged(config.job("pacs").notify)
    assert merged.webhook_url_env == "GLOBAL_HOOK" and merged.retries == 5
    assert merged.webhook_events == ["success", "failure"]


class SmtpSink:
    """A minimal real SMTP server on 127.0.0.1 (plain, no auth): enough for smtplib to deliver one message."""

    def __init__(self) -> None:
        import socketserver

        self.messages: list[dict] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                def reply(text: str) -> None:
                    self.wfile.write((text + "\r\n").encode())

                reply("220 sink ready")
                mail: dict = {"rcpt": []}
                while line := self.rfile.readline().decode().rstrip("\r\n"):
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        reply("250 sink")
                    elif verb == "MAIL":
                        mail["from"] = line
                        reply("250 ok")
                    elif verb == "RCPT":
                        mail["rcpt"].append(line)
                        reply("250 ok")
                    elif verb == "DATA":
                        reply("354 go on")
                        body = []
                        while (data := self.rfile.readline().decode()) not in (".\r\n", ""):
                            body.append(data)
                        mail["data"] = "".join(body)
                        sink.messages.append(mail)
                        mail = {"rcpt": []}
                        reply("250 queued")
                    elif verb == "QUIT":
                        reply("221 bye")
                        return
                    else:
                        reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_email_on_failure_through_smtp(installation) -> None:
    sink = SmtpSink()
    try:
        installation.add_settings(f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
                                  'sender = "backupctl@hospital.example"')
        cfg = NotifyConfig(email_to=["pacs-admins@hospital.example"])
        [delivery] = Notifier(installation.config(), cfg).send(notice())
    finally:
        sink.close()
    assert delivery.ok and delivery.channel == "email"
    [mail] = sink.messages
    assert "pacs-admins@hospital.example" in mail["rcpt"][0]
    assert "Subject: backupctl backup pacs on" in mail["data"] and "FAILED: source missing" in mail["data"]
