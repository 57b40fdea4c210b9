"""The audit log: one JSON line per action, each sealing the one before it with its SHA-256 (a hash chain).

`<state>/audit/audit.log`, mode 0600. A line is the compact JSON of a record with sorted keys; its hash is
the SHA-256 of the line's bytes (without the newline), and the next record carries it as `prev`. Appends are
serialised across processes with flock on the log itself and fsynced before the lock is released.

This file is the one exception to "write a temporary file and rename it": it only ever grows, and a rename
would lose the lines other processes append meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.fsutil import fsync_dir

GENESIS = "0" * 64
AUDIT_DIR = "audit"
LOG_NAME = "audit.log"
_TAIL_CHUNK = 64 * 1024


def audit_dir(state_dir: Path) -> Path:
    return state_dir / AUDIT_DIR


def log_path(state_dir: Path) -> Path:
    return audit_dir(state_dir) / LOG_NAME


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def current_actor() -> str:
    """The OS user running this process (by its effective uid: sudo shows as root, and that is the truth)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid:{os.geteuid()}"


def utc_time(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Record:
    seq: int
    time: str
    action: str
    outcome: str
    actor: str
    host: str
    pid: int
    prev: str
    ids: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    hash: str = ""          # of this record's line; not part of the line itself

    def fields(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "action": self.action, "outcome": self.outcome,
                "actor": self.actor, "host": self.host, "pid": self.pid, "ids": self.ids,
                "details": self.details, "prev": self.prev}

    def line(self) -> bytes:
        return json.dumps(self.fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=str).encode("utf-8")

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.time)

    @classmethod
    def parse(cls, line: bytes) -> Record:
        """A record from its line; ValueError when the line is not one."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(seq=int(data["seq"]), time=str(data["time"]), action=str(data["action"]),
                       outcome=str(data["outcome"]), actor=str(data["actor"]), host=str(data["host"]),
                       pid=int(data["pid"]), prev=str(data["prev"]), ids=dict(data.get("ids") or {}),
                       details=dict(data.get("details") or {}), hash=line_hash(line))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None


def _last_line(fd: int) -> bytes | None:
    """The last complete-or-torn line of the open log (read from its end, never the whole file)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    pos, tail = size, b""
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        body = tail.rstrip(b"\n")
        if b"\n" in body or pos == 0:
            return body.rsplit(b"\n", 1)[-1]
    return None


def append(log: Path, action: str, outcome: str, *, actor: str, ids: dict[str, Any] | None = None,
           details: dict[str, Any] | None = None, now: datetime | None = None) -> Record:
    """Append one record, chained to the last one; returns it with its hash. Raises OSError on failure."""
    created = not log.exists()
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev, seq = GENESIS, 1
        if last:
            prev = line_hash(last)
            try:
                seq = Record.parse(last).seq + 1
            except ValueError:
                # a damaged last line: keep counting by position; `audit verify` names the damage
                seq = _count_lines(fd) + 1
        record = Record(seq=seq, time=utc_time(now), action=action, outcome=outcome, actor=actor,
                        host=socket.gethostname(), pid=os.getpid(), prev=prev, ids=dict(ids or {}),
                        details=dict(details or {}))
        line = record.line()
        size = os.fstat(fd).st_size
        # a line torn by a crash stays a line of its own (and a named break), never the start of this one
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (b"\n" if torn else b"") + line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)   # releases the lock
    if created:
        fsync_dir(log.parent)
    return Record(**{**record.fields(), "hash": line_hash(line)})


def _count_lines(fd: int) -> int:
    count, pos = 0, 0
    while chunk := os.pread(fd, 1 << 20, pos):
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


def last_state(log: Path) -> tuple[int, str]:
    """(count, hash of the last line) read from the log's end: what a checkpoint seals, without a full read."""
    try:
        fd = os.open(log, os.O_RDONLY)
    except FileNotFoundError:
        return 0, GENESIS
    try:
        last = _last_line(fd)
        if not last:
            return 0, GENESIS
        try:
            return Record.parse(last).seq, line_hash(last)
        except ValueError:
            return _count_lines(fd), line_hash(last)
    finally:
        os.close(fd)


def read_lines(log: Path) -> list[bytes]:
    """Every line of the log, without newlines ([] when there is no log yet)."""
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def records(log: Path) -> Iterator[Record]:
    """The log's records in file order; lines that are not records are skipped (verify names them)."""
    for line in read_lines(log):
        try:
            yield Record.parse(line)
        except ValueError:
            continue


def tail_since(log: Path, since: datetime) -> list[Record]:
    """The records written at or after `since`, read backwards from the end (the anomaly rules' window)."""
    if not log.exists():
        return []
    found: list[Record] = []
    with open(log, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos, rest = fh.tell(), b""
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            rest = fh.read(step) + rest
            lines = rest.split(b"\n")
            rest = lines.pop(0) if pos > 0 else b""
            for line in reversed(lines):
                if not line:
                    continue
                try:
                    record = Record.parse(line)
                except ValueError:
                    continue
                if record.when < since:
                    return list(reversed(found))
                found.append(record)
    return list(reversed(found))


# verification of the chain -------------------------------------------------------------------------------


@dataclass
class ChainReport:
    count: int = 0                            # lines in the log
    last_hash: str = GENESIS
    hashes: list[str] = field(default_factory=list)   # hash of each line, by position
    broken: str | None = None                 # the first break, naming the record
    broken_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_chain(log: Path) -> ChainReport:
    """Walk the chain and name the first record that was edited, deleted or moved."""
    lines = read_lines(log)
    report = ChainReport(count=len(lines), hashes=[line_hash(line) for line in lines])
    report.last_hash = report.hashes[-1] if lines else GENESIS
    parsed: list[Record] = []
    for position, line in enumerate(lines, 1):
        try:
            parsed.append(Record.parse(line))
        except ValueError as exc:
            return _broken(report, position, f"record {position} (line {position}) is not a valid record "
                                             f"({exc}): it was edited or torn")
    seqs = [r.seq for r in parsed]
    prev = GENESIS
    for position, record in enumerate(parsed, 1):
        if record.seq != position:
            if position in seqs[position:]:
                where = seqs.index(position, position) + 1
                return _broken(report, position, f"record {position} was moved: it is at line {where}, and "
                                                 f"line {position} holds record {record.seq}")
            if record.seq > position:
                gone = f"{position}" if record.seq == position + 1 else f"{position} to {record.seq - 1}"
                return _broken(report, position, f"record {gone} was deleted: line {position} holds record "
                                                 f"{record.seq}")
            return _broken(report, position, f"record {record.seq} appears again at line {position}")
        if record.prev != prev:
            if position == 1:
                return _broken(report, 1, "record 1 does not start the chain: records before it were removed")
            return _broken(report, position - 1, f"record {position - 1} was altered: its hash no longer "
                                                 f"matches the `prev` sealed in record {position}")
        prev = report.hashes[position - 1]
    return report


def _broken(report: ChainReport, seq: int, text: str) -> ChainReport:
    report.broken, report.broken_seq = text, seq
    return report
