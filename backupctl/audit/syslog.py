"""Forwarding audit records as RFC 5424 syslog messages carrying DICOM audit XML (IHE ATNA).

`[audit] forward = "tls://host:6514"` (RFC 5425: TLS, octet-counting framing), `tcp://` (RFC 6587 octet
counting) or `udp://` (RFC 5426, one datagram per message). The log itself is the queue: a cursor file holds
the last record delivered, so records written while the receiver is down are sent, in order, by the next
process that finds it up, and none is lost across a restart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from backupctl.audit.dicom import audit_message
from backupctl.audit.log import Record, audit_dir, log_path
from backupctl.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from backupctl.config import Config

log = logging.getLogger("backupctl.audit")
BOM = b"\xef\xbb\xbf"
MSGID = "IHE+RFC-3881"        # IHE ITI-20: the MSGID of a syslog message carrying a DICOM audit message
FACILITY_AUTHPRIV = 10
CURSOR_NAME = "forward.cursor"
CONFIRM_SECONDS = 10.0     # how long a receiver may take to close after our end of the stream


def syslog_message(record: Record, xml: str, app: str = "backupctl") -> bytes:
    """One RFC 5424 message: header, no structured data, the XML as UTF-8 with a BOM."""
    severity = 5 if record.outcome in ("ok", "started") else 4    # notice, or warning
    if record.action == "security alert":
        severity = 1                                           # alert
    header = f"<{FACILITY_AUTHPRIV * 8 + severity}>1 {record.time} {record.host or '-'} {app} {record.pid} {MSGID} - "
    return header.encode("ascii", "replace") + BOM + xml.encode("utf-8")


def octet_counted(message: bytes) -> bytes:
    return f"{len(message)} ".encode("ascii") + message


@dataclass(frozen=True)
class Destination:
    scheme: str        # tls | tcp | udp
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Destination:
        parts = urlsplit(url)
        if parts.scheme not in ("tls", "tcp", "udp") or not parts.hostname or not parts.port:
            raise ValueError(f"not a syslog destination: {url!r} (expected tls://host:port, tcp:// or udp://)")
        return cls(parts.scheme, parts.hostname, parts.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


class Connection:
    """One connection to the receiver; `send` frames each message for its transport."""

    def __init__(self, dest: Destination, *, ca_file: Path | None = None, client_cert: Path | None = None,
                 timeout: float = 5.0) -> None:
        self.dest = dest
        if dest.scheme == "udp":
            self.sock: socket.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.settimeout(timeout)
            self.sock.connect((dest.host, dest.port))
            return
        raw = socket.create_connection((dest.host, dest.port), timeout=timeout)
        if dest.scheme == "tcp":
            self.sock = raw
            return
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_cert is not None:
            context.load_cert_chain(str(client_cert))
        try:
            self.sock = context.wrap_socket(raw, server_hostname=dest.host)
        except BaseException:
            raw.close()
            raise

    def send(self, message: bytes) -> None:
        if self.dest.scheme == "udp":
            self.sock.send(message)
        else:
            self.sock.sendall(octet_counted(message))

    def confirm(self) -> None:
        """Raise OSError unless the receiver took what was sent: TLS 1.3 finishes the handshake before the
        server has checked our certificate, so a refused connection still accepts our writes. Closing the
        stream and waiting for the receiver to close its side proves it read up to our end (for TLS, our
        close_notify; a refusal arrives as an alert or a broken pipe instead)."""
        if self.dest.scheme == "udp":
            return
        self.sock.settimeout(CONFIRM_SECONDS)
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock.unwrap()
            else:
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.recv(1)
        except ssl.SSLEOFError:
            pass          # the receiver closed after reading our close_notify, without one of its own
        except TimeoutError:
            # not known to be delivered: the records stay queued and go again (a duplicate in the repository
            # is better than a hole in the trail)
            raise OSError(f"the receiver did not confirm within {CONFIRM_SECONDS:.0f} s") from None

    def close(self) -> None:
        self.sock.close()


def connect(config: Config) -> Connection:
    from backupctl.secrets import check_private_file

    cfg = config.settings.audit
    assert cfg.forward is not None
    client_cert = config.resolve(cfg.client_cert) if cfg.client_cert else None
    if client_cert is not None:
        check_private_file(client_cert, "audit client certificate (with its key)")
    return Connection(Destination.parse(cfg.forward),
                      ca_file=config.resolve(cfg.ca_bundle) if cfg.ca_bundle else None, client_cert=client_cert)


def message_of(config: Config, record: Record) -> bytes:
    cfg = config.settings.audit
    xml = audit_message(record, site=cfg.site, log_uri=log_path(config.state_dir).as_uri())
    return syslog_message(record, xml)


@dataclass
class ForwardResult:
    destination: str
    sent: int = 0
    pending: int = 0
    error: str | None = None
    last_seq: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _cursor_path(config: Config) -> Path:
    return audit_dir(config.state_dir) / CURSOR_NAME


def read_cursor(config: Config) -> tuple[int, int]:
    """(last record delivered, byte offset just after it in the log)."""
    try:
        data = json.loads(_cursor_path(config).read_bytes())
        return int(data["seq"]), int(data.get("offset", 0))
    except FileNotFoundError:
        return 0, 0
    except (ValueError, KeyError, TypeError):
        log.warning("audit forward cursor unreadable: every record is sent again")
        return 0, 0


def _write_cursor(config: Config, record: Record, offset: int) -> None:
    data = {"seq": record.seq, "hash": record.hash, "offset": offset}
    atomic_write_bytes(_cursor_path(config), json.dumps(data).encode(), mode=0o600)


def _queued(path: Path, done: int, offset: int) -> list[tuple[Record, int]]:
    """The records after `done`, each with the offset just after its line; read from `offset` when that
    still points at the record after `done` (a long log is not read again from its start)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return []
    found: list[tuple[Record, int]] = []
    position = offset
    for line in data.split(b"\n")[:-1]:     # a line still being written has no newline yet
        position += len(line) + 1
        try:
            record = Record.parse(line)
        except ValueError:
            continue
        if record.seq > done:
            found.append((record, position))
    if offset and data and (not found or found[0][0].seq != done + 1):
        return _queued(path, done, 0)     # the log changed under the cursor: find the place by number
    return found


def forward_pending(config: Config) -> ForwardResult | None:
    """Send every record after the cursor, in order; stop at the first failure and keep the rest queued."""
    cfg = config.settings.audit
    if cfg.forward is None:
        return None
    folder = audit_dir(config.state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / "forward.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # one forwarder at a time: two would send the same records twice, and out of order
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _forward_locked(config, cfg.forward)
    finally:
        os.close(fd)


def _forward_locked(config: Config, url: str) -> ForwardResult:
    result = ForwardResult(url)
    done, offset = read_cursor(config)
    queue = _queued(log_path(config.state_dir), done, offset)
    result.pending, result.last_seq = len(queue), done
    if not queue:
        return result
    try:
        connection = connect(config)
    except (OSError, ssl.SSLError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    last: tuple[Record, int] | None = None
    sent = 0
    try:
        for record, end in queue:
            connection.send(message_of(config, record))
            last = (record, end)
            sent += 1
        connection.confirm()
    except (OSError, ssl.SSLError) as exc:
        # nothing of this connection is known to have arrived: all of it stays queued (sent again later,
        # perhaps twice, never out of order)
        result.error = f"{type(exc).__name__}: {exc}"
        last, sent = None, 0
    finally:
        connection.close()
    if last is not None:
        _write_cursor(config, *last)
        result.last_seq = last[0].seq
    result.sent = sent
    result.pending -= sent
    return result
