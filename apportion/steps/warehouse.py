"""Step 4, warehouse: apportion.duckdb built from the lake into a staged file, checked, then published.

The single writer. The blocking checks (ties out per source and month; line items and allocations from
one delivery) run on the staged file; only a file that passed replaces the published one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from apportion.db import connect, fault_point, list_literal, lit, open_published, set_aside_stale_wal
from apportion.guardrails.views import create_views as create_guardrail_views
from apportion.lake import ALLOCATIONS, LINE_ITEMS, QUARANTINE, current_files, prune_versions, work_suffix
from apportion.models.config import ApportionConfig
from apportion.models.focus import LINE_ITEM_COLUMNS, dimension_column, select_list
from apportion.models.taxonomy import Taxonomy, load_taxonomy
from apportion.sql import sql_text

WAREHOUSE_TABLES = ("line_items", "allocations", "untagged_spend", "allocation_coverage", "quarantined_rows", "deliveries")


# AI unit economics and the LLM invoice reconciliation, built from line_items and allocations.
UNIT_ECONOMICS_SQL = (
    "outputs/create_llm_reconciliation.sql",
    "outputs/create_llm_unit_economics.sql",
    "outputs/create_gpu_unit_economics.sql",
)


def build_warehouse(cfg: ApportionConfig, tax: Taxonomy | None = None) -> dict:
    """Rebuild apportion.duckdb from the lake into a new file and swap it in atomically.

    An analyst who has the previous file open keeps reading it (the old inode stays valid until
    they close it); the next open sees the complete new file. Never a half-built file.
    """
    tax = tax or load_taxonomy(cfg.taxonomy)
    cfg.warehouse.mkdir(parents=True, exist_ok=True)
    tmp_path = cfg.warehouse / f".apportion.duckdb.building-{work_suffix()}"
    con = connect(cfg, str(tmp_path))
    published = False
    try:
        # The lake is not copied: line_items, allocations and quarantined_rows are views over the exact files
        # of the partitions' current versions (recorded in lake_files, so those versions outlive this file's
        # successor: an analyst holding this file keeps a consistent picture).
        files = {t: current_files(cfg.lake, t) for t in (LINE_ITEMS, ALLOCATIONS, QUARANTINE)}
        _create_lake_files(con, files)
        if files[LINE_ITEMS]:
            src_li = f"read_parquet({list_literal(files[LINE_ITEMS])}, union_by_name = true)"
            produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src_li}").fetchall()}
            con.execute(f"CREATE VIEW line_items AS SELECT {select_list(available=produced)} FROM {src_li}")
        else:
            con.execute(f"CREATE VIEW line_items AS SELECT {select_list()} FROM (SELECT NULL) WHERE false")
        if files[ALLOCATIONS]:
            con.execute(f"CREATE VIEW allocations AS SELECT * FROM read_parquet({list_literal(files[ALLOCATIONS])}, "
                        "union_by_name = true)")
        else:
            con.execute("CREATE VIEW allocations AS SELECT * FROM (SELECT 1) WHERE false")
        if files[QUARANTINE]:
            con.execute(f"CREATE VIEW quarantined_rows AS SELECT * FROM read_parquet({list_literal(files[QUARANTINE])}, "
                        "union_by_name = true)")
        else:
            con.execute(
                "CREATE VIEW quarantined_rows AS SELECT NULL::VARCHAR AS x_SourceName, NULL::VARCHAR AS x_BillingMonth, "
                "NULL::VARCHAR AS x_DeliveryId, NULL::VARCHAR AS x_SourceFile, NULL::BIGINT AS x_SourceRow, "
                "NULL::VARCHAR AS reason, NULL::VARCHAR AS billed_cost WHERE false"
            )
        al_files = files[ALLOCATIONS]
        _create_deliveries(con, cfg)
        dims = tax.dimension_names
        con.execute(sql_text("outputs/create_untagged_spend.sql").format(
            dimension_union=_dimension_union(dims, untagged_only=True)))
        con.execute(sql_text("outputs/create_allocation_coverage.sql").format(
            dimension_union=_dimension_union(dims, untagged_only=False)))
        if "value_class" in dims:
            con.execute(sql_text("outputs/create_portfolio.sql"))
            con.execute("COMMENT ON VIEW portfolio IS 'Spend per month, value class and team, with the change from "
                        "the previous month (the portfolio view of production, experimental and background work).'")
        _comment(con, dims)
        from apportion import analyst_views  # analyst views + a COMMENT ON for every table/view column

        analyst_views.create_views(con)
        if al_files:  # unit economics need the dimension columns of a real allocations table
            con.execute("SET VARIABLE reconciliation_tolerance = ?", [cfg.reconciliation_tolerance])
            for name in UNIT_ECONOMICS_SQL:
                con.execute(sql_text(name))
        analyst_views.document(con, dims)
        create_guardrail_views(con, cfg, tax)  # budgets, anomalies, token policies, alerts
        from apportion import savings  # savings advice (issue 12): recommendations + savings_skipped tables

        savings.create_recommendations(con, cfg)
        __import__("apportion.close.deltas").close.deltas.create_restatements(con, cfg)  # month close (issue 17)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in WAREHOUSE_TABLES}
        # the blocking checks run on the staged file: a warehouse that does not tie out is never published
        ties = con.execute(sql_text("outputs/check_warehouse_ties_out.sql")).fetchall()
        mixed = con.execute(sql_text("outputs/check_warehouse_deliveries.sql")).fetchall()
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
        keep = {f.parent.resolve() for t in files.values() for f in t} | previous
        prune_versions(cfg.lake, keep)
    finally:
        con.close()
        if not published:
            for p in (tmp_path, tmp_path.with_name(tmp_path.name + ".wal")):
                p.unlink(missing_ok=True)
    return counts


def _create_lake_files(con, files: dict[str, list[Path]]) -> None:
    table = pa.table({"lake_table": [t for t, fs in files.items() for _ in fs],
                      "path": [str(f) for fs in files.values() for f in fs]})
    con.register("lake_files_arrow", table)
    con.execute("CREATE TABLE lake_files AS SELECT lake_table, path FROM lake_files_arrow")
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


def _dimension_union(dims: list[str], untagged_only: bool) -> str:
    parts = []
    for d in dims:
        col = dimension_column(d)
        # spread pieces stay listed: spreading makes them attributed, never invisible
        where = f"WHERE {col} = 'untagged' OR {col}Reason LIKE 'spread:%'" if untagged_only else ""
        parts.append(f"SELECT '{d}' AS dimension, {col} AS value, {col}Reason AS reason, a.* FROM allocations AS a {where}")
    return "\n        UNION ALL BY NAME\n        ".join(parts)


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
    con.execute("CREATE TABLE deliveries AS SELECT source, kind, billing_month, delivery_id, layout, manifest_key, "
                "CAST(fetched_at AS TIMESTAMPTZ) AS fetched_at, objects, bytes, CAST(object_keys AS JSON) AS object_keys, "
                "is_current FROM deliveries_arrow")
    con.unregister("deliveries_arrow")


TABLE_DOCS = {
    "line_items": "FOCUS 1.2 cost and usage line items from every source, one row per provider line; "
                  "x_ columns carry lineage (source, delivery, file, row) and provider extras.",
    "allocations": "Every line item split into one or more pieces, each attributed to project, team and workload "
                   "with the tag or rule that decided it. Pieces sum exactly to their line item.",
    "untagged_spend": "Spend that no tag, rule, account mapping or default could attribute, per dimension, "
                      "with the reason and the account, service and resource behind it.",
    "allocation_coverage": "Spend-weighted share attributed per billing month, source and dimension.",
    "quarantined_rows": "Raw rows that were not loaded, with source file, row number and reason.",
    "deliveries": "Every provider delivery landed: object keys, sizes, etags, delivery id and fetch time.",
    "lake_files": "The Parquet files (current partition versions in the lake) that line_items, allocations and "
                  "quarantined_rows read: the warehouse does not copy the lake.",
}


COLUMN_DOCS = {
    "allocations": {
        "x_PieceId": "Piece number within the line item (1 when the line is not split).",
        "x_AllocatedRatio": "Share of the line item carried by this piece; the pieces of a line sum to 1.",
        "x_AllocationReason": "How each dimension was decided, e.g. 'project=tag:project; team=account:333...'.",
        "x_AllocationRuleId": "Split rule that produced the piece (null when not split).",
        "x_AllocationMethodDetails": "FOCUS 1.3 AllocatedMethodDetails-shaped JSON for split pieces.",
        "InvoiceId": "Invoice of the piece's line item.",
        "x_ProviderLineItemId": "Provider's own id of the piece's line item.",
        "x_UsageType": "Provider usage type of the piece's line item.",
        "x_ReportingCurrency": "Configured reporting currency (null when none is configured).",
        "x_ReportingBilledCost": "This piece's BilledCost at its line's FX rate (reporting only; not exact by design).",
        "x_ReportingEffectiveCost": "This piece's EffectiveCost at its line's FX rate.",
    },
    "untagged_spend": {
        "dimension": "Dimension left unattributed (project, team, workload, ...).",
        "reason": "untagged:no-tags | untagged:key-missing | untagged:unknown-value (with the rejected tag).",
        "reason_code": "The reason without details.",
        "created_by": "aws:createdBy tag when present: who launched the resource.",
        "line_items": "Number of line items.",
    },
    "allocation_coverage": {
        "attributed_cost": "EffectiveCost attributed by a tag, rule, account mapping or default.",
        "shared_cost": "EffectiveCost with no resource to own it (tax, credits, fees); split by later rules.",
        "untagged_cost": "EffectiveCost that could have been attributed but was not.",
        "spread_cost": "EffectiveCost that was untagged and spread over known values (marked spread:, not attributed).",
        "coverage": "attributed / (attributed + untagged + spread), spend-weighted on absolute EffectiveCost.",
    },
}


def _comment(con, dims: list[str]) -> None:
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    for table, doc in TABLE_DOCS.items():
        con.execute(f"COMMENT ON {'VIEW' if table in views else 'TABLE'} {table} IS {lit(doc)}")
    for c in LINE_ITEM_COLUMNS:
        con.execute(f'COMMENT ON COLUMN line_items."{c.name}" IS {lit(c.description)}')
    cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name='allocations'").fetchall()}
    descriptions = {c.name: c.description for c in LINE_ITEM_COLUMNS}
    for d in dims:
        descriptions[dimension_column(d)] = f"Attributed {d} (or 'untagged' / 'shared')."
        descriptions[dimension_column(d) + "Reason"] = f"What decided {d}: tag:<key>, rule:<name>, account:<id>, default, shared:..., untagged:..."
    descriptions.update(COLUMN_DOCS["allocations"])
    descriptions["BilledCost"] = "Allocated BilledCost of this piece."
    descriptions["EffectiveCost"] = "Allocated EffectiveCost of this piece."
    for col in cols:
        if col in descriptions:
            con.execute(f'COMMENT ON COLUMN allocations."{col}" IS {lit(descriptions[col])}')
    con.execute(f"COMMENT ON COLUMN lake_files.lake_table IS {lit('Lake table: line_items, allocations or quarantine.')}")
    con.execute(f"COMMENT ON COLUMN lake_files.path IS {lit('Absolute path of one Parquet file of a current version.')}")
    for table in ("untagged_spend", "allocation_coverage"):
        for col, doc in COLUMN_DOCS[table].items():
            con.execute(f'COMMENT ON COLUMN {table}."{col}" IS {lit(doc)}')


def warehouse_breaches(cfg: ApportionConfig) -> list[tuple]:
    """(source, month, line-item billed, allocated billed, line-item effective, allocated effective) that differ."""
    con = open_published(cfg)
    try:
        return con.execute(sql_text("outputs/check_warehouse_ties_out.sql")).fetchall()
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
