"""`console serve`, `console user add`, `console user list`: the web console (docs/console.md)."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import common
from backupctl.cli.common import out, print_json
from backupctl.errors import ConsoleError

app = typer.Typer(help="The web console: serve it over HTTPS, manage its accounts.", no_args_is_help=True)
users = typer.Typer(help="Console accounts (password + TOTP, one role each).", no_args_is_help=True)
app.add_typer(users, name="user")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
PASSWORD_ENV = "BACKUPCTL_CONSOLE_PASSWORD"


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on [default: [console] host, "
                                             "127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port [default: [console] port, 8443].")] = None,
) -> None:
    """Serve the console over HTTPS until interrupted (the certificate's SHA-256 fingerprint is printed)."""
    from backupctl.console.accounts import list_users
    from backupctl.console.server import serve as run

    config = common.load()
    if not list_users(config.state_dir):
        common.err.print("warning: no console users yet: nobody can sign in "
                         "(add one with `backupctl console user add NAME --role admin`)", highlight=False)

    def started(cert, host: str, port: int) -> None:  # noqa: ANN001 - console.tls.Certificate
        made = " (self-signed, made now)" if cert.generated else ""
        # plain echo: rich would read ':CD:' in a fingerprint as an emoji code
        typer.echo(f"console: https://{host}:{port}/\ncertificate {cert.cert_file}{made}\n"
                   f"SHA-256 fingerprint {cert.fingerprint}")
        sys.stdout.flush()

    run(config, host, port, started)


def _password(password_file: Path | None) -> str:
    """From a 0600 file, the environment or a prompt: never from the command line (argv is public)."""
    if password_file is not None:
        from backupctl.secrets import read_secret

        return read_secret(password_file, "console password file").rstrip("\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ConsoleError("no password given", hint=f"use --password-file (mode 600), {PASSWORD_ENV} or a terminal")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@users.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The account's name.")],
    role: Annotated[str, typer.Option("--role", help="operator, admin, manager or auditor.")],
    password_file: Annotated[Path | None, typer.Option("--password-file", help="A 0600 file holding the "
                                                       f"password (else {PASSWORD_ENV} or a prompt).")] = None,
    qr: Annotated[Path | None, typer.Option("--qr", help="Write the TOTP enrolment as a QR code (SVG, mode 600) "
                                            "to this file, for the user's authenticator app.")] = None,
    otpauth_file: Annotated[Path | None, typer.Option("--otpauth-file", help="Write the otpauth:// URI (mode "
                                                      "600) to this file instead of the terminal.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Add an account with its TOTP second factor. The enrolment (secret, otpauth:// URI) is shown once: on the
    terminal, or only in the --qr / --otpauth-file files (always so with --json, which never prints it)."""
    from backupctl.console.accounts import add_user, enrolment_qr
    from backupctl.fsutil import atomic_write_text

    config = common.load()
    made = add_user(config.state_dir, name, role, _password(password_file))
    if qr is not None:
        atomic_write_text(qr, enrolment_qr(made.uri), mode=0o600)
    if otpauth_file is not None:
        atomic_write_text(otpauth_file, made.uri + "\n", mode=0o600)
    if json_output:
        print_json({"ok": True, "user": made.name, "role": made.role, "qr_file": str(qr) if qr else None,
                    "otpauth_file": str(otpauth_file) if otpauth_file else None})
        return
    out.print(f"user {made.name} added with role {made.role}", highlight=False)
    if qr is not None:
        out.print(f"TOTP enrolment QR code written to {qr}: scan it, then delete the file", highlight=False)
    if otpauth_file is not None:
        out.print(f"TOTP enrolment URI written to {otpauth_file}", highlight=False)
    if qr is None and otpauth_file is None:
        typer.echo("Enrol the second factor now (shown only once) in an authenticator app:\n"
                   f"  secret: {made.secret}\n  URI:    {made.uri}")


@users.command("list")
def user_list(json_output: JsonOpt = False) -> None:
    """The accounts, their roles and whether they are locked."""
    from backupctl.console.accounts import list_users

    config = common.load()
    rows = list_users(config.state_dir)
    if json_output:
        print_json({"ok": True, "users": rows})
        return
    for u in rows:
        out.print(f"{u['name']}  {u['role']}" + ("  (locked)" if u["locked"] else ""), highlight=False)
    if not rows:
        out.print("no console users (add one with `backupctl console user add NAME --role ROLE`)")
