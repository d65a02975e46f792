"""The synthetic CUR 2.0 generator: S3 layout, manifest, determinism and the business
content the rest of the pipeline is tested against (line item types, Savings Plan
arithmetic, messy tags)."""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from apportion.demo.generators import aws_cur as demo

TODAY = date(2026, 11, 27)
CLOSED, CURRENT = "2026-10", "2026-11"
EXPORT_ROOT = Path("cur") / "apportion-demo"


@pytest.fixture(autouse=True)
def pinned_today(monkeypatch):
    """Pin "today" so the current month is month-to-date in a reproducible way."""
    monkeypatch.setattr(demo, "_utc_today", lambda: TODAY)


@pytest.fixture(scope="module")
def delivery(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cur2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "_utc_today", lambda: TODAY)
        demo.generate_cur2(out, [CLOSED, CURRENT])
    return out


@pytest.fixture(scope="module")
def con(delivery) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"""
        CREATE VIEW cur AS SELECT * FROM read_parquet(
            '{delivery}/{EXPORT_ROOT}/data/*/*.parquet', hive_partitioning = true)""")
    con.execute("""
        CREATE VIEW cur_amortized AS SELECT *, CASE line_item_line_item_type
            WHEN 'SavingsPlanCoveredUsage' THEN savings_plan_savings_plan_effective_cost
            WHEN 'SavingsPlanRecurringFee' THEN savings_plan_total_commitment_to_date - savings_plan_used_commitment
            WHEN 'SavingsPlanNegation' THEN 0
            WHEN 'DiscountedUsage' THEN reservation_effective_cost
            WHEN 'RIFee' THEN reservation_unused_amortized_upfront_fee_for_billing_period
                              + reservation_unused_recurring_fee
            ELSE line_item_unblended_cost END AS amortized_cost
        FROM cur""")
    return con


def scalar(con, sql: str, *params):
    return con.execute(sql, list(params)).fetchone()[0]


def manifest(out: Path, month: str) -> dict:
    path = out / EXPORT_ROOT / "metadata" / f"BILLING_PERIOD={month}" / "apportion-demo-Manifest.json"
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------ months
def test_demo_months_are_previous_and_current_month():
    assert demo.demo_months(date(2026, 11, 27)) == ["2026-10", "2026-11"]
    assert demo.demo_months(date(2027, 1, 1)) == ["2026-12", "2027-01"]
    assert demo.demo_months() == ["2026-10", "2026-11"]  # today is pinned


def test_future_month_and_unknown_format_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="future"):
        demo.generate_cur2(tmp_path, ["2026-12"])
    with pytest.raises(ValueError, match="fmt"):
        demo.generate_cur2(tmp_path, [CLOSED], fmt="json")
    with pytest.raises(ValueError, match="YYYY-MM"):
        demo.generate_cur2(tmp_path, ["2026/10"])


# ------------------------------------------------------------------------------------ layout
def test_overwrite_layout_and_manifest(delivery, con):
    for month in (CLOSED, CURRENT):
        data_file = delivery / EXPORT_ROOT / "data" / f"BILLING_PERIOD={month}" / "apportion-demo-00001.snappy.parquet"
        assert data_file.is_file()
        m = manifest(delivery, month)
        assert set(m) >= {"executionId", "exportArn", "exportName", "billingPeriod", "dataFiles", "columns",
                          "exportTime"}
        assert m["exportName"] == "apportion-demo"
        assert m["exportArn"].startswith("arn:aws:bcm-data-exports:us-east-1:111111111111:export/apportion-demo-")
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", m["executionId"])
        assert m["dataFiles"] == [data_file.relative_to(delivery).as_posix()]
        schema = pq.read_schema(data_file)
        assert [c["name"] for c in m["columns"]] == schema.names
        types = {c["name"]: c["type"] for c in m["columns"]}
        assert types["line_item_unblended_cost"] == "double"
        assert types["resource_tags"] == "map<string,string>"
        assert types["line_item_usage_start_date"] == "timestamp"

    closed, current = manifest(delivery, CLOSED), manifest(delivery, CURRENT)
    assert closed["billingPeriod"] == {"start": "2026-10-01T00:00:00.000Z", "end": "2026-11-01T00:00:00.000Z"}
    assert current["billingPeriod"] == {"start": "2026-11-01T00:00:00.000Z", "end": "2026-12-01T00:00:00.000Z"}
    assert closed["exportTime"] == "2026-11-01T06:00:00.000Z"
    assert current["exportTime"] == "2026-11-28T06:00:00.000Z"  # the day after the last usage day


def test_parquet_types_match_cur2(delivery):
    path = delivery / EXPORT_ROOT / "data" / f"BILLING_PERIOD={CLOSED}" / "apportion-demo-00001.snappy.parquet"
    schema = pq.read_schema(path)
    assert str(schema.field("line_item_usage_start_date").type) == "timestamp[ms, tz=UTC]"
    assert str(schema.field("line_item_unblended_cost").type) == "double"
    assert str(schema.field("line_item_unblended_rate").type) == "string"
    assert str(schema.field("line_item_usage_account_id").type) == "string"
    for name in ("product", "resource_tags", "cost_category"):
        t = schema.field(name).type
        assert str(t.key_type) == "string" and str(t.item_type) == "string"
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"


def test_closed_month_is_complete_and_invoiced_current_month_is_month_to_date(con):
    rows = con.execute("""
        SELECT billing_period, max(line_item_usage_start_date)::DATE, count(DISTINCT bill_invoice_id),
               min(bill_invoice_id), count(*)
        FROM cur WHERE line_item_line_item_type LIKE '%Usage' GROUP BY ALL ORDER BY 1""").fetchall()
    (p1, last1, inv1, invoice1, n1), (p2, last2, inv2, invoice2, n2) = rows
    assert (p1, str(last1)) == (CLOSED, "2026-10-31")
    assert (p2, str(last2)) == (CURRENT, "2026-11-27")
    assert invoice1 != "" and invoice2 == ""
    assert inv1 == 2 and inv2 == 1  # AWS and AWS Marketplace invoice separately
    assert 3_000 <= n1 <= 6_000


def test_versioned_layout(tmp_path):
    files = demo.generate_cur2(tmp_path, [CLOSED], versioned=True)
    m = manifest(tmp_path, CLOSED)
    folder = f"{m['exportTime']}-{m['executionId']}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z-[0-9a-f-]{36}", folder)
    expected = (tmp_path / EXPORT_ROOT / "data" / f"BILLING_PERIOD={CLOSED}" / folder
                / "apportion-demo-00001.snappy.parquet")
    assert files == [expected]
    assert m["dataFiles"] == [expected.relative_to(tmp_path).as_posix()]
    assert not list((tmp_path / EXPORT_ROOT / "data" / f"BILLING_PERIOD={CLOSED}").glob("*.parquet"))


def test_overwrite_mode_replaces_previous_files(tmp_path):
    demo.generate_cur2(tmp_path, [CLOSED], rows_per_month=40_000)
    files = demo.generate_cur2(tmp_path, [CLOSED], fmt="csv")
    period = tmp_path / EXPORT_ROOT / "data" / f"BILLING_PERIOD={CLOSED}"
    assert sorted(period.iterdir()) == files


def test_csv_mode(tmp_path, delivery, con):
    files = demo.generate_cur2(tmp_path, [CLOSED], fmt="csv")
    assert [f.name for f in files] == ["apportion-demo-00001.csv.gz"]
    assert manifest(tmp_path, CLOSED)["dataFiles"] == [files[0].relative_to(tmp_path).as_posix()]
    with gzip.open(files[0], "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == [f.name for f in demo.SCHEMA]
    assert len(rows) == scalar(con, "SELECT count(*) FROM cur WHERE billing_period = ?", CLOSED)
    fee = next(r for r in rows if r["line_item_line_item_type"] == "SavingsPlanRecurringFee")
    assert fee["line_item_resource_id"] == "" and fee["line_item_net_unblended_cost"] == ""
    assert json.loads(fee["resource_tags"]) == {}
    tagged = [json.loads(r["resource_tags"]) for r in rows if r["resource_tags"] != "{}"]
    assert tagged and all(isinstance(t, dict) for t in tagged)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", rows[0]["line_item_usage_start_date"])
    total = sum(float(r["line_item_unblended_cost"]) for r in rows)
    assert total == pytest.approx(
        scalar(con, "SELECT sum(line_item_unblended_cost) FROM cur WHERE billing_period = ?", CLOSED), rel=1e-9)


# ------------------------------------------------------------------------------------ determinism
def test_same_inputs_give_identical_bytes(tmp_path):
    a = demo.generate_cur2(tmp_path / "a", [CLOSED, CURRENT], rows_per_month=30_000)
    b = demo.generate_cur2(tmp_path / "b", [CLOSED, CURRENT], rows_per_month=30_000)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()
    assert manifest(tmp_path / "a", CURRENT) == manifest(tmp_path / "b", CURRENT)
    c = demo.generate_cur2(tmp_path / "c", [CLOSED], rows_per_month=30_000, seed=8)
    assert not pq.read_table(c[0]).equals(pq.read_table(a[0]))


# ------------------------------------------------------------------------------------ content
def test_every_line_item_type_and_service_appears(con):
    for month in (CLOSED, CURRENT):
        types = {r[0] for r in con.execute(
            "SELECT DISTINCT line_item_line_item_type FROM cur WHERE billing_period = ?", [month]).fetchall()}
        assert types == {"Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation",
                         "SavingsPlanRecurringFee", "RIFee", "Fee", "Tax", "Credit", "Refund"}
    products = {r[0] for r in con.execute("SELECT DISTINCT line_item_product_code FROM cur").fetchall()}
    assert products >= {"AmazonEC2", "AmazonSageMaker", "AmazonBedrock", "AmazonS3", "AWSDataTransfer",
                        "AmazonCloudWatch", "AmazonEKS", "AWSSupportBusiness", demo.CLAUDE_PRODUCT_CODE}
    usage_types = {r[0] for r in con.execute("SELECT DISTINCT line_item_usage_type FROM cur").fetchall()}
    assert usage_types >= {
        "USE1-BoxUsage:p5.48xlarge", "USE1-BoxUsage:g5.12xlarge", "USW2-SpotUsage:g5.xlarge",
        "USE1-Train:ml.p4d.24xlarge", "USE1-Host:ml.g5.12xlarge", "USE1-Notebk:ml.t3.medium",
        "USE1-NovaPro-input-tokens", "USE1-NovaPro-output-tokens", "USE1-NovaPro-cache-read-input-token-count",
        "USE1-MP:USE1_InputTokenCount-Units", "USE1-MP:USE1_OutputTokenCount-Units",
        "USE1-MP:USE1_CacheReadInputTokenCount-Units", "USE1-MP:USE1_CacheWriteInputTokenCount-Units",
        "USE1-TimedStorage-ByteHrs", "USE1-DataTransfer-Out-Bytes",
    }
    marketplace = con.execute(f"""
        SELECT DISTINCT bill_billing_entity, product['product_name'] FROM cur
        WHERE line_item_product_code = '{demo.CLAUDE_PRODUCT_CODE}' AND line_item_line_item_type = 'Usage'
    """).fetchall()
    assert marketplace == [("AWS Marketplace", "Claude Sonnet 4.6 (Amazon Bedrock Edition)")]
    # Rows AWS books per account or per period carry no resource id.
    assert scalar(con, """SELECT count(*) FROM cur WHERE line_item_resource_id <> '' AND line_item_line_item_type
                          IN ('Tax', 'Credit', 'Refund', 'Fee', 'RIFee', 'SavingsPlanRecurringFee')""") == 0
    assert scalar(con, """SELECT count(*) FROM cur WHERE line_item_line_item_type = 'Fee'
                          AND line_item_usage_account_id <> '111111111111'""") == 0
    assert scalar(con, "SELECT count(*) FROM cur WHERE line_item_net_unblended_cost IS NOT NULL") == 0


def test_savings_plan_negation_cancels_covered_usage(con):
    by_row = con.execute("""
        SELECT line_item_resource_id, line_item_usage_start_date,
               sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanCoveredUsage'),
               sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanNegation')
        FROM cur WHERE line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'SavingsPlanNegation')
        GROUP BY ALL""").fetchall()
    assert by_row and all(neg == -cov for _, _, cov, neg in by_row)
    for month in (CLOSED, CURRENT):
        covered, negation, effective = con.execute("""
            SELECT sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanCoveredUsage'),
                   sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanNegation'),
                   sum(savings_plan_savings_plan_effective_cost)
            FROM cur WHERE billing_period = ?""", [month]).fetchone()
        assert negation == pytest.approx(-covered, abs=1e-6)
        assert 0 < effective < covered
        commitment, used = con.execute("""
            SELECT savings_plan_total_commitment_to_date, savings_plan_used_commitment FROM cur
            WHERE billing_period = ? AND line_item_line_item_type = 'SavingsPlanRecurringFee'""", [month]).fetchone()
        assert used == pytest.approx(effective, abs=1e-4)
        assert commitment - used > 0
        ri_unused, ri_effective = con.execute("""
            SELECT sum(reservation_unused_recurring_fee), sum(reservation_effective_cost) FILTER (
                       WHERE line_item_line_item_type = 'DiscountedUsage')
            FROM cur WHERE billing_period = ?""", [month]).fetchone()
        assert ri_unused > 0 and ri_effective > 0
    assert scalar(con, """SELECT sum(line_item_unblended_cost) FROM cur
                          WHERE line_item_line_item_type = 'DiscountedUsage'""") == 0


def test_messy_tags(con):
    def distinct(expr: str) -> set:
        return {r[0] for r in con.execute(f"SELECT DISTINCT {expr} AS v FROM cur").fetchall()} - {None}

    assert distinct("resource_tags['user_team']") == {
        "ml-platform", "ML Platform", "ml_platform", "research", "Research ", "search", "data-eng", "growth-hacking",
        "Data Engineering", "ML-Infra"}  # the last two are alias variants (demo/taxonomy.yaml)
    assert distinct("resource_tags['user_environment']") == {"prod", "staging", "dev", "Production"}
    assert distinct("resource_tags['user_Team']") == {"research"}
    assert distinct("unnest(map_keys(resource_tags))") == {
        "user_team", "user_Team", "user_project", "user_workload", "user_environment", "aws_created_by"}
    assert distinct("resource_tags['user_project']") == {"llm-serving", "recsys", "fraud-detection", "data-lake",
                                                         "chatbot"}
    assert distinct("resource_tags['user_workload']") == {"training", "inference", "etl", "notebooks",
                                                          "batch-scoring"}
    assert scalar(con, """SELECT count(*) FROM cur WHERE resource_tags['user_team'] IS NOT NULL
                          AND resource_tags['user_project'] IS NULL""") > 0
    assert distinct("cost_category['business_unit']") == {"ai"}
    assert scalar(con, "SELECT count(*) FROM cur WHERE cardinality(cost_category) = 0") > 0


def test_untagged_share_and_tag_consistency(con):
    for month in (CLOSED, CURRENT):
        share = scalar(con, """
            SELECT sum(amortized_cost) FILTER (WHERE cardinality(resource_tags) = 0) / sum(amortized_cost)
            FROM cur_amortized WHERE billing_period = ? AND line_item_resource_id <> ''""", month)
        assert 0.15 <= share <= 0.25
    research_untagged = scalar(con, """
        SELECT avg((cardinality(resource_tags) = 0)::INT) FROM cur
        WHERE line_item_usage_account_id = '333333333333' AND line_item_resource_id <> ''""")
    assert research_untagged > 0.5
    assert scalar(con, """
        SELECT max(n) FROM (SELECT count(DISTINCT resource_tags::VARCHAR) AS n FROM cur
                            WHERE line_item_resource_id <> '' GROUP BY line_item_resource_id)""") == 1


def test_rows_per_month_scales_the_fleet(tmp_path):
    files = demo.generate_cur2(tmp_path, [CLOSED, CURRENT], rows_per_month=200_000)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW cur AS SELECT * FROM read_parquet({[str(f) for f in files]!r}, hive_partitioning=true)")
    for month in (CLOSED, CURRENT):
        assert scalar(con, "SELECT count(*) FROM cur WHERE billing_period = ?", month) == 200_000  # exact
    assert scalar(con, "SELECT count(DISTINCT identity_line_item_id) = count(*) FROM cur")
    instances = scalar(con, """SELECT count(DISTINCT line_item_resource_id) FROM cur
                               WHERE line_item_usage_type LIKE '%BoxUsage%'""")
    assert instances > 1_000
    covered, negation = con.execute("""
        SELECT sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanCoveredUsage'),
               sum(line_item_unblended_cost) FILTER (WHERE line_item_line_item_type = 'SavingsPlanNegation')
        FROM cur""").fetchone()
    assert negation == pytest.approx(-covered, rel=1e-12)
    assert scalar(con, """SELECT count(*) FROM cur WHERE line_item_line_item_type = 'SavingsPlanRecurringFee'
                          AND savings_plan_total_commitment_to_date <= savings_plan_used_commitment""") == 0


def test_cli(tmp_path, capsys):
    assert demo.main([str(tmp_path), "--months", CLOSED, "--rows", "20000", "--format", "csv", "--versioned"]) == 0
    out = capsys.readouterr().out
    assert f"BILLING_PERIOD={CLOSED}: 20,000 rows" in out
    assert "-Manifest.json" in out and ".csv.gz" in out
    assert len(list(tmp_path.rglob("*.csv.gz"))) == 1


def test_demo_spells_tags_as_alias_variants_and_they_are_attributed_to_the_canonical_value(outputs_demo_project):
    """The demo's own bill uses the taxonomy's aliases (`Data Engineering` -> data-eng, `ML-Infra` ->
    ml-platform, `Production` -> prod): were aliases not applied, these dollars would be untagged."""
    import duckdb

    cfg_path, _ = outputs_demo_project
    con = duckdb.connect(str(cfg_path.parent / "data" / "apportion.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT json_extract_string(li.Tags, '$.team') AS spelled, a.x_Team, a.x_TeamReason, "
            "json_extract_string(li.Tags, '$.environment') AS env_spelled, a.x_Environment, count(*) "
            "FROM allocations a JOIN line_items li USING (x_SourceName, x_BillingMonth, x_LineId) "
            "WHERE json_extract_string(li.Tags, '$.team') IN ('Data Engineering', 'ML-Infra') "
            "GROUP BY ALL ORDER BY 1, 4").fetchall()
    finally:
        con.close()
    spelled = {(r[0], r[3]): r[1:3] + r[4:5] for r in rows}
    assert spelled[("Data Engineering", "Production")] == ("data-eng", "tag:team", "prod")
    assert spelled[("ML-Infra", "prod")] == ("ml-platform", "tag:team", "prod")
    assert all(r[5] > 0 for r in rows)
