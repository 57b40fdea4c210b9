"""Opening the catalog, applying migrations, transactions."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from backupctl.errors import CatalogError

log = logging.getLogger("backupctl.catalog")


def utcnow() -> str:
    """Wall-clock time for records: ISO 8601 UTC with microseconds, sortable as text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _migrations() -> list[tuple[str, str]]:
    schema = resources.files("backupctl.catalog").joinpath("schema")
    files = sorted(p for p in schema.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


class Catalog:
    """A connection to the catalog. Use `with catalog.transaction() as tx:` for every write."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: no partial writes."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def applied_migrations(self) -> list[str]:
        return [r["name"] for r in self.query("SELECT name FROM schema_migrations ORDER BY name")]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_database(path: Path) -> Catalog:
    """Open (creating if needed) and migrate the catalog at `path` (`backupctl.catalog.open_catalog` also
    closes the runs of dead processes: use that one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise CatalogError(f"cannot open catalog {path}: {exc}", hint="check [catalog] path") from exc
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    catalog = Catalog(conn, path)
    _migrate(catalog)
    return catalog


def _migrate(catalog: Catalog) -> None:
    conn = catalog.conn
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = set(catalog.applied_migrations())
    for name, sql in _migrations():
        if name in done:
            continue
        # executescript commits first; wrap the script itself so a failing migration leaves nothing behind
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\n;INSERT INTO schema_migrations VALUES ('{name}', '{utcnow()}');COMMIT;"
            )
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK") if conn.in_transaction else None
            raise CatalogError(f"catalog migration {name} failed: {exc}") from exc


def catalog_image(path: Path) -> bytes:
    """Every byte of the catalog's content (WAL included) as one database image, through SQLite itself.

    Reading the file directly is not safe while this process holds a connection: closing any other
    descriptor of the file drops the process's POSIX locks, and another process may then checkpoint and
    remove the WAL under the open connection."""
    source = sqlite3.connect(path)
    image = sqlite3.connect(":memory:")
    try:
        source.backup(image)
        return image.serialize()
    finally:
        image.close()
        source.close()
