"""Offline media: labelled disks, their last sync and what they hold."""

from __future__ import annotations

from backupctl.catalog.db import Catalog, utcnow


def register_medium(catalog: Catalog, target: str, label: str, media_id: str, created: str) -> None:
    with catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO media (label, target, media_id, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(target, label) DO UPDATE SET media_id=excluded.media_id",
            (label, target, media_id, created),
        )


def record_sync(catalog: Catalog, target: str, label: str, files: int, size: int) -> None:
    with catalog.transaction() as tx:
        tx.execute("UPDATE media SET last_sync=?, last_sync_files=?, last_sync_bytes=? WHERE target=? AND label=?",
                   (utcnow(), files, size, target, label))


def list_media(catalog: Catalog, target: str | None = None) -> list[dict]:
    sql, params = "SELECT * FROM media", ()
    if target:
        sql, params = sql + " WHERE target=?", (target,)
    rows = [dict(r) for r in catalog.query(sql + " ORDER BY target, label", params)]
    for row in rows:
        row["snapshots"] = [r["snapshot_id"] for r in catalog.query(
            "SELECT snapshot_id FROM replicas WHERE target=? AND location=?", (row["target"], row["label"]))]
    return rows
