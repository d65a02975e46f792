"""Savings advice with dollar estimates (issue 12): one module per kind, `table.py` writes `recommendations`.

`create_recommendations(con, cfg)` runs inside the warehouse build (steps/warehouse.py) on the staged
file: it reads line_items and allocations, prices with the catalogue and the sources' overrides, and
writes the `recommendations` and `savings_skipped` tables. See docs/savings.md.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from apportion.models.config import ApportionConfig
from apportion.models.savings import SavingsSettings
from apportion.savings.table import KINDS, Finding, Results, Skip
from apportion.sql import sql_text

__all__ = ["KINDS", "Finding", "Results", "Skip", "create_recommendations", "compute"]



def compute(con, cfg: ApportionConfig, months: list[str] | None = None) -> Results:
    """Every kind's findings and skips, from the warehouse tables on `con` (only `months`' partitions when given)."""
    from apportion.savings import commitments, gpus, prompt_caching, shorter_prompts, smaller_model, spot

    settings = cfg.savings or SavingsSettings()
    shadows = _restrict(con, months) if months is not None else []
    try:
        con.execute(sql_text("savings/pieces.sql"))
        results = Results()
        for module in (smaller_model, prompt_caching, shorter_prompts, gpus, spot, commitments):
            module.find(con, cfg, settings, results)
    finally:
        for name in shadows:
            con.execute(f"DROP VIEW IF EXISTS temp.main.{name}")
    results.findings = [f for f in results.findings if f.saving > 0 and f.saving >= settings.min_saving]
    return results


# The lake tables savings reads, by warehouse relation (lake_files.lake_table; gpu_usage is a per-month summary).
INPUTS = {"line_items": "line_items", "allocations": "allocations", "gpu_usage": "summary_gpu_usage"}


def input_files(con, months: list[str]) -> dict[str, list[str]]:
    """The lake files (current partition versions, from the warehouse's lake_files) of `months`, per relation."""
    out: dict[str, list[str]] = {name: [] for name in INPUTS}
    by_table = {t: name for name, t in INPUTS.items()}
    wanted = set(months)
    for table, path in con.execute("SELECT lake_table, path FROM lake_files WHERE lake_table IN "
                                   f"({', '.join('?' for _ in by_table)}) ORDER BY path", list(by_table)).fetchall():
        if _month_of(path) in wanted:
            out[by_table[table]].append(path)
    return out


def _month_of(path: str) -> str | None:
    found = re.search(r"x_BillingMonth=([^/\\]+)", path)
    return found.group(1) if found else None


def _restrict(con, months: list[str]) -> list[str]:
    """Temp views that shadow line_items, allocations and gpu_usage with only `months`' files: the kinds read
    those months' partitions and nothing else (issue 10: a nightly run costs the same whatever the history)."""
    from apportion.db import list_literal
    from apportion.models.focus import select_list

    present = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal UNION "
                                         "SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()}
    if "lake_files" not in present:
        return []
    db = con.execute("SELECT current_database()").fetchone()[0].replace('"', '""')
    files = input_files(con, months)
    made = []
    for name, fs in files.items():
        if name not in present:
            continue
        if not fs:
            body = f'SELECT * FROM "{db}".main.{name} WHERE false'
        elif name == "line_items":
            src = f"read_parquet({list_literal(fs)}, union_by_name = true)"
            produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
            body = f"SELECT {select_list(available=produced)} FROM {src}"
        else:
            hive = "" if name == "allocations" else ", hive_partitioning = false"
            body = f"SELECT * FROM read_parquet({list_literal(fs)}, union_by_name = true{hive})"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")
        made.append(name)
    return made


def month_keys(con, cfg: ApportionConfig) -> dict[str, str]:
    """month -> a hash of what its recommendations are computed from: its partitions' current versions (the lake
    file paths), the config (savings settings, sources and their price overrides) and this package's code and SQL."""
    from apportion import sql

    base = hashlib.sha1(cfg.model_dump_json().encode())
    for f in [*sorted(Path(__file__).parent.glob("*.py")), *sorted((Path(sql.__file__).parent / "savings").glob("*.sql"))]:
        base.update(f.read_bytes())
    paths: dict[str, list[str]] = {}
    for (path,) in con.execute("SELECT path FROM lake_files WHERE lake_table IN (?, ?, ?) ORDER BY path",
                               list(INPUTS.values())).fetchall():
        m = _month_of(path)
        if m:
            paths.setdefault(m, []).append(path)
    keys = {}
    for m in sorted(paths):
        h = base.copy()
        h.update("\0".join([m, *paths[m]]).encode())
        keys[m] = h.hexdigest()
    return keys


def _previous(cfg: ApportionConfig, keys: dict[str, str]):
    """The published warehouse's recommendations and skips of the months whose inputs did not change."""
    import duckdb

    from apportion.db import open_published

    if not cfg.duckdb_path.exists():
        return set(), None, None
    try:
        con = open_published(cfg)
    except duckdb.Error:
        return set(), None, None
    try:
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if not {"savings_inputs", "recommendations", "savings_skipped"} <= have:
            return set(), None, None
        kept = {m for m, k in con.execute("SELECT x_BillingMonth, input_key FROM savings_inputs").fetchall()
                if keys.get(m) == k}
        if not kept:
            return set(), None, None
        marks = ", ".join("?" for _ in kept)
        recs = con.sql(f"SELECT * REPLACE (CAST(evidence AS VARCHAR) AS evidence) FROM recommendations "
                           f"WHERE x_BillingMonth IN ({marks})", params=sorted(kept)).to_arrow_table()
        skips = con.sql(f"SELECT * FROM savings_skipped WHERE x_BillingMonth IN ({marks}) "
                            + ("OR x_BillingMonth IS NULL" if set(keys) <= kept else ""), params=sorted(kept)).to_arrow_table()
        return kept, recs, skips
    except duckdb.Error:
        return set(), None, None
    finally:
        con.close()


def create_recommendations(con, cfg: ApportionConfig) -> Results:
    """Build `recommendations` and `savings_skipped` on the warehouse connection.

    Only the months whose inputs changed since the published warehouse (month_keys) are recomputed, from their
    own partitions; the other months' rows are carried over from the published file as they were (issue 10).
    """
    from apportion.guardrails.tables import document
    from apportion.savings import table

    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'allocations'").fetchall()}
    lake = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'lake_files'").fetchone()[0]
    keys = month_keys(con, cfg) if lake else {}
    recs = skips = None
    if not {"x_Team", "x_Project", "x_Workload", "x_AllocatedRatio"} <= cols:
        results = Results()  # an empty warehouse: empty tables, same columns
        table.write(con, results, cfg.reporting_currency)
    elif not lake:
        results = compute(con, cfg)
        table.write(con, results, cfg.reporting_currency)
    else:
        kept, recs, skips = _previous(cfg, keys)
        todo = [m for m in keys if m not in kept]
        shadows = _restrict(con, todo)  # the kinds and the fx look-up in table.write read these months only
        try:
            results = compute(con, cfg) if todo else Results()
            table.write(con, results, cfg.reporting_currency)
        finally:
            for name in shadows:
                con.execute(f"DROP VIEW IF EXISTS temp.main.{name}")
    for name, carried in (("recommendations", recs), ("savings_skipped", skips)):
        if carried is not None and carried.num_rows:
            con.register("sv_carried_arrow", carried)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM sv_carried_arrow")
            con.unregister("sv_carried_arrow")
    con.execute(sql_text("savings/create_savings_inputs.sql"))
    if keys:
        con.executemany("INSERT INTO savings_inputs VALUES (?, ?)", sorted(keys.items()))
    document(con, "savings_inputs")  # descriptions: models/warehouse_docs.py
    return results
