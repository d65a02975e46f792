"""The warehouse tables the guardrails, savings and close modules build: each one's DDL is its own SQL file
(`sql/guardrails/create_<table>.sql`, `sql/savings/`, `sql/close/`), its descriptions are in
models/warehouse_docs.py (the one place that feeds COMMENT ON, docs/warehouse.md and its test), and rows of
Python values go in through Arrow, cast to the file's column types by DuckDB."""

from __future__ import annotations

import pyarrow as pa

from apportion.db import lit, one_commit
from apportion.models.warehouse_docs import COLUMN_DOCS, TABLE_DOCS
from apportion.sql import sql_text


def columns(con, name: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def fill(con, name: str, rows: list[dict], folder: str = "guardrails") -> None:
    """Create `name` from sql/<folder>/create_<name>.sql and insert `rows` (dicts by column; values as str)."""
    # a cursor of its own: registering on `con` is refused while a streamed result of it is unfinished
    cur = con.cursor()
    try:
        cur.execute(sql_text(f"{folder}/create_{name}.sql"))
        cols = columns(cur, name)
        data = pa.Table.from_pylist([{c: (None if r.get(c) is None else str(r[c])) for c in cols} for r in rows],
                                    schema=pa.schema([(c, pa.string()) for c in cols]))
        cur.register(f"{name}_arrow", data)
        cur.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {name}_arrow")
        cur.unregister(f"{name}_arrow")
    finally:
        cur.close()


def document(con, name: str) -> None:
    """COMMENT ON `name` and each of its columns from models/warehouse_docs.py (a column without one is an error)."""
    is_view = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [name]).fetchone()[0]
    docs = COLUMN_DOCS[name]
    cols = columns(con, name)
    for c in cols:
        if c not in docs:
            raise KeyError(f"models/warehouse_docs.py: COLUMN_DOCS[{name!r}] has no description of column {c!r}")
    with one_commit(con):
        con.execute(f"COMMENT ON {'VIEW' if is_view else 'TABLE'} {name} IS {lit(TABLE_DOCS[name])}")
        for c in cols:
            con.execute(f'COMMENT ON COLUMN {name}."{c}" IS {lit(docs[c])}')
