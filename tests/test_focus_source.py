"""Native FOCUS files (`kind: focus`): versions 1.0-preview .. 1.3, CSV and Parquet, three layouts.

Fixtures: the FOCUS working-draft AI billing examples (1.3 columns: ServiceProviderName /
HostProviderName, no ProviderName / PublisherName) and FOCUS 1.2 specification examples
(tests/fixtures/focus). The AWS Data Exports FOCUS layout runs against moto's S3 server over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apportion import ledger
from connectors.base import SourceError
from connectors.focus import focus_version
from connectors.registry import connector_for
from models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "focus"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")
AI_FILES = ("per_token_foundation_model_api.csv", "multi_model_invoice_via_csp_marketplace.csv",
            "drawdown_via_prepayment_foundation_model_api.csv", "ai_model_identity_a.csv")


def config(tmp_path: Path, uri: str, **options):
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    path = tmp_path / "apportion.yaml"
    path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: focus-test\n"
                    f"    kind: focus\n    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    return load_config(path)


def build(cfg, month):
    source = cfg.sources[0]
    delivery = ledger.land(cfg, source, month)
    stats = ledger.build_line_items(cfg, source, delivery)
    alloc = ledger.allocate(cfg, source, month)
    return delivery, stats, alloc


def rows_of(cfg, month, columns):
    path = ledger.partition_dir(cfg, ledger.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT {columns} FROM read_parquet(?) ORDER BY x_LineId", [str(path)]).fetchall()


def file_totals(names, month) -> tuple[Decimal, Decimal, int]:
    billed = effective = Decimal(0)
    n = 0
    for name in names:
        with open(FIX / name, encoding="utf-8-sig", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["BillingPeriodStart"].startswith(month):
                    billed += Decimal(r["BilledCost"])
                    effective += Decimal(r["EffectiveCost"])
                    n += 1
    return billed.quantize(Q), effective.quantize(Q), n


def test_ai_billing_examples_1_3_across_months(tmp_path):
    folder = tmp_path / "gateway"
    folder.mkdir()
    for name in AI_FILES:
        (folder / name).write_bytes((FIX / name).read_bytes())
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2025-01", "2025-05"]
    for month in ("2025-01", "2025-05"):
        _, stats, alloc = build(cfg, month)
        billed, effective, n = file_totals(AI_FILES, month)
        assert (stats.rows, stats.billed_cost, stats.effective_cost) == (n, billed, effective)
        assert stats.quarantined_rows == 0
        assert (alloc.billed_cost, alloc.effective_cost) == (billed, effective)
    rows = rows_of(cfg, "2025-05", "x_SourceFile, ProviderName, PublisherName, InvoiceIssuerName, x_SourceDataset, "
                                   "PricingUnit, SkuPriceDetails, ChargeCategory, EffectiveCost, ServiceSubcategory")
    marketplace = [r for r in rows if r[0] == "multi_model_invoice_via_csp_marketplace.csv"]
    # 1.3: HostProviderName stands in for ProviderName, ServiceProviderName for PublisherName
    assert {r[1:5] for r in marketplace} == {("LatticeScale", "LatticeScale", "LatticeScale", "FOCUS 1.3")}
    assert all(r[5] == "1000000 Tokens" and json.loads(r[6])["ModelDeveloper"] == "Solora AI" for r in marketplace)
    drawdown = [r for r in rows if r[0].startswith("drawdown")]
    assert [(r[7], r[8]) for r in drawdown][:1] == [("Purchase", Decimal(0))]  # prepayment amortised to usage
    assert {r[9] for r in rows} == {"Generative AI"}


def test_versions_and_1_0_preview_names(tmp_path):
    assert focus_version(["BilledCost", "ServiceProviderName"]) == "1.3"
    assert focus_version(["BilledCost", "InvoiceId", "ProviderName"]) == "1.2"
    assert focus_version(["BilledCost", "SkuMeter", "ProviderName"]) == "1.1"
    assert focus_version(["BilledCost", "EffectiveCost", "ChargeCategory", "ProviderName"]) == "1.0"
    folder = tmp_path / "f"
    folder.mkdir()
    # FOCUS 1.0-preview names: Provider / Publisher / InvoiceIssuer / Region / AmortizedCost / ChargeType
    (folder / "preview-2024-03.csv").write_text(
        "BilledCost,AmortizedCost,BillingAccountId,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,ChargeType,"
        "ChargePeriodStart,ChargePeriodEnd,Provider,Publisher,InvoiceIssuer,Region,ServiceName,ServiceCategory,"
        "UsageQuantity,UsageUnit,Tags\n"
        "10.5,9.25,acct-1,EUR,2024-03-01T00:00:00Z,2024-04-01T00:00:00Z,Usage,2024-03-02T00:00:00Z,"
        "2024-03-03T00:00:00Z,Oracle,Oracle,Oracle,eu-frankfurt-1,Compute,Compute,3,Hours,"
        '"{""team"":""research"",""oracle/created-by"":""ops""}"\n')
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2024-03"]
    _, stats, _ = build(cfg, "2024-03")
    assert (stats.rows, stats.billed_cost, stats.effective_cost) == (1, Decimal("10.5"), Decimal("9.25"))
    (row,) = rows_of(cfg, "2024-03", "ProviderName, PublisherName, InvoiceIssuerName, RegionId, BillingCurrency, "
                                      "ConsumedQuantity, ConsumedUnit, Tags, x_SourceDataset, ListCost, ContractedCost")
    assert row[:7] == ("Oracle", "Oracle", "Oracle", "eu-frankfurt-1", "EUR", Decimal(3), "Hours")
    assert json.loads(row[7]) == {"team": "research", "oracle/created-by": "ops"}
    assert row[8] == "FOCUS 1.0-preview"
    assert row[9] == row[10] == Decimal("10.5")  # absent ListCost / ContractedCost default to BilledCost


def test_partial_spec_examples_with_option_defaults(tmp_path):
    folder = tmp_path / "spec"
    folder.mkdir()
    for p in (FIX / "spec-1.2").glob("*.csv"):
        (folder / p.name).write_bytes(p.read_bytes())
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2023-01", "2025-04"]  # BOM + M/D/YY dates parsed
    _, stats, _ = build(cfg, "2023-01")  # no currency, provider or account in the file: quarantined, not lost
    assert stats.rows == 0 and stats.quarantined_rows == 1
    cfg = config(tmp_path, str(folder), billing_currency="USD", provider_name="ACME", billing_account_id="123")
    _, stats, _ = build(cfg, "2023-01")
    assert (stats.rows, stats.billed_cost, stats.effective_cost) == (1, Decimal(0), Decimal(1))
    _, stats, _ = build(cfg, "2025-04")
    assert (stats.rows, stats.billed_cost) == (1, Decimal(200000))
    (row,) = rows_of(cfg, "2025-04", "ChargePeriodEnd, BillingPeriodStart, ProviderName, BillingAccountId")
    assert row[0] == datetime(2026, 4, 1, tzinfo=timezone.utc) and row[1] == datetime(2025, 4, 1, tzinfo=timezone.utc)
    assert row[2:] == ("ACMECORP", "12345")  # values in the file win over option defaults


def _aws_focus_table(month: str, costs: list[float], tag: str) -> bytes:
    y, m = map(int, month.split("-"))
    start = datetime(y, m, 1, tzinfo=timezone.utc)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc)
    n = len(costs)
    table = pa.table({
        "BilledCost": pa.array([Decimal(str(c)) for c in costs], pa.decimal128(38, 10)),
        "EffectiveCost": pa.array([Decimal(str(c)) for c in costs], pa.decimal128(38, 10)),
        "ListCost": pa.array([Decimal(str(c)) for c in costs], pa.decimal128(38, 10)),
        "ContractedCost": pa.array([Decimal(str(c)) for c in costs], pa.decimal128(38, 10)),
        "BillingAccountId": ["111111111111"] * n,
        "BillingAccountType": ["Payer Account"] * n,
        "BillingCurrency": ["USD"] * n,
        "BillingPeriodStart": pa.array([start] * n, pa.timestamp("ms", tz="UTC")),
        "BillingPeriodEnd": pa.array([end] * n, pa.timestamp("ms", tz="UTC")),
        "ChargePeriodStart": pa.array([start] * n, pa.timestamp("ms", tz="UTC")),
        "ChargePeriodEnd": pa.array([start] * n, pa.timestamp("ms", tz="UTC")),
        "ChargeCategory": ["Usage"] * n,
        "ProviderName": ["AWS"] * n,
        "PublisherName": ["Amazon Web Services, Inc."] * n,
        "InvoiceIssuerName": ["Amazon Web Services, Inc."] * n,
        "InvoiceId": [None] * n,
        "ServiceName": ["Amazon Bedrock"] * n,
        "ServiceCategory": ["AI and Machine Learning"] * n,
        "ResourceId": [f"arn:aws:bedrock:us-east-1:222222222222:inference-profile/{tag}-{i}" for i in range(n)],
        "Tags": pa.array([[("user_team", "search"), ("aws:createdBy", "ci")]] * n, pa.map_(pa.string(), pa.string())),
        "x_ServiceCode": ["AmazonBedrock"] * n,
        "x_UsageType": ["USE1-Claude-input-tokens"] * n,
        "x_Operation": ["InvokeModel"] * n,
        "x_Discounts": [None] * n,
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_aws_focus_export_on_s3_newest_execution(tmp_path, s3_bucket):
    prefix = "focus/apportion-focus"
    s3_bucket.put(f"{prefix}/data/BILLING_PERIOD=2024-05/2024-05-10T00:00:00.000Z-aaaa/x-00001.snappy.parquet",
                  _aws_focus_table("2024-05", [1.0, 2.0], "old"))
    s3_bucket.put(f"{prefix}/data/BILLING_PERIOD=2024-05/2024-05-11T00:00:00.000Z-bbbb/x-00001.snappy.parquet",
                  _aws_focus_table("2024-05", [1.25, 2.5, 0.0000000001], "new"))
    s3_bucket.put(f"{prefix}/data/billing_period=2024-04/x-00001.snappy.parquet", _aws_focus_table("2024-04", [7], "apr"))
    cfg = config(tmp_path, f"s3://{s3_bucket.name}/{prefix}", endpoint_url=s3_bucket.endpoint_url)
    assert connector_for(cfg.sources[0]).months() == ["2024-04", "2024-05"]
    delivery, stats, alloc = build(cfg, "2024-05")
    assert delivery.delivery_id == "2024-05-11T00:00:00.000Z-bbbb" and delivery.layout == "focus-partition-versioned"
    assert stats.billed_cost == Decimal("3.7500000001") == alloc.billed_cost
    rows = rows_of(cfg, "2024-05", "Tags, x_ServiceCode, x_UsageType, x_Operation, x_SourceDataset, BillingAccountId")
    assert json.loads(rows[0][0]) == {"user_team": "search", "aws:createdBy": "ci"}
    assert rows[0][1:] == ("AmazonBedrock", "USE1-Claude-input-tokens", "InvokeModel", "FOCUS 1.2", "111111111111")
    _, stats, _ = build(cfg, "2024-04")
    assert stats.billed_cost == Decimal(7)


def test_not_focus_and_bad_rows(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "2024-06-costs.csv").write_text("Cost,Date\n1,2024-06-01\n")
    cfg = config(tmp_path, str(folder))
    delivery = ledger.land(cfg, cfg.sources[0], "2024-06")
    with pytest.raises(SourceError, match=r"2024-06-costs.csv has no BilledCost column: not a FOCUS file") as err:
        ledger.build_line_items(cfg, cfg.sources[0], delivery)
    assert err.value.file == "2024-06-costs.csv"

    (folder / "2024-06-costs.csv").unlink()
    header = ("BilledCost,EffectiveCost,BillingAccountId,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,"
              "ChargeCategory,ChargePeriodStart,ChargePeriodEnd,ProviderName,PublisherName,InvoiceIssuerName,"
              "ServiceName,ServiceCategory,Tags\n")
    good = "1.5,1.5,a,USD,2024-06-01,2024-07-01,Usage,2024-06-02,2024-06-03,P,P,P,S,Compute,\n"
    (folder / "2024-06-focus.csv").write_text(
        header + good
        + "abc,1,a,USD,2024-06-01,2024-07-01,Usage,2024-06-02,2024-06-03,P,P,P,S,Compute,\n"
        + "1,1,a,USD,2024-06-01,2024-07-01,Refund,2024-06-02,2024-06-03,P,P,P,S,Compute,\n"
        + "1,1,a,XXX,2024-06-01,2024-07-01,Usage,2024-06-02,2024-06-03,P,P,P,S,Compute,\n"
        + "1,1,a,USD,2024-06-01,2024-07-01,Usage,yesterday,2024-06-03,P,P,P,S,Compute,\n"
        + '1,1,a,USD,2024-06-01,2024-07-01,Usage,2024-06-02,2024-06-03,P,P,P,S,Compute,"{""team"": "\n'
        + "1,1,a,USD,2024-06-01,2024-07-01,Usage,2024-06-02,2024-06-03,,,,S,Compute,\n"
        + good)
    _, stats, alloc = build(cfg, "2024-06")
    assert (stats.rows, stats.billed_cost, alloc.billed_cost) == (2, Decimal(3), Decimal(3))
    q = duckdb.connect().execute(
        "SELECT x_SourceRow, reason FROM read_parquet(?) ORDER BY 1",
        [str(ledger.partition_dir(cfg, ledger.QUARANTINE, "focus-test", "2024-06") / "rows.parquet")]).fetchall()
    assert q == [(2, "non-numeric BilledCost abc"), (3, "unknown ChargeCategory Refund"), (4, "unknown currency XXX"),
                 (5, "unparseable ChargePeriodStart yesterday"), (6, "malformed Tags"),
                 (7, "missing ProviderName (and ServiceProviderName/HostProviderName)")]


def test_azure_focus_cost_runs_found_by_manifest(tmp_path):
    from tests.test_azure_cost import export_run, focus_cost_rows, write_local

    older = export_run("exp", "focus", "FocusCost", "2024-05", "2024-05-20T03:00:00Z", "r0",
                       {"part_0_0001.csv": focus_cost_rows().splitlines(keepends=True)[0].encode()
                        + focus_cost_rows().splitlines(keepends=True)[1].encode()}, data_version="1.0r2")
    newer = export_run("exp", "focus", "FocusCost", "2024-05", "2024-05-21T03:00:00Z", "r1",
                       {"part_0_0001.csv": focus_cost_rows().encode()}, data_version="1.0r2")
    # an ActualCost export beside it is not FOCUS: the focus kind ignores it
    actual = export_run("exp", "actual", "ActualCost", "2024-05", "2024-05-21T03:00:00Z", "a1",
                        {"part_0_0001.csv": b"Cost,Date\n1,05/01/2024\n"})
    write_local(tmp_path / "c", {**older, **newer, **actual})
    cfg = config(tmp_path, str(tmp_path / "c" / "exp"))
    assert connector_for(cfg.sources[0]).months() == ["2024-05"]
    delivery, stats, _ = build(cfg, "2024-05")
    assert delivery.delivery_id == "r1" and delivery.layout == "azure-FocusCost-1.0r2"
    assert (stats.rows, stats.billed_cost, stats.effective_cost) == (2, Decimal("12.5"), Decimal("67.5"))
    assert {r[0] for r in rows_of(cfg, "2024-05", "x_SourceDataset")} == {"Azure FocusCost 1.0"}
