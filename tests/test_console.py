"""The web console's first slice against the real server (uvicorn in its own process, HTTPS with the
certificate it generated): sign-in with password + TOTP, refusals, lockout, CSRF, roles, headers, cookie
flags, session expiry and the audit records each of them leaves."""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from backupctl.audit.log import log_path, records
from backupctl.config import Config, load_config
from backupctl.console import accounts
from backupctl.console.app import ROUTES
from backupctl.console.sessions import RateLimit
from tests.helpers import CONFIG_TEXT, cli, make_installation

PASSWORD = "correct horse battery staple"
IDLE = 4.0          # seconds: short, so the expiry test waits little; long enough for a test's requests
MAX_FAILURES = 3
CONSOLE = f"""
[console]
idle_timeout_seconds = {IDLE}
max_failures = {MAX_FAILURES}
lockout_seconds = 600
login_attempts_per_minute = 1000
"""


@dataclass
class Server:
    config: Config
    url: str
    cert: Path
    fingerprint: str
    process: subprocess.Popen[str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)),
                            follow_redirects=False, timeout=30)

    def user(self, name: str, role: str) -> str:
        """A fresh account (each test its own: a TOTP code signs in once) and its TOTP secret."""
        return accounts.add_user(self.config.state_dir, name, role, PASSWORD).secret

    def audit(self) -> list:
        return list(records(log_path(self.config.state_dir)))


def start_server(root: Path, console_text: str) -> Server:
    """`backupctl console serve` in its own process, as an admin starts it, on a port the kernel picks; its
    banner (address and fingerprint) is printed once it listens."""
    config = make_installation(root, config_text=CONFIG_TEXT + console_text)
    with open(root / "console.stderr", "w") as stderr:   # a file, not a pipe nobody drains while tests run
        proc = subprocess.Popen([sys.executable, "-m", "backupctl", "--config", str(config.path), "console",
                                 "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout is not None
    banner = "".join(proc.stdout.readline() for _ in range(3))
    url, fingerprint = re.search(r"https://127\.0\.0\.1:\d+", banner), re.search(r"fingerprint ([0-9A-F:]+)", banner)
    if not (url and fingerprint):
        proc.kill()
        raise AssertionError(f"console serve did not start: {banner} {(root / 'console.stderr').read_text()}")
    return Server(config, url.group(0), config.state_dir / "console" / "cert.pem", fingerprint.group(1), proc)


def stop(srv: Server) -> None:
    srv.process.terminate()
    srv.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("console"), CONSOLE)
    yield srv
    stop(srv)


def sign_in(c: httpx.Client, name: str, secret: str, *, password: str = PASSWORD,
            code: str | None = None) -> httpx.Response:
    page = c.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return c.post("/login", data={"csrf": token, "username": name, "password": password,
                                  "code": code if code is not None else pyotp.TOTP(secret).now()})


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_certificate_is_generated_with_a_private_key_and_its_fingerprint_printed(server: Server) -> None:
    from backupctl.console.tls import fingerprint

    key = server.config.state_dir / "console" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert fingerprint(server.cert) == server.fingerprint


def test_plain_http_is_not_served(server: Server) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/login", timeout=10)


def test_sign_in_with_password_and_totp_then_status(server: Server) -> None:
    secret = server.user("olga", "operator")
    with server.client() as c:
        r = sign_in(c, "olga", secret)
        assert r.status_code == 303 and r.headers["location"] == "/"
        page = c.get("/status")
        assert page.status_code == 200
        assert "pacs" in page.text          # the job of the installation, from status_report
        assert c.get("/runs").status_code == 200
    login = [r for r in server.audit() if r.action == "console login" and r.actor == "console:olga"]
    assert [r.outcome for r in login] == ["ok"]
    views = [r for r in server.audit() if r.action == "console view" and r.actor == "console:olga"]
    assert {r.details["page"] for r in views} == {"status", "runs"}


def test_wrong_totp_is_refused_and_recorded(server: Server) -> None:
    secret = server.user("walter", "operator")
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 1) % 1_000_000:06d}"
    with server.client() as c:
        r = sign_in(c, "walter", secret, code=wrong)
        assert r.status_code == 401
        assert c.get("/status").status_code == 303      # not signed in: back to the sign-in page
    failed = [r for r in server.audit() if r.action == "console login" and r.actor == "console:walter"]
    assert [(r.outcome, r.details["reason"]) for r in failed] == [("failed", "bad code")]


def test_a_code_is_accepted_once(server: Server) -> None:
    secret = server.user("rita", "operator")
    code = pyotp.TOTP(secret).now()
    with server.client() as c:
        assert sign_in(c, "rita", secret, code=code).status_code == 303
    with server.client() as c:
        assert sign_in(c, "rita", secret, code=code).status_code == 401
    reasons = [r.details["reason"] for r in server.audit() if r.actor == "console:rita"
               and r.action == "console login"]
    assert reasons == ["ok", "replayed code"]


def test_lockout_after_repeated_failures_refuses_even_the_right_credentials(server: Server) -> None:
    secret = server.user("lars", "admin")
    with server.client() as c:
        for _ in range(MAX_FAILURES):
            assert sign_in(c, "lars", secret, password="wrong password!").status_code == 401
        assert sign_in(c, "lars", secret).status_code == 401
    assert {u["name"]: u["locked"] for u in accounts.list_users(server.config.state_dir)}["lars"]
    login = [r for r in server.audit() if r.actor == "console:lars" and r.action == "console login"]
    assert [r.details["reason"] for r in login] == ["bad password"] * MAX_FAILURES + ["locked"]
    assert login[MAX_FAILURES - 1].details.get("locked") is True
    # the audit log's anomaly rule for repeated failed authentication saw them too
    assert any(r.action == "security alert" and r.actor == "console:lars" for r in server.audit())


def test_unknown_user_is_refused_like_a_wrong_password(server: Server) -> None:
    with server.client() as c:
        r = sign_in(c, "nobody", pyotp.random_base32())
        assert r.status_code == 401 and "Sign-in refused" in r.text


def test_form_without_csrf_token_is_forbidden(server: Server) -> None:
    secret = server.user("cora", "operator")
    with server.client() as c:
        c.get("/login")
        r = c.post("/login", data={"username": "cora", "password": PASSWORD, "code": pyotp.TOTP(secret).now()})
        assert r.status_code == 403
        r = c.post("/login", data={"csrf": "forged", "username": "cora", "password": PASSWORD,
                                   "code": pyotp.TOTP(secret).now()})
        assert r.status_code == 403
        assert sign_in(c, "cora", secret).status_code == 303
        assert c.post("/logout", data={}).status_code == 403
        assert c.get("/status").status_code == 200         # the forged sign-out did not end the session
        r = c.post("/logout", data={"csrf": csrf_of(c.get("/"))})
        assert r.status_code == 303
        assert c.get("/status").status_code == 303


@pytest.mark.parametrize("role", ["operator", "manager", "admin", "auditor"])
def test_every_route_is_allowed_or_forbidden_by_the_role_table(server: Server, role: str) -> None:
    secret = server.user(f"matrix-{role}", role)
    pages = {"/": "/", "/status": "/status", "/runs": "/runs", "/drills": "/drills",
             "/reports/{name}": "/reports/none.html", "/audit": "/audit"}
    assert pages.keys() == ROUTES.keys()
    with server.client() as anonymous:
        for url in pages.values():
            r = anonymous.get(url)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    with server.client() as c:
        assert sign_in(c, f"matrix-{role}", secret).status_code == 303
        for route, url in pages.items():
            code = c.get(url).status_code
            if role in ROUTES[route]:
                assert code in (200, 404) if route == "/reports/{name}" else code == 200, (role, url, code)
            else:
                assert code == 403, (role, url, code)
    denied = [r for r in server.audit() if r.actor == f"console:matrix-{role}" and r.action == "console denied"]
    assert len(denied) == sum(role not in roles for roles in ROUTES.values())


def test_security_headers_and_cookie_flags(server: Server) -> None:
    secret = server.user("hedda", "admin")
    with server.client() as c:
        page = c.get("/login")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
        assert page.headers["strict-transport-security"].startswith("max-age=")
        assert "<script" not in page.text
        assert re.search(r'(href|src)="(https?:)?//', page.text) is None      # no third-party assets
        css = c.get("/static/console.css")
        assert css.status_code == 200 and "content-security-policy" in css.headers
        r = sign_in(c, "hedda", secret)
        cookie = r.headers["set-cookie"]
        flags = {f.strip().lower() for f in cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags
        assert cookie.startswith("__Host-")
        # a new session id at sign-in: the visitor's id from the sign-in page does not carry over
        assert page.cookies.get("__Host-backupctl-session") != r.cookies.get("__Host-backupctl-session")


def test_idle_session_expires(server: Server) -> None:
    secret = server.user("ida", "operator")
    with server.client() as c:
        assert sign_in(c, "ida", secret).status_code == 303
        assert c.get("/").status_code == 200
        # the one wait of this file: idleness is the absence of requests, so it cannot be polled for
        time.sleep(IDLE + 0.5)
        r = c.get("/status")
        assert r.status_code == 303 and r.headers["location"] == "/login?expired=1"
        assert "session has ended" in c.get(r.headers["location"]).text


@pytest.mark.slow
def test_absolute_timeout_ends_a_busy_session(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "[console]\nabsolute_timeout_seconds = 2\nidle_timeout_seconds = 600\n")
    try:
        secret = srv.user("abe", "operator")
        with srv.client() as c:
            assert sign_in(c, "abe", secret).status_code == 303
            deadline = time.monotonic() + 60
            while (r := c.get("/status")).status_code == 200:   # every poll keeps the session from idling
                assert time.monotonic() < deadline, "the session outlived its absolute timeout"
                time.sleep(0.2)
            assert r.status_code == 303 and r.headers["location"] == "/login?expired=1"
    finally:
        stop(srv)


def test_audit_page_shows_the_sign_ins(server: Server) -> None:
    secret = server.user("aude", "auditor")
    with server.client() as c:
        assert sign_in(c, "aude", secret).status_code == 303
        page = c.get("/audit")
        assert page.status_code == 200 and "console:aude" in page.text and "console login" in page.text


def test_manager_opens_a_signed_report_with_its_own_policy_and_nothing_outside_the_folder(server: Server) -> None:
    from backupctl.drills.delivery import make_report

    made = make_report(server.config, pdf=False)        # what `backupctl drill report` writes
    name = made.published.report.name
    secret = server.user("mona", "manager")
    with server.client() as c:
        assert sign_in(c, "mona", secret).status_code == 303
        page = c.get("/drills")
        assert f'href="/reports/{name}"' in page.text and f'href="/reports/{name}.sig"' in page.text
        report = c.get(f"/reports/{name}")
        assert report.status_code == 200 and report.content == made.published.report.read_bytes()
        csp = report.headers["content-security-policy"]
        assert "sandbox" in csp and "script" not in csp
        sig = c.get(f"/reports/{name}.sig")
        assert sig.status_code == 200 and "attachment" in sig.headers["content-disposition"]
        for sneaky in ("..%2Fconsole%2Fusers.json", "%2E%2E%2Fconsole%2Fkey.pem", ".hidden.html"):
            assert c.get(f"/reports/{sneaky}").status_code == 404, sneaky
    views = [r.details["page"] for r in server.audit() if r.actor == "console:mona" and r.action == "console view"]
    assert views == ["drills", f"report {name}", f"report {name}.sig"]


def test_visitor_sessions_are_capped() -> None:
    from backupctl.console import sessions

    store = sessions.Sessions(600, 600)
    signed_in = store.new("u", "admin")
    first = store.new()
    for _ in range(sessions.MAX_VISITORS):
        store.new()
    assert store.get(first.sid) == (None, False)        # the oldest visitor made room
    assert store.get(signed_in.sid)[0] is signed_in     # a signed-in session is never dropped for visitors


def test_rate_limit_counts_attempts_per_address() -> None:
    limit = RateLimit(3)
    assert [limit.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("10.0.0.2")


def test_user_add_reads_the_password_from_a_private_file_never_argv(tmp_path: Path) -> None:
    config = make_installation(tmp_path)
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o644)
    refused = cli(config, "console", "user", "add", "anna", "--role", "admin", "--password-file", str(pw))
    assert refused.returncode == 2 and "readable by group or others" in refused.stderr
    pw.chmod(0o600)
    qr, uri_file = tmp_path / "anna.svg", tmp_path / "anna.uri"
    made = cli(config, "console", "user", "add", "anna", "--role", "admin", "--password-file", str(pw), "--json",
               "--qr", str(qr), "--otpauth-file", str(uri_file), check=True)
    out = json.loads(made.stdout)
    assert out["ok"] and out["user"] == "anna"
    uri = uri_file.read_text().strip()
    assert uri.startswith("otpauth://totp/backupctl:anna?") and "secret=" in uri
    secret = re.search(r"secret=([A-Z2-7]+)", uri).group(1)
    assert secret not in made.stdout and secret not in made.stderr
    assert stat.S_IMODE(qr.stat().st_mode) == 0o600 and stat.S_IMODE(uri_file.stat().st_mode) == 0o600
    assert qr.read_text() == accounts.enrolment_qr(uri) and qr.read_text().startswith("<svg")
    users = config.state_dir / "console" / "users.json"
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    stored = json.loads(users.read_text())["users"]["anna"]
    assert stored["hash"].startswith("$argon2id$") and PASSWORD not in users.read_text()
    assert stored["totp"] == secret           # the enrolment handed out is the one the server checks
    bad_role = cli(config, "console", "user", "add", "bob", "--role", "root", "--password-file", str(pw))
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    loaded = load_config(config.path)
    assert [u["name"] for u in accounts.list_users(loaded.state_dir)] == ["anna"]


@pytest.mark.slow
def test_chromium_signs_in_and_sees_the_status_page(server: Server, tmp_path: Path) -> None:
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from playwright.sync_api import sync_playwright

    # trust exactly this certificate's key (as an admin pins it after comparing the printed fingerprint)
    spki = x509.load_pem_x509_certificate(server.cert.read_bytes()).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    secret = server.user("paula", "admin")
    errors: list[str] = []
    hosts: set[str] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            f"--ignore-certificate-errors-spki-list={pin}"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: hosts.add(httpx.URL(r.url).host))
            page.goto(server.url + "/login")
            page.fill("input[name=username]", "paula")
            page.fill("input[name=password]", PASSWORD)
            page.fill("input[name=code]", pyotp.TOTP(secret).now())
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/")
            page.click("a[href='/status']")
            page.wait_for_url(server.url + "/status")
            heading = page.locator("h1#overall").inner_text()
            table_text = page.locator("main").inner_text()
            background = page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
            page.screenshot(path=str(tmp_path / "console-status.png"), full_page=True)
        finally:
            browser.close()
    assert heading in ("All fresh", "Needs attention")
    assert "pacs" in table_text
    assert background == "rgb(29, 53, 87)"       # the package's stylesheet loaded under the CSP
    assert errors == []                          # no CSP violation or failed load
    assert hosts == {"127.0.0.1"}


def test_configured_certificate_is_used_and_a_readable_key_refused(tmp_path: Path) -> None:
    from backupctl.console.tls import certificate, fingerprint
    from backupctl.errors import ConfigError, SecretError

    made = certificate(tmp_path / "state", None, None, "127.0.0.1")
    assert made.generated and certificate(tmp_path / "state", None, None, "127.0.0.1").generated is False
    given = certificate(tmp_path / "elsewhere", made.cert_file, made.key_file, "127.0.0.1")
    assert not given.generated and given.fingerprint == fingerprint(made.cert_file)
    assert not (tmp_path / "elsewhere").exists()            # nothing generated when one is configured
    made.key_file.chmod(0o644)
    with pytest.raises(SecretError, match="readable by group or others"):
        certificate(tmp_path / "elsewhere", made.cert_file, made.key_file, "127.0.0.1")
    with pytest.raises(ConfigError, match="cert_file and key_file"):
        make_installation(tmp_path / "half", config_text=CONFIG_TEXT + '[console]\ncert_file = "c.pem"\n')
