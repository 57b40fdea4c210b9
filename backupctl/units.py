"""How sizes and times read in every output (CLI tables, reports): binary units with one decimal; times
with their zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def zoned_time(iso: str | None, *, local: bool = True) -> str:
    """A recorded time (ISO 8601, UTC in the catalog; restic's with nanoseconds) as 'YYYY-MM-DD HH:MM:SS ZONE',
    in this host's zone or in UTC: a bare clock time is ambiguous across sites and daylight-saving changes."""
    if not iso:
        return "-"
    text = re.sub(r"(\.\d{6})\d+", r"\1", iso.replace("Z", "+00:00"))   # Python reads microseconds at most
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return iso
    if when.tzinfo is None:   # the catalog writes UTC
        when = when.replace(tzinfo=UTC)
    return (when.astimezone() if local else when.astimezone(UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
