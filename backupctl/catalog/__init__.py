"""The catalog: one SQLite file (WAL) that records every run, snapshot, replica and check.

Nothing outside this package writes SQL. `db` opens and migrates; one module per concept holds its queries
(`runs`, `snapshots`, `media`, ...). Migrations are the files in `schema/`, applied in name order and
tracked by name, so features developed side by side each add their own file without renumbering.
"""

from backupctl.catalog.db import Catalog, open_catalog

__all__ = ["Catalog", "open_catalog"]
