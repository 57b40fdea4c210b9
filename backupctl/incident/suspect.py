"""Suspect snapshots: ransomware-like changes found by comparing a new manifest with the previous one.

Both manifests are streams in manifest order, so the comparison is a merge that runs while the new manifest
is written: nothing is read from the sources again, and memory does not grow with the archive. Each signal
has a count, the count it is a share of, a threshold from `[suspect]` and a few example paths.

DICOM instances are written once: an instance whose bytes changed is itself unusual, unless it looks like a
header correction (same SOP Instance UID, still DICOM, similar size and entropy). Encrypted bytes are near
8 bits/byte, but so is compressed pixel data: entropy is compared with the same file's previous figure.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from backupctl.config import SuspectConfig
from backupctl.manifest import DICOM, OTHER, UNPARSEABLE, Entry, order_key

EXAMPLES = 3
SUSPECT_TAG = "suspect"

# lower-case names; conservative, since one match is enough to fire
RANSOM_NOTE_PATTERNS = (
    "*decrypt*", "*ransom*", "how_to_*", "how-to-*", "*restore_files*", "*restore-my-files*",
    "*recover*files*", "*your_files*", "*files_encrypted*", "*readme*.hta", "_readme.txt", "readme_for_decrypt*",
    "!!!*", "*-decrypt.txt", "*_help_*.txt", "*restore_instructions*", "*unlock_files*",
)
ENCRYPTED_EXTENSIONS = frozenset({
    "locked", "lock", "encrypted", "enc", "crypt", "crypted", "crypto", "cry", "locky", "wncry", "wnry", "wcry",
    "cerber", "zepto", "ryk", "conti", "lockbit", "akira", "basta", "royal", "blackcat", "hive", "crypz",
    "ecc", "ezz", "exx", "xyz", "zzz", "aaa", "micro", "vvv", "ccc", "cryptolocker", "kraken", "phobos",
    "djvu", "stop", "rhysida", "play", "blacksuit", "medusa", "8base", "babuk",
})


def is_ransom_note(name: str) -> bool:
    low = name.lower()
    return any(fnmatchcase(low, p) for p in RANSOM_NOTE_PATTERNS)


def has_encrypted_extension(name: str) -> bool:
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in ENCRYPTED_EXTENSIONS


@dataclass
class Signal:
    name: str
    count: int
    of: int                          # the count a share is taken of (0: the threshold is a count)
    threshold: float                 # a share when `of` is set, else a count
    fired: bool
    examples: list[str] = field(default_factory=list)
    what: str = ""

    @property
    def share(self) -> float | None:
        return self.count / self.of if self.of else None

    def text(self) -> str:
        share = f" ({self.share:.1%} of {self.of})" if self.of and self.count else ""
        return f"{self.what}: {self.count}{share}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "of": self.of or None,
                "share": round(self.share, 4) if self.share is not None else None, "threshold": self.threshold,
                "fired": self.fired, "examples": self.examples, "what": self.what}


@dataclass
class SuspectReport:
    compared: bool                   # False: no previous manifest of this key (first backup): nothing to say
    previous_files: int
    files: int
    signals: list[Signal]

    @property
    def suspect(self) -> bool:
        return any(s.fired for s in self.signals)

    def fired(self) -> list[Signal]:
        return [s for s in self.signals if s.fired]

    def summary(self) -> str:
        """One line naming the signals that fired (paths not included: alerts travel further than logs)."""
        if not self.suspect:
            return "no suspect changes"
        return "suspect changes: " + "; ".join(s.text() for s in self.fired())

    def as_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "suspect": self.suspect, "previous_files": self.previous_files,
                "files": self.files, "summary": self.summary(), "signals": [s.as_dict() for s in self.signals]}


class _Tally:
    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, path: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(path)


_SIGNALS = {   # name -> what it means, in the order reports list them
    "ransom_notes": "ransom-note files appeared",
    "encrypted_extensions": "new files named like encrypted ones",
    "executable_preamble": "DICOM files whose preamble is an executable header (CVE-2019-11687 polyglot)",
    "lost_dicom": "DICOM files that lost the DICM marker or no longer parse",
    "uid_changed": "DICOM files whose UIDs changed",
    "rewritten_instances": "DICOM instances rewritten (not a header correction)",
    "header_corrections": "DICOM instances with a header correction (same SOP Instance UID)",
    "entropy_jump": "changed files whose entropy jumped above their own past",
    "renamed": "files renamed",
    "deleted": "files deleted",
}
_RECENT_FOLDERS = 64   # renames are paired within a folder; the merge visits folders in order


class Detector:
    """Compares the new manifest's entries, as they are written, with the previous manifest's (both in
    manifest order). Use `watch` around the new entries, then `finish`."""

    def __init__(self, cfg: SuspectConfig, previous: Iterable[Entry]) -> None:
        self.cfg = cfg
        self._prev = iter(previous)
        self._head: Entry | None = next(self._prev, None)
        self.compared = self._head is not None
        self.prev_files = self.prev_dicom = self.files = 0
        self.t = {name: _Tally() for name in _SIGNALS}
        # unpaired deleted and new names of the folders seen last: folder -> {name key: path}. A rename is
        # paired whichever side the merge meets first (`x.dcm` -> `x.dcm.locked` sorts after, `x.crypt` before)
        self._deleted: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._added: OrderedDict[str, dict[str, str]] = OrderedDict()

    def watch(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        for e in entries:
            self._observe(e)
            yield e

    def _observe(self, e: Entry) -> None:
        self.files += 1
        key = order_key(e.path)
        while self._head is not None and order_key(self._head.path) < key:
            self._gone(self._head)
            self._advance()
        if self._head is not None and self._head.path == e.path:
            prev = self._head
            self._advance()
            if prev.sha256 != e.sha256:
                self._changed(prev, e)
        elif e.sha256 is not None:
            self._new(e)

    def _advance(self) -> None:
        head = self._head
        if head is not None and head.sha256 is not None:
            self.prev_files += 1
            self.prev_dicom += head.kind == DICOM
        self._head = next(self._prev, None)

    def _gone(self, prev: Entry) -> None:
        if prev.sha256 is None:
            return
        self.t["deleted"].add(prev.path)
        if (renamed := self._pair(prev.path, self._added, self._deleted)) is not None:
            self.t["renamed"].add(renamed)

    def _new(self, e: Entry) -> None:
        name = e.path.rpartition("/")[2]
        if is_ransom_note(name):
            self.t["ransom_notes"].add(e.path)
        if has_encrypted_extension(name):
            self.t["encrypted_extensions"].add(e.path)
        if e.dicom and e.dicom.get("preamble"):
            self.t["executable_preamble"].add(e.path)
        if self._pair(e.path, self._deleted, self._added) is not None:
            self.t["renamed"].add(e.path)

    @staticmethod
    def _keys(name: str) -> set[str]:
        """A name without its last one or two extensions: what a renaming attacker leaves of it."""
        one = name.rsplit(".", 1)[0]
        return {name, one, one.rsplit(".", 1)[0]}

    def _pair(self, path: str, others: OrderedDict[str, dict[str, str]],
              mine: OrderedDict[str, dict[str, str]]) -> str | None:
        """Pair `path` with an unpaired name of the other side in its folder: the new path of the rename,
        or None (then `path` waits on its own side)."""
        folder, _, name = path.rpartition("/")
        keys = self._keys(name)
        waiting = others.get(folder, {})
        match = next((waiting[k] for k in keys if k in waiting), None)
        if match is not None:
            for k in self._keys(match.rpartition("/")[2]):
                waiting.pop(k, None)
            return match if others is self._added else path
        own = mine.setdefault(folder, {})
        mine.move_to_end(folder)
        own.update(dict.fromkeys(keys, path))
        while len(mine) > _RECENT_FOLDERS:
            mine.popitem(last=False)
        return None

    def _changed(self, prev: Entry, e: Entry) -> None:
        if e.dicom and e.dicom.get("preamble") and not (prev.dicom and prev.dicom.get("preamble")):
            self.t["executable_preamble"].add(e.path)
        if (prev.entropy is not None and e.entropy is not None and e.entropy >= self.cfg.entropy_floor
                and e.entropy - prev.entropy >= self.cfg.entropy_rise):
            self.t["entropy_jump"].add(e.path)
        if prev.kind != DICOM:
            return
        if e.kind in (OTHER, UNPARSEABLE):
            self.t["lost_dicom"].add(e.path)
            return
        if e.kind != DICOM or not prev.dicom or not e.dicom:
            return
        if any(prev.dicom.get(k) != e.dicom.get(k) for k in ("sop_instance", "study", "series")):
            self.t["uid_changed"].add(e.path)
        elif self._header_correction(prev, e):
            self.t["header_corrections"].add(e.path)
        else:
            self.t["rewritten_instances"].add(e.path)

    def _header_correction(self, prev: Entry, e: Entry) -> bool:
        """Same instance, a small change of size, and its entropy where it was: pixel data left alone."""
        if abs(e.size - prev.size) > max(4096, prev.size // 100):
            return False
        if prev.entropy is not None and e.entropy is not None:
            return abs(e.entropy - prev.entropy) < self.cfg.entropy_rise / 2
        return True

    def finish(self) -> SuspectReport:
        while self._head is not None:
            self._gone(self._head)
            self._advance()
        cfg = self.cfg
        shares = {"lost_dicom": (self.prev_dicom, cfg.lost_dicom_share),
                  "uid_changed": (self.prev_dicom, cfg.uid_changed_share),
                  "rewritten_instances": (self.prev_dicom, cfg.rewritten_share),
                  "header_corrections": (self.prev_dicom, cfg.header_correction_share),
                  "entropy_jump": (self.prev_files, cfg.entropy_share),
                  "renamed": (self.prev_files, cfg.renamed_share),
                  "deleted": (self.prev_files, cfg.deleted_share)}
        counts = {"ransom_notes": cfg.ransom_notes, "encrypted_extensions": cfg.encrypted_extension_files,
                  "executable_preamble": cfg.executable_preambles}
        signals = []
        for name, what in _SIGNALS.items():
            tally = self.t[name]
            if name in counts:
                of, threshold = 0, float(counts[name])
                fired = tally.count >= threshold
            else:
                of, threshold = shares[name]
                fired = bool(of) and tally.count >= cfg.min_files and tally.count / of >= threshold
            signals.append(Signal(name, tally.count, of, threshold, self.compared and cfg.enabled and fired,
                                  tally.examples, what))
        return SuspectReport(self.compared, self.prev_files, self.files, signals)


def compare(cfg: SuspectConfig, previous: Iterable[Entry], new: Iterable[Entry]) -> SuspectReport:
    """The whole comparison of two manifests' entries (each in manifest order)."""
    detector = Detector(cfg, previous)
    for _ in detector.watch(new):
        pass
    return detector.finish()
