"""Catalog queries for S3 Object Lock copies: uploaded object versions and endpoint quirks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from backupctl.catalog.db import Catalog, utcnow


@dataclass(frozen=True)
class S3Object:
    """One object version backupctl uploaded, as the server confirmed it."""

    key: str                 # repository-relative path
    version_id: str
    size: int
    sha256: str
    md5: str
    lock_mode: str
    retain_until: str        # UTC ISO 8601
    required_until: str      # UTC ISO 8601
    uploaded: str = ""
    extended: str | None = None
    lock_fixed: bool = False
    state: str = "live"


def _row(r: sqlite3.Row) -> S3Object:
    return S3Object(key=r["key"], version_id=r["version_id"], size=r["size"], sha256=r["sha256"],
                    md5=r["md5"], lock_mode=r["lock_mode"], retain_until=r["retain_until"],
                    required_until=r["required_until"], uploaded=r["uploaded"], extended=r["extended"],
                    lock_fixed=bool(r["lock_fixed"]), state=r["state"])


def live_objects(catalog: Catalog, target: str, location: str) -> dict[str, S3Object]:
    """Key -> the version backupctl relies on, for every live object of a target."""
    rows = catalog.query("SELECT * FROM s3_objects WHERE target=? AND location=? AND state='live'",
                         (target, location))
    return {r["key"]: _row(r) for r in rows}


def all_versions(catalog: Catalog, target: str, location: str) -> list[S3Object]:
    rows = catalog.query("SELECT * FROM s3_objects WHERE target=? AND location=? ORDER BY key, uploaded",
                         (target, location))
    return [_row(r) for r in rows]


def record_objects(catalog: Catalog, target: str, location: str, objects: Iterable[S3Object]) -> None:
    """Record uploaded (or adopted) versions; an earlier live version of the same key becomes 'replaced'."""
    with catalog.transaction() as tx:
        for o in objects:
            tx.execute("UPDATE s3_objects SET state='replaced' WHERE target=? AND location=? AND key=? "
                       "AND state='live' AND version_id<>?", (target, location, o.key, o.version_id))
            tx.execute(
                "INSERT OR REPLACE INTO s3_objects (target, location, key, version_id, size, sha256, md5, "
                "lock_mode, retain_until, required_until, uploaded, extended, lock_fixed, state) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'live')",
                (target, location, o.key, o.version_id, o.size, o.sha256, o.md5, o.lock_mode,
                 o.retain_until, o.required_until, o.uploaded or utcnow(), o.extended, int(o.lock_fixed)))


def record_retention(catalog: Catalog, target: str, location: str, objects: Iterable[S3Object]) -> None:
    """Store extended retain-until dates (read back from the server) of existing versions."""
    with catalog.transaction() as tx:
        tx.executemany(
            "UPDATE s3_objects SET retain_until=?, required_until=?, extended=?, lock_mode=? "
            "WHERE target=? AND location=? AND key=? AND version_id=?",
            [(o.retain_until, o.required_until, o.extended, o.lock_mode, target, location, o.key,
              o.version_id) for o in objects])


def mark_expired(catalog: Catalog, target: str, location: str, key: str, version_id: str) -> None:
    with catalog.transaction() as tx:
        tx.execute("UPDATE s3_objects SET state='expired' WHERE target=? AND location=? AND key=? "
                   "AND version_id=?", (target, location, key, version_id))


def note_endpoint(catalog: Catalog, target: str, location: str, endpoint: str, *,
                  drops_lock_headers: bool = False) -> None:
    """Remember the endpoint of a target; `drops_lock_headers` only ever goes from 0 to 1."""
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO s3_endpoints (target, location, endpoint, drops_lock_headers, noted) "
            "VALUES (?,?,?,?,?) ON CONFLICT(target, location) DO UPDATE SET endpoint=excluded.endpoint, "
            "drops_lock_headers=max(drops_lock_headers, excluded.drops_lock_headers), noted=excluded.noted",
            (target, location, endpoint, int(drops_lock_headers), utcnow()))


def endpoint_drops_lock_headers(catalog: Catalog, target: str, location: str) -> bool:
    rows = catalog.query("SELECT drops_lock_headers FROM s3_endpoints WHERE target=? AND location=?",
                         (target, location))
    return bool(rows and rows[0]["drops_lock_headers"])


def record_probe(catalog: Catalog, target: str, location: str, endpoint: str, result: dict[str, Any]) -> None:
    note_endpoint(catalog, target, location, endpoint)
    with catalog.transaction() as tx:
        tx.execute("UPDATE s3_endpoints SET last_probe=? WHERE target=? AND location=?",
                   (json.dumps(result, sort_keys=True), target, location))


def summary(catalog: Catalog, target: str, location: str) -> dict[str, Any]:
    """What the catalog knows about one S3 copy: object counts, lock range, endpoint quirks, last probe."""
    row = catalog.query(
        "SELECT count(*) AS objects, coalesce(sum(size), 0) AS bytes, min(retain_until) AS earliest_unlock, "
        "max(retain_until) AS latest_unlock, coalesce(sum(lock_fixed), 0) AS locks_set_afterwards, "
        "max(uploaded) AS last_upload, max(extended) AS last_extension "
        "FROM s3_objects WHERE target=? AND location=? AND state='live'", (target, location))[0]
    states = {r["state"]: r["n"] for r in catalog.query(
        "SELECT state, count(*) AS n FROM s3_objects WHERE target=? AND location=? GROUP BY state",
        (target, location))}
    endpoint = catalog.query("SELECT * FROM s3_endpoints WHERE target=? AND location=?", (target, location))
    info = dict(row)
    info["versions_by_state"] = states
    if endpoint:
        e = endpoint[0]
        info["endpoint"] = e["endpoint"]
        info["drops_lock_headers"] = bool(e["drops_lock_headers"])
        info["last_probe"] = json.loads(e["last_probe"]) if e["last_probe"] else None
    return info
