"""The documentation of every table and view column of apportion.duckdb that has no description yet.

Called by `steps.warehouse.build_warehouse` after the tables and views exist: writes a `COMMENT ON` for every
view and column still undocumented, from the one place for descriptions (models/warehouse_docs.py) and the
line-item contract (models/focus.py), so `duckdb_tables()`, `duckdb_views()` and `duckdb_columns()` describe the
whole warehouse. docs/warehouse.md carries the same tables and example queries (run in the tests).
"""

from __future__ import annotations

import duckdb

from apportion.db import lit, one_commit
from apportion.models.focus import LINE_ITEM_COLUMNS, dimension_column
from apportion.models.warehouse_docs import COLUMN_DOCS, TABLE_DOCS

VIEWS = ("portfolio", "gpu_top_idle_jobs")


def document(con: duckdb.DuckDBPyConnection, dims: list[str]) -> None:
    """COMMENT ON every described view and every still-undocumented column of every table and view."""
    with one_commit(con):
        _document(con, dims)


def _document(con: duckdb.DuckDBPyConnection, dims: list[str]) -> None:
    for view in VIEWS:
        if con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0]:
            con.execute(f"COMMENT ON VIEW {view} IS {lit(TABLE_DOCS[view])}")
    generic = {c.name: c.description for c in LINE_ITEM_COLUMNS}
    for d in dims:
        generic.setdefault(dimension_column(d), f"Attributed {d} (or 'untagged' / 'shared').")
    missing = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE NOT internal AND schema_name = 'main' AND (comment IS NULL OR comment = '')").fetchall()
    for table, column in missing:
        doc = COLUMN_DOCS.get(table, {}).get(column) or generic.get(column)
        if doc:
            con.execute(f'COMMENT ON COLUMN "{table}"."{column}" IS {lit(doc)}')
