"""What a drill restores: which snapshot and which studies (the restic patterns for them come from
`verify.restore.include_patterns`).

Every random choice goes through one `random.Random(seed)`, and the seed is recorded with the drill, so a
drill can be repeated exactly (`drill run NAME --seed N`).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backupctl.errors import SelectionError
from backupctl.manifest import DICOM, Entry, Manifest
from backupctl.restic import Snapshot

_RESTIC_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def snapshot_datetime(text: str) -> datetime:
    """restic's RFC 3339 time (nanoseconds, 'Z' or an offset) as an aware datetime."""
    m = _RESTIC_TIME.match(text)
    if not m:
        raise ValueError(f"not a restic time: {text!r}")
    fraction = (m[2] or ".0")[:7]  # Python keeps microseconds
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + fraction + zone)


def choose_snapshot(snapshots: list[Snapshot], rule: str, rng: random.Random,
                    now: datetime | None = None) -> Snapshot:
    """The snapshot a drill restores: 'latest', 'random:<days>' (any of the last N days) or an id/prefix."""
    if not snapshots:
        raise SelectionError("the copy holds no snapshot of this job")
    ordered = sorted(snapshots, key=lambda s: snapshot_datetime(s.time))
    if rule == "latest":
        return ordered[-1]
    if rule.startswith("random:"):
        days = int(rule.split(":", 1)[1])
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        recent = [s for s in ordered if snapshot_datetime(s.time) >= since]
        if not recent:
            raise SelectionError(f"no snapshot of this job in the last {days} day(s) "
                                 f"(newest: {ordered[-1].short_id} at {ordered[-1].time[:19]})")
        return rng.choice(recent)
    found = [s for s in ordered if s.id.startswith(rule)]
    if len(found) != 1:
        raise SelectionError(f"snapshot {rule} is not in the copy" if not found
                             else f"snapshot prefix {rule} is ambiguous ({len(found)} snapshots)")
    return found[0]


@dataclass
class Scope:
    """The manifest entries a drill restores and checks, grouped by study."""

    studies: list[str]                       # empty when the snapshot holds no DICOM study
    entries: list[Entry]                     # every entry in scope
    by_study: dict[str, list[Entry]]
    whole: bool                              # the whole snapshot (scope 'all')

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries if e.sha256 is not None)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.sha256 is not None)


def _content_entries(manifest: Manifest) -> list[Entry]:
    return list(manifest.entries)


def studies_of(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    found: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind == DICOM and e.study:
            found[e.study].append(e)
    return dict(found)


def choose_scope(manifest: Manifest, scope: str, listed: list[str], rng: random.Random) -> Scope:
    """The studies and files to restore for scope 'all', 'sample:<K>' or 'studies' (the `listed` UIDs)."""
    by_study = studies_of(manifest.entries)
    available = sorted(by_study)
    if scope == "all":
        # one restore of everything; the first study is the first one restored and verified in full
        return Scope(available, _content_entries(manifest), by_study, whole=True)
    if scope == "studies":
        missing = [uid for uid in listed if uid not in by_study]
        if missing:
            raise SelectionError(f"{len(missing)} listed stud{'y is' if len(missing) == 1 else 'ies are'} not in "
                                 f"the snapshot: {', '.join(missing[:3])}")
        chosen = list(dict.fromkeys(listed))
    else:
        k = int(scope.split(":", 1)[1])
        if not available:
            raise SelectionError("the snapshot holds no DICOM study to sample")
        chosen = rng.sample(available, min(k, len(available)))
    entries = [e for uid in chosen for e in by_study[uid]]
    return Scope(chosen, entries, {uid: by_study[uid] for uid in chosen}, whole=False)
