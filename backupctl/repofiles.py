"""The files of a restic repository as replicas see them.

restic names every file except `config` by the SHA-256 of its content, so each copy can be checked by its
own name. Replicas never hold `locks/` (per-process state) nor restic's `*-tmp-*` files (half-written).
Upload order matters: data and index first, keys, snapshots last, so a snapshot file only appears in a
replica once everything it needs is there.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# the order files are replicated in: a snapshot must never arrive before what it refers to
KIND_ORDER = ("data", "index", "keys", "config", "snapshots")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RepoFile:
    rel: str            # path inside the repository, with '/' separators: "data/ab/ab12..."
    kind: str           # one of KIND_ORDER
    size: int

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    @property
    def named_by_hash(self) -> bool:
        return self.kind != "config"


def kind_of(rel: str) -> str | None:
    """The kind of a repository path, or None for what replicas never hold (locks, temp files, junk)."""
    top, _, rest = rel.partition("/")
    name = rel.rsplit("/", 1)[-1]
    if rel == "config":
        return "config"
    if top not in ("data", "index", "keys", "snapshots") or not rest:
        return None
    if "-tmp-" in name or not _HEX64.match(name):
        return None
    return top


def list_repository(root: Path) -> list[RepoFile]:
    """Every replicable file of the repository at `root`, in upload order."""
    files: list[RepoFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == "locks" or rel_dir.startswith("locks" + os.sep):
            dirnames.clear()
            continue
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            kind = kind_of(rel)
            if kind is None:
                continue
            files.append(RepoFile(rel, kind, os.stat(os.path.join(dirpath, name)).st_size))
    return sort_for_upload(files)


def sort_for_upload(files: list[RepoFile]) -> list[RepoFile]:
    return sorted(files, key=lambda f: (KIND_ORDER.index(f.kind), f.rel))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def name_matches_content(path: Path, rel: str) -> bool:
    """True when a hash-named repository file still has the content its name promises."""
    return sha256_file(path) == rel.rsplit("/", 1)[-1]


def iter_kind(files: list[RepoFile], kind: str) -> Iterator[RepoFile]:
    return (f for f in files if f.kind == kind)
