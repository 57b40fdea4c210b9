"""`backupctl console serve`: uvicorn with TLS and nothing else (there is no plain-HTTP listener)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from backupctl.console.tls import Certificate, certificate
from backupctl.errors import ConsoleError

if TYPE_CHECKING:
    import uvicorn

    from backupctl.config import Config


def prepare(config: Config, host: str | None = None, port: int | None = None) -> tuple[uvicorn.Server, Certificate]:
    """The configured server (not yet started) and its certificate."""
    import uvicorn

    from backupctl.console.app import create_app

    settings = config.settings.console
    host = host or settings.host
    port = settings.port if port is None else port
    cert = certificate(config.state_dir, config.resolve(settings.cert_file) if settings.cert_file else None,
                       config.resolve(settings.key_file) if settings.key_file else None, host)
    uv = uvicorn.Config(create_app(config), host=host, port=port, ssl_certfile=str(cert.cert_file),
                        ssl_keyfile=str(cert.key_file), ssl_version=ssl.PROTOCOL_TLS_SERVER,
                        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20", proxy_headers=False, server_header=False,
                        log_level="warning", access_log=False, lifespan="off")
    try:
        server = uvicorn.Server(uv)
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleError(f"the console cannot start: {exc}") from None
    return server, cert


def serve(config: Config, host: str | None = None, port: int | None = None,
          started: Callable[[Certificate, str, int], None] | None = None) -> None:
    server, cert = prepare(config, host, port)
    if started is not None:
        started(cert, server.config.host, server.config.port)
    try:
        server.run()
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleError(f"the console cannot start: {exc}") from None
