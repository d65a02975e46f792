"""The AWS line-item build streams a file once per output: nothing in its query plan holds the file.

Issue 10 measured the 5 M-row month at 19x a hand-written query. Two causes were in the plan, not the data:
the Bedrock model macro held a correlated subquery (DuckDB answered it with a DELIM join that buffers every
row of the file), and the unused-commitment lines were a UNION of the mapped rows with themselves (DuckDB
materialised the typed rows once for both readers, 775 MB spilled per 500k rows). The duplicate check was a
window (a sort) over every row, computed in both passes. These tests read DuckDB's physical plan of the two
COPYs the step runs, on a small demo month, and fail on any operator that holds the whole file.
"""

from __future__ import annotations

import json
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq

from apportion import steps
from apportion.connectors.registry import connector_for
from apportion.db import connect
from apportion.demo.generators.aws_cur import generate_cur2
from apportion.models.config import load_config
from apportion.models.focus import select_list
from apportion.steps.line_items import load_reference

MONTH = "2026-10"
BUFFERING = ("DELIM_JOIN", "RIGHT_DELIM_JOIN", "LEFT_DELIM_JOIN", "WINDOW", "ORDER_BY")


def _project(tmp_path):
    files = generate_cur2(tmp_path / "bucket", [MONTH], rows_per_month=3000)
    (tmp_path / "taxonomy.yaml").write_text("dimensions:\n  team:\n    keys: [team]\n")
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n"
        "    uri: bucket/cur/apportion-demo\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    return cfg, cfg.sources[0], files


def _held(con, sql: str) -> list[tuple[str, int]]:
    """Operators of the physical plan that hold their input: a window, a sort, a DELIM join (how DuckDB runs a
    correlated subquery), a CTE materialised from more than a few rows (name, estimated rows held)."""
    plan = json.loads(con.execute(f"EXPLAIN (FORMAT json) {sql}").fetchall()[0][1])
    out = []

    def rows(node) -> int:
        return int(str((node.get("extra_info") or {}).get("Estimated Cardinality", "0")).strip() or 0)

    def walk(node):
        name = node["name"].strip()
        if name == "CTE":
            held = rows(node["children"][0])
            if held > 10:  # run_context, a one-row CTE, is fine
                out.append((name, held))
        elif name in BUFFERING:
            out.append((name, rows(node)))
        for child in node.get("children", []):
            walk(child)

    for root in plan:
        walk(root)
    return out


def test_the_line_item_pass_holds_no_copy_of_the_file(tmp_path):
    cfg, source, files = _project(tmp_path)
    delivery = steps.land(cfg, source, MONTH)
    connector = connector_for(source)
    con = connect(cfg)
    load_reference(con, connector)
    con.execute("CREATE TEMP TABLE run_context AS SELECT 'aws-main' AS source_name, 'aws_cur' AS source_kind, "
                f"'{MONTH}' AS billing_month, 'd1' AS delivery_id, now() AS ingested_at")
    connector.stage_sql(con, delivery, only=[0])
    con.execute(connector.line_items_sql_text(delivery))
    produced = {r[0] for r in con.execute("DESCRIBE line_items_checked").fetchall()}
    good = f"SELECT {select_list(available=produced)} FROM line_items_checked WHERE x_QuarantineReason IS NULL"
    rows = pq.read_metadata(files[0]).num_rows
    assert rows > 1000
    held = _held(con, good)
    assert held == [], f"operators that hold the file in the line-item pass: {held}"
    # the quarantine pass reads the source's narrow view: no FOCUS mapping, no tag or service join
    bad = ("SELECT x_SourceFile, x_SourceRow, x_QuarantineReason FROM line_items_rejected "
           "WHERE x_QuarantineReason IS NOT NULL")
    assert _held(con, bad) == []
    plan = con.execute(f"EXPLAIN {bad}").fetchall()[0][1]
    assert "ref_aws_services" not in plan and "IS NOT DISTINCT FROM" not in plan  # no service or tag lookup
    # the fee rows still yield their unused-commitment line, and every raw row is there once
    n_lines, n_unused, billed = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE CommitmentDiscountStatus = 'Unused' AND BilledCost = 0 "
        "AND x_LineId >= 2147483648), sum(BilledCost) FROM line_items_checked").fetchone()
    raw_rows, raw_fees, raw_billed = duckdb.connect().execute(
        "SELECT count(*), count(*) FILTER (WHERE line_item_line_item_type IN ('SavingsPlanRecurringFee', 'RIFee') "
        "AND coalesce(savings_plan_total_commitment_to_date, 0) - coalesce(savings_plan_used_commitment, 0) "
        "+ coalesce(reservation_unused_amortized_upfront_fee_for_billing_period, 0) "
        "+ coalesce(reservation_unused_recurring_fee, 0) <> 0), "
        "sum(CAST(CAST(line_item_unblended_cost AS VARCHAR) AS DECIMAL(38, 12))) FROM read_parquet(?)",
        [str(files[0])]).fetchone()
    assert raw_fees > 0
    assert (n_lines, n_unused) == (raw_rows + raw_fees, raw_fees)
    assert Decimal(billed) == Decimal(raw_billed)
    con.close()


def test_a_partition_holds_only_the_columns_its_source_fills_and_the_warehouse_shows_every_one(outputs_demo_project):
    """An AWS bill fills none of 20 of our x_ extensions (scheduler jobs, GPU-hours, reporting currency, ...): they
    are not written to its partition (each was a null column the Parquet writer encoded for every row: ~7 % of the
    step's writer time at 5 M rows); every FOCUS column is, null or not (a partition stays a FOCUS dataset), and the
    warehouse's `line_items` view still has every contract column, the absent ones as typed NULLs."""
    from apportion.db import open_published
    from apportion.lake import current_files
    from apportion.models.focus import LINE_ITEM_COLUMNS

    cfg = load_config(outputs_demo_project[0])
    files = current_files(cfg.lake, steps.LINE_ITEMS)
    assert files
    for f in files:
        written = set(pq.read_schema(f).names)
        assert {"BilledCost", "EffectiveCost", "Tags", "x_LineId", "x_SourceRow"} <= written
        assert not {"x_GpuModel", "x_JobId", "x_ReportingCurrency", "x_FxRate"} & written, f
        assert {c.name for c in LINE_ITEM_COLUMNS if not c.name.startswith("x_")} <= written  # CapacityReservationId...
        assert written < {c.name for c in LINE_ITEM_COLUMNS}
    con = open_published(cfg)
    try:
        shown = {r[0]: r[1] for r in con.execute("DESCRIBE line_items").fetchall()}
        assert [c for c in shown if c in {x.name for x in LINE_ITEM_COLUMNS}] == [c.name for c in LINE_ITEM_COLUMNS]
        assert shown["CommitmentDiscountQuantity"] == "DECIMAL(38,12)" and shown["x_GpuModel"] == "VARCHAR"
        n, filled = con.execute("SELECT count(*), count(CapacityReservationId) + count(x_GpuModel) FROM line_items") \
            .fetchone()
        assert n > 0 and filled == 0
    finally:
        con.close()
