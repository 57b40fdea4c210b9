"""A small syslog receiver (TCP, RFC 6587 octet counting) for the demo: it stands in for an ATNA repository.

Not for production: a hospital's repository (or rsyslog in front of it) receives over TLS; see docs/audit.md.
"""

from __future__ import annotations

import socket
import socketserver
import threading


class SyslogReceiver:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        lock = threading.Lock()
        received = self.messages

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    length = b""
                    while (c := self.rfile.read(1)) not in (b" ", b""):
                        length += c
                    if not length.isdigit():
                        return
                    message = self.rfile.read(int(length))
                    with lock:
                        received.append(message)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
