"""Step 4, warehouse: apportion.duckdb built from the lake into a staged file, checked, then published.

The single writer. The file does not copy the lake: line_items, allocations and quarantined_rows are views over
the partitions' current versions, and the aggregates (ledger_totals, monthly_spend, untagged_spend,
allocation_coverage, the LLM and GPU unit economics) are views over their summaries in the lake, written once
per source x month (or month) when their inputs change (apportion/steps/summaries.py): a nightly run of the
open months costs the same whatever the history. The blocking checks (ties out per source and month; line items
and allocations from one delivery) run on the staged file, over ledger_totals; only a file that passed replaces
the published one. Each table's SQL is its own file under sql/warehouse/; the descriptions are in
models/warehouse_docs.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from apportion.db import connect, fault_point, list_literal, lit, one_commit, open_published, set_aside_stale_wal
from apportion.guardrails.views import create_views as create_guardrail_views
from apportion.lake import ALLOCATIONS, LINE_ITEMS, QUARANTINE, current_files, prune_versions, work_suffix
from apportion.models.config import ApportionConfig
from apportion.models.focus import LINE_ITEM_COLUMNS, dimension_column
from apportion.models.taxonomy import Taxonomy, load_taxonomy
from apportion.models.warehouse_docs import COLUMN_DOCS, TABLE_DOCS
from apportion.sql import sql_text
from apportion.steps.summaries import PER_MONTH, PER_SOURCE, Snapshot, lake_views, refresh, summary_files

# Summaries that stay views over the lake (rows grow with resources and GPU pieces); the others are small tables.
LARGE_SUMMARIES = ("untagged_spend", "gpu_usage")
WAREHOUSE_TABLES = ("line_items", "allocations", "untagged_spend", "allocation_coverage", "quarantined_rows", "deliveries")
__all__ = ["COLUMN_DOCS", "TABLE_DOCS", "WAREHOUSE_TABLES", "WarehouseNotPublished", "build_warehouse",
           "low_coverage", "warehouse_breaches"]


def build_warehouse(cfg: ApportionConfig, tax: Taxonomy | None = None) -> dict:
    """Build apportion.duckdb from the lake into a new file and swap it in atomically.

    An analyst who has the previous file open keeps reading it (the old inode stays valid until
    they close it); the next open sees the complete new file. Never a half-built file.
    """
    tax = tax or load_taxonomy(cfg.taxonomy)
    cfg.warehouse.mkdir(parents=True, exist_ok=True)
    tmp_path = cfg.warehouse / f".apportion.duckdb.building-{work_suffix()}"
    con = connect(cfg, str(tmp_path))
    # the views are read many times during the build (guardrails, savings): read each Parquet footer once
    con.execute("SET parquet_metadata_cache = true")
    published = False
    try:
        # The exact files of the partitions' current versions (recorded in lake_files, so those versions outlive
        # this file's successor: an analyst holding this file keeps a consistent picture); the summaries of
        # exactly those versions (recomputed here only where they are missing or stale).
        files = {t: current_files(cfg.lake, t) for t in (LINE_ITEMS, ALLOCATIONS, QUARANTINE)}
        snapshot = Snapshot.of(cfg.lake, files)
        refresh(cfg, snapshot)
        summary = summary_files(cfg, snapshot)
        lake_tables = {**PER_SOURCE, **PER_MONTH}
        _create_lake_files(con, {**files, **{lake_tables[name]: fs for name, fs in summary.items()}})
        lake_views(con, files[LINE_ITEMS], files[ALLOCATIONS], files[QUARANTINE], temp=False)
        _create_deliveries(con, cfg)
        for name, fs in summary.items():  # the summaries: small ones copied in (fast to query), the others views
            if fs:
                _lake_view(con, name, fs, table=name not in LARGE_SUMMARIES, hive=False)
        if "monthly_spend" in _relations(con) and "x_ValueClass" in _columns(con, "monthly_spend"):
            con.execute(sql_text("warehouse/portfolio.sql"))
        if "gpu_job_waste" in _relations(con):
            con.execute(sql_text("warehouse/gpu_top_idle_jobs.sql"))
        with one_commit(con):
            _comment(con, tax.dimension_names)
        from apportion import analyst_views  # a COMMENT ON for every table/view column still without one

        analyst_views.document(con, tax.dimension_names)
        create_guardrail_views(con, cfg, tax)  # budgets, anomalies, token policies, alerts
        from apportion import savings  # savings advice (issue 12): recommendations + savings_skipped tables

        savings.create_recommendations(con, cfg)
        __import__("apportion.close.deltas").close.deltas.create_restatements(con, cfg)  # month close (issue 17)
        present = _relations(con)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in WAREHOUSE_TABLES if t in present}
        # the blocking checks run on the staged file: a warehouse that does not tie out is never published
        ties = con.execute(sql_text("checks/warehouse_ties_out.sql")).fetchall() if "ledger_totals" in present else []
        mixed = con.execute(sql_text("checks/warehouse_deliveries.sql")).fetchall() if "ledger_totals" in present else []
        if ties or mixed:
            raise WarehouseNotPublished(ties, mixed)
        con.execute("CHECKPOINT")
        con.close()
        fault_point("warehouse:staged")
        previous = _versions_of_published(cfg)
        set_aside_stale_wal(cfg.duckdb_path)
        os.replace(tmp_path, cfg.duckdb_path)
        published = True
        fault_point("warehouse:published")
        keep = {f.parent.resolve() for t in [*files.values(), *summary.values()] for f in t} | previous
        prune_versions(cfg.lake, keep)
    finally:
        con.close()
        if not published:
            for p in (tmp_path, tmp_path.with_name(tmp_path.name + ".wal")):
                p.unlink(missing_ok=True)
    return counts


def _lake_view(con, name: str, files: list[Path], table: bool = False, hive: bool = True) -> None:
    """A view (or a table copied in) over lake files; a summary's own x_SourceName is not its folder's (`_all`)."""
    kind = "TABLE" if table else "VIEW"
    options = "union_by_name = true" + ("" if hive else ", hive_partitioning = false")
    con.execute(f"CREATE {kind} {name} AS SELECT * FROM read_parquet({list_literal(files)}, {options})")


def _columns(con, relation: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {relation}").fetchall()}


def _relations(con) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
        "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _create_lake_files(con, files: dict[str, list[Path]]) -> None:
    table = pa.table({"lake_table": [t for t, fs in files.items() for _ in fs],
                      "path": [str(f) for fs in files.values() for f in fs]})
    con.register("lake_files_arrow", table)
    con.execute(sql_text("warehouse/lake_files.sql"))
    con.unregister("lake_files_arrow")


def _versions_of_published(cfg: ApportionConfig) -> set[Path]:
    """The partition versions the published warehouse reads (kept until the file after next is published)."""
    if not cfg.duckdb_path.exists():
        return set()
    try:
        con = open_published(cfg)
    except duckdb.Error:
        return set()
    try:
        return {Path(p).parent.resolve() for (p,) in con.execute("SELECT path FROM lake_files").fetchall()}
    except duckdb.Error:  # a warehouse from before the lake-backed layout: it copied the lake
        return set()
    finally:
        con.close()


class WarehouseNotPublished(Exception):
    """The staged warehouse failed a blocking check; the published file was not touched."""

    def __init__(self, ties: list[tuple], mixed: list[tuple]):
        self.ties, self.mixed = ties, mixed
        parts = [f"{src} {month}: line items billed {li_b} / effective {li_e}, allocated billed {al_b} / "
                 f"effective {al_e}" for src, month, li_b, al_b, li_e, al_e in ties[:5]]
        parts += [f"{src} {month}: line items from delivery {li or '-'} but allocations from {al or '-'} "
                  f"(a run stopped between the steps; `apportion run --month {month}` rebuilds it)"
                  for src, month, li, al in mixed[:5]]
        super().__init__("warehouse not published (the previous file is kept): " + "; ".join(parts))


def _create_deliveries(con, cfg: ApportionConfig) -> None:
    rows = []
    for log in sorted(cfg.raw.glob("*/*/deliveries.jsonl")):
        current = (log.parent / "CURRENT").read_text().strip() if (log.parent / "CURRENT").exists() else None
        for line in log.read_text().splitlines():
            d = json.loads(line)
            rows.append({
                "source": d["source"], "kind": d["kind"], "billing_month": d["month"], "delivery_id": d["delivery_id"],
                "layout": d.get("layout"), "manifest_key": d.get("manifest_key"), "fetched_at": d["fetched_at"],
                "objects": len(d["objects"]), "bytes": sum(o["size"] for o in d["objects"]),
                "object_keys": json.dumps([{k: o[k] for k in ("key", "size", "etag")} for o in d["objects"]]),
                "is_current": Path(d["local_dir"]).name == current,
            })
    schema = pa.schema([("source", pa.string()), ("kind", pa.string()), ("billing_month", pa.string()),
                        ("delivery_id", pa.string()), ("layout", pa.string()), ("manifest_key", pa.string()),
                        ("fetched_at", pa.string()), ("objects", pa.int64()), ("bytes", pa.int64()),
                        ("object_keys", pa.string()), ("is_current", pa.bool_())])
    table = pa.Table.from_pylist(rows, schema=schema)
    con.register("deliveries_arrow", table)
    con.execute(sql_text("warehouse/deliveries.sql"))
    con.unregister("deliveries_arrow")


def _comment(con, dims: list[str]) -> None:
    """COMMENT ON the tables, views and columns models/warehouse_docs.py describes (those the file has)."""
    present = _relations(con)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    for table, doc in TABLE_DOCS.items():
        if table in present:
            con.execute(f"COMMENT ON {'VIEW' if table in views else 'TABLE'} {table} IS {lit(doc)}")
    for c in LINE_ITEM_COLUMNS:
        con.execute(f'COMMENT ON COLUMN line_items."{c.name}" IS {lit(c.description)}')
    descriptions = {c.name: c.description for c in LINE_ITEM_COLUMNS}
    for d in dims:
        descriptions[dimension_column(d)] = f"Attributed {d} (or 'untagged' / 'shared')."
        descriptions[dimension_column(d) + "Reason"] = f"What decided {d}: tag:<key>, rule:<name>, account:<id>, default, shared:..., untagged:..."
    descriptions.update(COLUMN_DOCS["allocations"])
    descriptions["BilledCost"] = "Allocated BilledCost of this piece."
    descriptions["EffectiveCost"] = "Allocated EffectiveCost of this piece."
    for col in _columns(con, "allocations"):
        if col in descriptions:
            con.execute(f'COMMENT ON COLUMN allocations."{col}" IS {lit(descriptions[col])}')
    for table, docs in COLUMN_DOCS.items():
        if table == "allocations" or table not in present:
            continue
        cols = _columns(con, table)
        for col, doc in docs.items():
            if col in cols:
                con.execute(f'COMMENT ON COLUMN {table}."{col}" IS {lit(doc)}')


def warehouse_breaches(cfg: ApportionConfig) -> list[tuple]:
    """(source, month, line-item billed, allocated billed, line-item effective, allocated effective) that differ."""
    con = open_published(cfg)
    try:
        return con.execute(sql_text("checks/warehouse_ties_out.sql")).fetchall()
    finally:
        con.close()


def low_coverage(cfg: ApportionConfig, month: str, threshold: float) -> list[tuple[str, str, float]]:
    """(source, dimension, coverage) below the threshold for the month."""
    con = open_published(cfg)
    try:
        return con.execute(
            "SELECT x_SourceName, dimension, coverage FROM allocation_coverage "
            "WHERE x_BillingMonth = ? AND coverage < ? ORDER BY 1, 2",
            [month, threshold],
        ).fetchall()
    finally:
        con.close()
