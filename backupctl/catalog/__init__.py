"""The catalog: one SQLite file (WAL) that records every run, snapshot, replica and check.

Nothing outside this package writes SQL. `db` opens and migrates; one module per concept holds its queries
(`runs`, `snapshots`, `media`, ...). Migrations are the files in `schema/`, applied in name order and
tracked by name, so features developed side by side each add their own file without renumbering.
"""

import logging
import sqlite3
from pathlib import Path

from backupctl.catalog.db import Catalog, open_database
from backupctl.catalog.runs import mark_abandoned_runs

__all__ = ["Catalog", "open_catalog"]

log = logging.getLogger("backupctl.catalog")


def open_catalog(path: Path) -> Catalog:
    """Open (creating if needed) and migrate the catalog at `path`. Whatever command opens it first after a
    run's process died marks that run interrupted: no run stays 'running' for a process that is gone."""
    catalog = open_database(path)
    try:
        for run in mark_abandoned_runs(catalog):
            log.warning("run %d (%s %s) was left running by a process that is gone: marked interrupted",
                        run["id"], run["kind"], run["job"])
    except sqlite3.Error as exc:   # a read-only catalog (an auditor's copy) is still readable
        log.debug("abandoned runs not marked: %s", exc)
    return catalog
