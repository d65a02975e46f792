"""Step 3, allocate: every line item of a source and month attributed to project, team and workload (tags,
rules, accounts, defaults), shared costs split exactly; pieces sum to their line, checked before the
partition is replaced."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from apportion.connectors.base import SourceError
from apportion.db import connect, fault_point, list_literal, lit
from apportion.lake import (
    ALLOCATIONS,
    LINE_ITEMS,
    current_files,
    discard_version,
    new_version,
    partition_dir,
    publish_version,
)
from apportion.models.config import ApportionConfig, SourceConfig
from apportion.models.focus import dimension_column, select_list
from apportion.models.taxonomy import RULE_FIELDS, Taxonomy, load_taxonomy, taxonomy_tables
from apportion.sql import sql_text


class ExactnessError(Exception):
    """Allocated pieces do not sum to their line items: nothing downstream may use this month."""


@dataclass
class AllocationStats:
    source: str
    month: str
    pieces: int
    billed_cost: Decimal
    effective_cost: Decimal


def _taxonomy_sql(tax: Taxonomy) -> dict[str, str]:
    fields = sorted(tax.rule_fields())
    key_cols = ["SubAccountId", "Tags", "x_HasResource", "ChargeCategory", "x_LineItemType"]
    key_cols += [RULE_FIELDS[f] for f in fields if RULE_FIELDS[f] not in key_cols]
    key_select = ",\n        ".join(
        f'"{c}"' if c == "x_HasResource" else f'coalesce(CAST("{c}" AS VARCHAR), \'\') AS "{c}"' for c in key_cols
    )
    key_join = "\n        and ".join(
        f'li."{c}" = ak."{c}"' if c == "x_HasResource" else f'coalesce(CAST(li."{c}" AS VARCHAR), \'\') = ak."{c}"'
        for c in key_cols
    )
    if fields:
        rule_case = "CASE c.field " + " ".join(f"WHEN '{f}' THEN a.\"{RULE_FIELDS[f]}\"" for f in fields) + " END"
    else:
        rule_case = "CAST(NULL AS VARCHAR)"
    dims = tax.dimension_names
    dim_cols = ",\n        ".join(
        f"max(value) FILTER (WHERE dimension = '{d}') AS {dimension_column(d)},\n"
        f"        max(reason) FILTER (WHERE dimension = '{d}') AS {dimension_column(d)}Reason"
        for d in dims
    )
    dim_selects = ",\n    ".join(f"d.{dimension_column(d)}, d.{dimension_column(d)}Reason" for d in dims)
    reason = " || '; ' || ".join(f"'{d}=' || d.{dimension_column(d)}Reason" for d in dims)
    return {
        "key_columns": key_select,
        "key_join": key_join,
        "rule_field_case": rule_case,
        "dimension_columns": dim_cols,
        "dimension_selects": dim_selects,
        "reason_concat": reason,
    }


def register_taxonomy(con: duckdb.DuckDBPyConnection, tax: Taxonomy) -> None:
    for name, table in taxonomy_tables(tax).items():
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")


def allocate(cfg: ApportionConfig, source: SourceConfig, month: str, tax: Taxonomy | None = None,
             lake: Path | None = None) -> AllocationStats:
    """Attribute every line item of the month, apply split rules; verify exactness, then replace the partition.

    Split weights may come from other sources of the same month (gateway logs attributing an LLM
    invoice, GPU-hours attributing a cluster's instances), so the month's line items of every source
    are visible here; only this source's pieces are written. `lake` redirects the output (taxonomy diff).
    """
    from apportion.split_rules import (
        apply_splits,
        basis_extra_columns,
        prepare_splits,
        reason_expression,
        spread_rules,
        workload_classes_select,
    )

    tax = tax or load_taxonomy(cfg.taxonomy)
    li_dir = partition_dir(cfg, LINE_ITEMS, source.name, month)
    if not li_dir.exists():
        raise SourceError(f"{source.name} {month}: no line items built")
    needs_basis = bool(tax.splits or spread_rules(tax))
    needs_table = needs_basis or any(d.workload_classes for d in tax.dimensions.values())
    con = connect(cfg)
    try:
        register_taxonomy(con, tax)
        files = sorted(li_dir.glob("*.parquet"))
        if needs_basis:
            files = current_files(cfg.lake, LINE_ITEMS, month=month)
        reader = f"read_parquet({list_literal(files)}, union_by_name = true)"
        produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
        con.execute(f"CREATE TEMP VIEW month_all_line_items AS SELECT {select_list(available=produced)} FROM {reader}")
        con.execute("CREATE TEMP VIEW month_line_items AS SELECT * FROM month_all_line_items "
                    f"WHERE x_SourceName = {lit(source.name)}")
        parts = _taxonomy_sql(tax)
        con.execute(sql_text("allocation/create_attribution.sql").format(
            line_items="month_all_line_items" if needs_basis else "month_line_items", **parts))
        con.execute(sql_text("allocation/allocate.sql").format(view="allocations_month", line_items="month_line_items",
                                                              extra_columns="", **parts))
        result = "allocations_month"
        if needs_table:
            # value classes: a projection over the streamed pieces
            con.execute(f"CREATE TEMP VIEW pieces_classified AS {workload_classes_select(con, tax, 'allocations_month')}")
            pieces = "pieces_classified"
            if needs_basis:
                con.execute(sql_text("allocation/allocate.sql").format(
                    view="basis", line_items="month_all_line_items",
                    extra_columns=basis_extra_columns(tax, {r[0] for r in con.execute("DESCRIBE allocations_month").fetchall()}),
                    **parts))
                # Only the pieces some rule may split are held in a table (the rules rewrite them in place); the
                # rest of the month streams from the line items to the Parquet file, never materialised.
                candidate, params = prepare_splits(con, tax)
                con.execute(f"CREATE TEMP TABLE alloc AS SELECT * FROM pieces_classified AS a WHERE {candidate}", params)
                apply_splits(con, tax, prepared=True)
                pieces = ("(SELECT * FROM pieces_classified WHERE x_LineId NOT IN (SELECT x_LineId FROM alloc) "
                          "UNION ALL BY NAME SELECT * FROM alloc)")
            result = f"(SELECT * REPLACE ({reason_expression(tax)} AS x_AllocationReason) FROM {pieces})"
        tmp = new_version(lake or cfg.lake, ALLOCATIONS, source.name, month)
        try:
            _write_pieces(con, result, tmp)
        except BaseException:
            discard_version(tmp)
            raise
        con.execute(f"CREATE TEMP VIEW month_allocations AS SELECT * FROM read_parquet({lit(str(tmp / 'data.parquet'))})")
        breaches = con.execute(sql_text("allocation/check_allocation_exact.sql")).fetchall()
        if breaches:
            discard_version(tmp)
            raise ExactnessError(f"{source.name} {month}: allocation does not tie out, e.g. {breaches[:3]}")
        pieces, billed, effective = con.execute(
            "SELECT count(*), coalesce(sum(BilledCost), 0), coalesce(sum(EffectiveCost), 0) FROM month_allocations"
        ).fetchone()
        fault_point("allocations:written")
        publish_version(tmp)
        return AllocationStats(source.name, month, pieces, billed, effective)
    finally:
        con.close()


def _write_pieces(con, result: str, version: Path) -> None:
    """The pieces as the partition's Parquet; reporting-currency amounts at each line's FX rate
    (allocation itself stays exact in the billing currency)."""
    con.execute(
        f"COPY (SELECT * EXCLUDE (x_FxRate), CAST(BilledCost * x_FxRate AS DECIMAL(38, 12)) AS x_ReportingBilledCost, "
        f"CAST(EffectiveCost * x_FxRate AS DECIMAL(38, 12)) AS x_ReportingEffectiveCost FROM {result}) "
        f"TO {lit(str(version / 'data.parquet'))} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 50000)"
    )
