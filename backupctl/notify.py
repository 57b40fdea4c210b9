"""Telling people: webhooks (JSON POST), healthcheck-style pings and, optionally, e-mail.

* Webhook: one JSON object per event (`start`, `success`, `failure`), with a `text` line so chat tools
  (Slack, Mattermost, Teams connectors) show something readable without a template.
* Ping URL, healthchecks.io style: `URL/start` when a run starts, `URL` on success, `URL/fail` on failure,
  each with `?rid=<execution>` so overlapping runs are told apart; the body carries a short summary. A
  monitor that hears nothing after `/start` raises its own alarm, which also covers a daemon that died.
* E-mail through [smtp] in backupctl.toml.

URLs carry tokens: they come from a 0600 file or an environment variable, and only their scheme and host
are ever logged. Delivery retries with exponential backoff on network errors, 429 and 5xx, never on
other 4xx. A notification that cannot be delivered is logged and never fails the job.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

from backupctl import __version__
from backupctl.config import Config, NotifyConfig, SmtpConfig
from backupctl.errors import SecretError
from backupctl.secrets import read_secret

log = logging.getLogger("backupctl.notify")
FAILURE_STATUSES = ("failed", "partial", "interrupted", "missed")


@dataclass
class Notice:
    """One event of one scheduled execution."""

    event: str                      # start | success | failure
    kind: str                       # backup | drill
    name: str
    execution: str
    status: str                     # running | success | partial | failed | interrupted | missed
    started: str
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None
    run_ids: list[int] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)

    @property
    def ok(self) -> bool:
        return self.status in ("success", "running")

    def text(self) -> str:
        what = f"backupctl {self.kind} {self.name} on {self.host}"
        if self.event == "start":
            return f"{what}: started"
        took = f" in {self.seconds:.0f} s" if self.seconds is not None else ""
        line = f"{what}: {self.status.upper()}{took}"
        return f"{line}: {self.error}" if self.error else line

    def payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, text=self.text(), version=__version__)
        return data


@dataclass
class Delivery:
    channel: str                    # webhook | ping | email
    destination: str                # redacted
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def event_of(status: str) -> str:
    return "success" if status == "success" else "failure"


def redact(url: str) -> str:
    """Only scheme and host: paths and queries of webhook and ping URLs are the secret part."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def read_secret_url(config: Config, file: Any, env: str | None, what: str) -> str | None:
    """A URL from a 0600 file or an environment variable; None when neither is configured."""
    if file is not None:
        path = config.resolve(file)
        url = read_secret(path, f"{what} file").strip()
    elif env is not None:
        url = os.environ.get(env, "").strip()
        if not url:
            raise SecretError(f"environment variable {env} ({what}) is not set or empty")
    else:
        return None
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise SecretError(f"the {what} is not an http(s) URL", hint="put only the URL in the file or variable")
    return url


def _retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


def deliver(url: str, body: bytes, content_type: str, *, channel: str, timeout: float, retries: int,
            backoff: float, stop: threading.Event | None = None) -> Delivery:
    """POST `body` to `url`, retrying with exponential backoff; never raises, never logs the URL's secret."""
    where = redact(url)
    stop = stop or threading.Event()
    status: int | None = None
    error: str | None = None
    attempt = 0
    for attempt in range(1, retries + 2):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": content_type, "User-Agent": f"backupctl/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked
                status = response.status
            return Delivery(channel, where, True, attempt, status)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            status, error = None, f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        if not _retryable(status) or attempt > retries:
            break
        delay = backoff * (2 ** (attempt - 1))
        log.info("%s %s: attempt %d failed (%s); retrying in %.1f s", channel, where, attempt, error, delay)
        if stop.wait(delay):  # the daemon is stopping: give up quietly
            break
    return Delivery(channel, where, False, attempt, status, error)


def ping_url(base: str, event: str, execution: str) -> str:
    suffix = {"start": "/start", "success": "", "failure": "/fail"}[event]
    parts = urllib.parse.urlsplit(base.rstrip("/"))
    query = urllib.parse.urlencode({"rid": execution})
    return urllib.parse.urlunsplit(parts._replace(path=parts.path + suffix,
                                                  query="&".join(q for q in (parts.query, query) if q)))


def send_email(smtp: SmtpConfig, config: Config, to: list[str], notice: Notice) -> Delivery:
    msg = EmailMessage()
    msg["From"], msg["To"] = smtp.sender, ", ".join(to)
    msg["Subject"] = notice.text()[:200]
    msg.set_content(json.dumps(notice.payload(), indent=2, default=str))
    return send_message(smtp, config, msg)


def send_message(smtp: SmtpConfig, config: Config, msg: EmailMessage) -> Delivery:
    """Deliver a composed message through [smtp]; never raises, never logs the password."""
    where = f"smtp://{smtp.host}:{smtp.port}"
    try:
        password = _smtp_password(smtp, config)
        context = ssl.create_default_context()
        if smtp.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds,
                                                    context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username and password:
                client.login(smtp.username, password)
            client.send_message(msg)
    except (OSError, smtplib.SMTPException, SecretError) as exc:
        return Delivery("email", where, False, 1, error=f"{type(exc).__name__}: {exc}")
    return Delivery("email", where, True, 1)


def _smtp_password(smtp: SmtpConfig, config: Config) -> str | None:
    if smtp.password_file is not None:
        path = config.resolve(smtp.password_file)
        return read_secret(path, "SMTP password file").strip()
    if smtp.password_env is not None:
        return os.environ.get(smtp.password_env) or None
    return None


class Notifier:
    """The notification settings of one job or drill, resolved (URLs read) once per execution."""

    def __init__(self, config: Config, cfg: NotifyConfig, stop: threading.Event | None = None) -> None:
        self.config, self.cfg, self.stop = config, cfg, stop
        self.webhook = read_secret_url(config, cfg.webhook_url_file, cfg.webhook_url_env, "webhook URL")
        self.ping = read_secret_url(config, cfg.ping_url_file, cfg.ping_url_env, "ping URL")

    @classmethod
    def for_schedule(cls, config: Config, kind: str, name: str, stop: threading.Event | None = None) -> Notifier:
        own = (config.job(name).notify if kind == "backup" else config.drill(name).notify if kind == "drill"
               else None)
        return cls(config, config.settings.notify.merged(own), stop)

    def send(self, notice: Notice) -> list[Delivery]:
        """Every configured channel that wants this event; each outcome logged (redacted)."""
        cfg = self.cfg
        results: list[Delivery] = []
        common = {"timeout": cfg.timeout_seconds, "retries": cfg.retries, "backoff": cfg.backoff_seconds,
                  "stop": self.stop}
        if self.ping:
            body = notice.text().encode()
            results.append(deliver(ping_url(self.ping, notice.event, notice.execution), body,
                                   "text/plain; charset=utf-8", channel="ping", **common))
        if self.webhook and notice.event in cfg.webhook_events:
            body = json.dumps(notice.payload(), default=str).encode()
            results.append(deliver(self.webhook, body, "application/json", channel="webhook", **common))
        smtp = self.config.settings.smtp
        if cfg.email_to and smtp is not None and notice.event in cfg.email_events:
            results.append(send_email(smtp, self.config, cfg.email_to, notice))
        for d in results:
            if d.ok:
                log.info("%s %s: %s delivered (%d attempt(s))", d.channel, d.destination, notice.event, d.attempts)
            else:
                log.error("%s %s: %s NOT delivered after %d attempt(s): %s", d.channel, d.destination,
                          notice.event, d.attempts, d.error)
        return results
