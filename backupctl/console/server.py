"""`backupctl console serve`: uvicorn with TLS and nothing else (there is no plain-HTTP listener)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

from backupctl.console.tls import Certificate, certificate
from backupctl.errors import ConsoleError

if TYPE_CHECKING:
    from backupctl.config import Config

Started = Callable[[Certificate, str, int], None]


class _Server(uvicorn.Server):
    """Tells `started` once the socket listens, so the banner never announces a server that failed to bind."""

    def __init__(self, config: uvicorn.Config, cert: Certificate, started: Started | None) -> None:
        super().__init__(config)
        self.cert, self.on_started = cert, started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            # the bound port: with port 0 the kernel chose it
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            self.on_started(self.cert, self.config.host, port)


def serve(config: Config, host: str | None = None, port: int | None = None, started: Started | None = None) -> None:
    from backupctl.console.app import create_app

    settings = config.settings.console
    host = host or settings.host
    port = settings.port if port is None else port
    cert = certificate(config.state_dir, config.resolve(settings.cert_file) if settings.cert_file else None,
                       config.resolve(settings.key_file) if settings.key_file else None, host)
    uv = uvicorn.Config(create_app(config), host=host, port=port, ssl_certfile=str(cert.cert_file),
                        ssl_keyfile=str(cert.key_file), ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
                        proxy_headers=False, server_header=False, log_level="warning", access_log=False,
                        lifespan="off")
    try:
        _Server(uv, cert, started).run()
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleError(f"the console cannot start: {exc}") from None
    except SystemExit:   # uvicorn exits when it cannot bind; it has logged why
        raise ConsoleError(f"the console cannot listen on {host}:{port}",
                           hint="another process holds the port, or it needs privileges") from None
