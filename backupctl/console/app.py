"""The console's routes. `ROUTES` is the one table of who may open what; `page` enforces it on the server for
every route, before the page's code runs. The pages call the same functions as the CLI (`status --json`,
`runs`, `drill list`, the audit log reader): the console has no second implementation of anything.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backupctl import audit
from backupctl.console import accounts
from backupctl.console.sessions import RateLimit, Session, Sessions

if TYPE_CHECKING:
    from backupctl.config import Config

HERE = Path(__file__).parent
COOKIE = "__Host-backupctl-session"   # __Host-: the browser insists on Secure, Path=/ and no Domain
ALL = frozenset(accounts.ROLES)

# who may open what; every route of the app is in here (tests/test_console.py checks each role against it)
ROUTES: dict[str, frozenset[str]] = {
    "/": ALL,
    "/status": frozenset({"operator", "admin"}),
    "/runs": frozenset({"operator", "admin"}),
    "/drills": frozenset({"manager", "admin"}),
    "/reports/{name}": frozenset({"manager", "admin"}),
    "/audit": frozenset({"auditor", "admin"}),
}
SIGN_IN_REFUSED = "ConsoleSignInRefused"   # the audit rules count it with the other failed authentications

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
# a signed drill report is a document of its own (inline styles, SVG charts): shown sandboxed, still no script
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
HEADERS = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(html|pdf|sig|pem|json|md)$")


class SecurityHeaders:
    """Adds the security headers to every response, errors and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])]
                names = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Console:
    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.settings.console
        self.settings = settings
        self.sessions = Sessions(settings.idle_timeout_seconds, settings.absolute_timeout_seconds)
        self.limit = RateLimit(settings.login_attempts_per_minute)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.sid, path="/", secure=True, httponly=True, samesite="strict")

    def _visitor(self, request: Request) -> tuple[Session, bool, bool]:
        """The request's session (a new visitor session when it has none), whether a signed-in one just
        expired, and whether the session is new (its cookie must be set)."""
        session, expired = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return session, expired, False
        return self.sessions.new(), expired, True

    def render(self, request: Request, template: str, session: Session, status: int = 200,
               **context: Any) -> Response:
        allowed = [p for p in ("/status", "/runs", "/drills", "/audit") if session.role in ROUTES[p]]
        response = self.templates.TemplateResponse(request, template, {
            "session": session, "csrf": session.csrf, "nav": allowed, **context}, status_code=status)
        return response

    def _record(self, action: str, outcome: str, user: str, request: Request, **details: Any) -> None:
        client = request.client.host if request.client else None
        audit.record(self.config, action, outcome, actor=f"console:{user[:64]}",
                     details={"client": client, **details})

    async def _csrf_ok(self, request: Request, session: Session) -> tuple[bool, Any]:
        form = await request.form()
        token = form.get("csrf")
        return isinstance(token, str) and secrets.compare_digest(token, session.csrf), form

    def page(self, path: str, handler: Callable[[Request, Session], Awaitable[Response]]) -> Route:
        roles = ROUTES[path]

        async def endpoint(request: Request) -> Response:
            session, expired = self.sessions.get(request.cookies.get(COOKIE))
            if session is None or session.user is None:
                return RedirectResponse("/login?expired=1" if expired else "/login", status_code=303)
            if session.role not in roles:
                await run_in_threadpool(self._record, "console denied", "refused", session.user, request,
                                        page=request.url.path, role=session.role)
                return PlainTextResponse("forbidden: your role may not open this page", status_code=403)
            return await handler(request, session)

        return Route(path, endpoint, methods=["GET"])

    # -- sign-in -----------------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        session, expired, new = self._visitor(request)
        if session.user is not None:
            return RedirectResponse("/", status_code=303)
        note = "Your session has ended; sign in again." if expired or request.query_params.get("expired") else None
        response = self.render(request, "login.html", session, note=note)
        if new:
            self._set_cookie(response, session)
        return response

    async def login(self, request: Request) -> Response:
        session, _ = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return PlainTextResponse("forbidden: no session (reload the sign-in page)", status_code=403)
        ok, form = await self._csrf_ok(request, session)
        if not ok:
            return PlainTextResponse("forbidden: missing or wrong CSRF token", status_code=403)
        name = str(form.get("username", "")).strip()
        password, code = str(form.get("password", "")), str(form.get("code", ""))
        client = request.client.host if request.client else "?"
        if not self.limit.allow(client):
            await run_in_threadpool(self._record, "console login", "refused", name, request, reason="rate limit",
                                    error=SIGN_IN_REFUSED)
            return self.render(request, "login.html", session, status=429,
                               note="Too many sign-in attempts from this address; wait a minute.")
        s = self.settings
        result = await run_in_threadpool(accounts.sign_in, self.config.state_dir, name, password, code,
                                         max_failures=s.max_failures, lockout_seconds=s.lockout_seconds)
        await run_in_threadpool(self._record, "console login", "ok" if result.ok else "failed", name, request,
                                reason=result.reason, locked=result.locked or None,
                                error=None if result.ok else SIGN_IN_REFUSED)
        if not result.ok:
            # one message for every refusal: it does not tell which of name, password or code was wrong
            return self.render(request, "login.html", session, status=401,
                               note="Sign-in refused (or the account is locked).")
        self.sessions.drop(session.sid)          # a new id at sign-in: no session fixation
        signed_in = self.sessions.new(name, result.role)
        response = RedirectResponse("/", status_code=303)
        self._set_cookie(response, signed_in)
        return response

    async def logout(self, request: Request) -> Response:
        session, _ = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return RedirectResponse("/login", status_code=303)
        ok, _ = await self._csrf_ok(request, session)
        if not ok:
            return PlainTextResponse("forbidden: missing or wrong CSRF token", status_code=403)
        self.sessions.drop(session.sid)
        if session.user:
            await run_in_threadpool(self._record, "console logout", "ok", session.user, request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- pages -------------------------------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return self.render(request, "home.html", session)

    async def _viewed(self, request: Request, session: Session, page: str) -> None:
        # the pages show run errors, drill studies and audit ids: every view is on the record
        assert session.user is not None
        await run_in_threadpool(self._record, "console view", "ok", session.user, request, page=page)

    async def status(self, request: Request, session: Session) -> Response:
        from backupctl.cli.scheduler import status_report  # what `backupctl status --json` prints

        report = await run_in_threadpool(status_report, self.config)
        await self._viewed(request, session, "status")
        return self.render(request, "status.html", session, report=report)

    async def runs(self, request: Request, session: Session) -> Response:
        from backupctl.catalog import open_catalog
        from backupctl.catalog.runs import list_runs

        def read() -> list[dict[str, Any]]:
            with open_catalog(self.config.catalog_path) as catalog:
                return list_runs(catalog, request.query_params.get("job") or None, limit=100)

        rows = await run_in_threadpool(read)
        await self._viewed(request, session, "runs")
        return self.render(request, "runs.html", session, runs=rows)

    async def drills(self, request: Request, session: Session) -> Response:
        from backupctl.catalog import open_catalog
        from backupctl.catalog.drills import list_drills
        from backupctl.drills.report import recovery_text, rto_text  # the words `drill list` prints

        def read() -> list[dict[str, Any]]:
            with open_catalog(self.config.catalog_path) as catalog:
                rows = list_drills(catalog, limit=100)
            return [{**r, "recovery": recovery_text(r), "rto": rto_text(r)} for r in rows]

        rows = await run_in_threadpool(read)
        await self._viewed(request, session, "drills")
        keys = sorted(p.name for p in (self.config.state_dir / "reports").glob("report-key-*.pem"))
        return self.render(request, "drills.html", session, drills=rows, reports=self._reports(), keys=keys)

    def _reports(self) -> list[dict[str, Any]]:
        """The signed reports (an HTML or PDF file with its detached `.sig` beside it), newest first."""
        folder = self.config.state_dir / "reports"
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.suffix in (".html", ".pdf") and _REPORT_NAME.match(p.name)
                 and p.with_name(p.name + ".sig").exists()]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [{"name": p.name, "signature": p.name + ".sig"} for p in found]

    async def report(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        folder = self.config.state_dir / "reports"
        path = folder / name
        if not _REPORT_NAME.match(name) or not path.is_file() or path.parent != folder:
            return PlainTextResponse("no such report", status_code=404)
        await self._viewed(request, session, f"report {name}")
        response = FileResponse(path)
        response.headers["content-security-policy"] = REPORT_CSP
        if path.suffix not in (".html", ".pdf"):
            response.headers["content-disposition"] = f'attachment; filename="{name}"'
        return response

    async def audit_log(self, request: Request, session: Session) -> Response:
        from backupctl.audit.log import log_path, records

        def read() -> list[Any]:
            rows = list(records(log_path(self.config.state_dir)))
            return rows[-200:][::-1]

        await self._viewed(request, session, "audit")
        rows = await run_in_threadpool(read)
        return self.render(request, "audit.html", session, records=rows)

    def routes(self) -> list[Any]:
        handlers = {"/": self.home, "/status": self.status, "/runs": self.runs, "/drills": self.drills,
                    "/reports/{name}": self.report, "/audit": self.audit_log}
        assert handlers.keys() == ROUTES.keys()
        return [Route("/login", self.login_form, methods=["GET"]), Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
                *(self.page(path, handler) for path, handler in handlers.items())]


def create_app(config: Config) -> ASGIApp:
    console = Console(config)
    app = Starlette(routes=console.routes())
    app.state.console = console
    return SecurityHeaders(app)
