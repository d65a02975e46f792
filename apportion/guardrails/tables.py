"""Write a small documented table (rows of Python values) into the warehouse."""

from __future__ import annotations

import pyarrow as pa

from apportion.db import lit


def _table(con, name: str, columns: list[tuple[str, str, str]], rows: list[dict], doc: str) -> None:
    schema = pa.schema([(c, pa.string()) for c, _, _ in columns])
    data = pa.Table.from_pylist([{c: (None if r.get(c) is None else str(r[c])) for c, _, _ in columns}
                                 for r in rows], schema=schema)
    # a cursor of its own: registering on `con` is refused while a streamed result of it is unfinished
    cur = con.cursor()
    try:
        cur.register(f"{name}_arrow", data)
        select = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t, _ in columns)
        cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {select} FROM {name}_arrow")
        cur.unregister(f"{name}_arrow")
    finally:
        cur.close()
    con.execute(f"COMMENT ON TABLE {name} IS {lit(doc)}")
    for c, _, d in columns:
        con.execute(f'COMMENT ON COLUMN {name}."{c}" IS {lit(d)}')


def table(con, name: str, columns, rows, doc) -> None:
    _table(con, name, columns, rows, doc)
