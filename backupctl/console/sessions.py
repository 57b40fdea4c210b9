"""Signed-in sessions, in the server's memory: a restart signs everyone out, which is the safe default.

A session id is 32 random bytes; a new one is issued at sign-in (no fixation). Sessions end after
`idle_timeout` without a request and `absolute_timeout` after sign-in, whichever comes first.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Session:
    sid: str
    csrf: str
    user: str | None = None         # None: a visitor who has not signed in (holds only a CSRF token)
    role: str | None = None
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


MAX_VISITORS = 10_000   # sessions without a user (a sign-in page's CSRF token): beyond this, the oldest go


class Sessions:
    def __init__(self, idle_timeout: float, absolute_timeout: float) -> None:
        self.idle, self.absolute = idle_timeout, absolute_timeout
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: str | None = None, role: str | None = None) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, role)
        with self._lock:
            self._expire()
            if user is None:
                visitors = [v for v in self._by_id.values() if v.user is None]
                for old in sorted(visitors, key=lambda v: v.seen)[: max(0, len(visitors) - MAX_VISITORS + 1)]:
                    del self._by_id[old.sid]
            self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None) -> tuple[Session | None, bool]:
        """The live session and whether one of this id just expired (to tell the user why)."""
        if not sid:
            return None, False
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None, False
            if now - s.seen > self.idle or now - s.created > self.absolute:
                del self._by_id[sid]
                return None, s.user is not None
            s.seen = now
            return s, False

    def drop(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._by_id.items() if now - s.seen > self.idle or now - s.created > self.absolute]:
            del self._by_id[sid]


class RateLimit:
    """At most `per_minute` sign-in attempts per client address in any 60 s window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(client, deque())
            while hits and now - hits[0] > 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return False
            hits.append(now)
            return True
