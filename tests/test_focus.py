"""Native FOCUS files (`kind: focus`): versions 1.0-preview .. 1.3, CSV and Parquet, three layouts.

Fixtures (tests/fixtures/focus, written for apportion, see NOTES.md): AI billing files with FOCUS 1.3
columns (ServiceProviderName / HostProviderName, no ProviderName / PublisherName) in the shapes of the
FOCUS working-draft AI billing appendix, and partial-column files in the shapes of the FOCUS 1.2
specification examples. The specification's own example files are read in place from the workplace's
shared/data folder (skipped when it is absent). The AWS Data Exports FOCUS layout runs against moto's
S3 server over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apportion import steps
from apportion.connectors.base import SourceError
from apportion.connectors.focus import focus_version
from apportion.connectors.registry import connector_for
from apportion.models.config import load_config
from apportion.models.focus import SERVICE_SUBCATEGORIES
from tests.shared_data import shared_sample

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "focus"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")
AI_FILES = ("meridian_direct_per_token.csv", "cobalt_marketplace_invoice.csv", "meridian_prepaid_drawdown.csv",
            "brightwater_model_identity_jan.csv")


def config(tmp_path: Path, uri: str, **options):
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    path = tmp_path / "apportion.yaml"
    path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: focus-test\n"
                    f"    kind: focus\n    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    return load_config(path)


def build(cfg, month):
    source = cfg.sources[0]
    delivery = steps.land(cfg, source, month)
    stats = steps.build_line_items(cfg, source, delivery)
    alloc = steps.allocate(cfg, source, month)
    return delivery, stats, alloc


def rows_of(cfg, month, columns):
    path = steps.partition_dir(cfg, steps.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT {columns} FROM read_parquet(?) ORDER BY x_LineId", [str(path)]).fetchall()


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def file_totals(names, month) -> tuple[Decimal, Decimal, int]:
    billed = effective = Decimal(0)
    n = 0
    for name in names:
        for r in read_rows(FIX / name):
            if r["BillingPeriodStart"].startswith(month):
                billed += Decimal(r["BilledCost"])
                effective += Decimal(r["EffectiveCost"])
                n += 1
    return billed.quantize(Q), effective.quantize(Q), n


def test_fixture_amounts_are_arithmetically_consistent():
    """Our files hold together the way a provider's do: price x quantity = cost, tokens = blocks x block size."""
    names = list(AI_FILES) + [f"partial/{p.name}" for p in (FIX / "partial").glob("*.csv")]
    checked = 0
    for name in names:
        for r in read_rows(FIX / name):
            num = {k: Decimal(v) for k, v in r.items() if k and v not in ("", "null") and k.endswith(
                ("Cost", "Price", "Quantity"))}
            for cost, price in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice"),
                                ("PricingCurrencyEffectiveCost", "PricingCurrencyContractedUnitPrice")):
                if cost in num and price in num and "PricingQuantity" in num and not (
                        cost.startswith("PricingCurrency") and r["ChargeCategory"] == "Purchase"):
                    assert num[cost] == num[price] * num["PricingQuantity"], (name, r["ChargeDescription"], cost)
                    checked += 1
            if r.get("PricingUnit") == "1000000 Tokens":
                assert num["PricingQuantity"] * 1000000 == num["ConsumedQuantity"], (name, r["ChargeDescription"])
            if r.get("PricingCategory") == "Committed":  # drawn from a commitment: nothing billed now
                assert num["BilledCost"] == 0
            if r["ChargeCategory"] == "Purchase" and r.get("CommitmentDiscountId"):
                assert num["EffectiveCost"] == 0  # amortised into the usage it covers
            if r.get("CommitmentDiscountCategory") == "Spend" and r.get("CommitmentDiscountStatus") == "Used":
                assert num["CommitmentDiscountQuantity"] == num["EffectiveCost"]
    assert checked > 30


def test_ai_billing_files_1_3_across_months(tmp_path):
    folder = tmp_path / "gateway"
    folder.mkdir()
    for name in AI_FILES:
        (folder / name).write_bytes((FIX / name).read_bytes())
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2025-01", "2025-05"]
    # by hand: January 18.00 + 15.00 + 4.50; May: per-token 10.00 + 12.00 + 14.40 + 8.40 = 44.80, marketplace
    # 150 + 80 + 30 + 15 + 0.75 + 1.35 + 6.16 + 4.40 = 287.66, prepaid purchase 120000.00 billed / 0 effective
    # with its drawdown 160.00 + 102.40 + 144.00 + 96.00 = 502.40 effective / 0 billed
    by_hand = {"2025-01": (3, Decimal("37.50"), Decimal("37.50")),
               "2025-05": (17, Decimal("120332.46"), Decimal("834.86"))}
    for month in ("2025-01", "2025-05"):
        _, stats, alloc = build(cfg, month)
        billed, effective, n = file_totals(AI_FILES, month)
        assert (n, billed, effective) == by_hand[month]
        assert (stats.rows, stats.billed_cost, stats.effective_cost) == by_hand[month]
        assert stats.quarantined_rows == 0
        assert (alloc.billed_cost, alloc.effective_cost) == (billed, effective)
    rows = rows_of(cfg, "2025-05", "x_SourceFile, ProviderName, PublisherName, InvoiceIssuerName, x_SourceDataset, "
                                   "PricingUnit, SkuPriceDetails, ChargeCategory, EffectiveCost, ServiceSubcategory, "
                                   "ServiceName, InvoiceId, BilledCost, PricingCategory, CommitmentDiscountQuantity, "
                                   "Tags, x_UnmappedService")
    marketplace = [r for r in rows if r[0] == "cobalt_marketplace_invoice.csv"]
    assert len(marketplace) == 8
    # 1.3: HostProviderName stands in for ProviderName, ServiceProviderName for PublisherName: the third-party
    # model is published by its developer, the cloud's own model service by the cloud
    assert {(r[10], r[1:5]) for r in marketplace} == {
        ("Heron API (Cobalt Marketplace)", ("Cobalt Cloud", "Brightwater AI", "Cobalt Cloud", "FOCUS 1.3")),
        ("Cobalt Inference", ("Cobalt Cloud", "Cobalt Cloud", "Cobalt Cloud", "FOCUS 1.3")),
    }
    assert {r[11] for r in marketplace} == {"CCL-2025-05-77120"}  # one invoice, several models
    details = [json.loads(r[6]) for r in marketplace]
    assert all(r[5] == "1000000 Tokens" for r in marketplace)
    assert {(d["ModelDeveloper"], d["ModelId"]) for d in details} == {
        ("Brightwater AI", "heron-2-large"), ("Brightwater AI", "heron-2-mini"), ("Meridian Labs", "kestrel-3-swift")}
    assert sorted(d.get("TokenCacheAction", "-") for d in details if d["ModelId"] == "heron-2-mini") == [
        "-", "Read", "Uncached", "Write"]
    drawdown = [r for r in rows if r[0] == "meridian_prepaid_drawdown.csv"]
    assert [(r[7], r[12], r[8]) for r in drawdown][:1] == [("Purchase", Decimal(120000), Decimal(0))]
    usage = drawdown[1:]
    assert {(r[7], r[13], r[12]) for r in usage} == {("Usage", "Committed", Decimal(0))}
    assert sum(r[8] for r in usage) == sum(r[14] for r in usage) == Decimal("502.40")  # drawdown = amortised
    direct = [r for r in rows if r[0] == "meridian_direct_per_token.csv"]
    assert [json.loads(r[6])["TokenType"] for r in direct] == ["Input", "Output", "Input", "Output"]  # older key kept
    assert [json.loads(r[15]) for r in direct] == [{"team": "dispatch", "env": "prod"}] * 2 + [
        {"team": "forecasting"}] * 2
    assert {r[9] for r in rows} == {"Generative AI"} and {r[16] for r in rows} == {None}
    (jan,) = {r[1:4] for r in rows_of(cfg, "2025-01", "x_SourceFile, ProviderName, PublisherName, InvoiceIssuerName")}
    assert jan == ("Brightwater AI",) * 3


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


def test_partial_files_with_option_defaults(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    for p in (FIX / "partial").glob("*.csv"):
        (folder / p.name).write_bytes(p.read_bytes())
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2024-02", "2025-09"]  # BOM + CRLF + M/D/YY dates parsed
    _, stats, _ = build(cfg, "2024-02")  # no currency, provider or account in the file: quarantined, not lost
    assert stats.rows == 0 and stats.quarantined_rows == 3
    assert stats.quarantine_reasons == {"missing BillingCurrency": 3}
    cfg = config(tmp_path, str(folder), billing_currency="USD", provider_name="Gridline", billing_account_id="gl-77")
    _, stats, _ = build(cfg, "2024-02")
    # by hand: the on-demand hour 29.90 is billed; the reserved hours (used 18.25, unused 18.25) only amortised
    assert (stats.rows, stats.billed_cost, stats.effective_cost) == (3, Decimal("29.90"), Decimal("66.40"))
    rows = rows_of(cfg, "2024-02", "ConsumedQuantity, CommitmentDiscountStatus, CommitmentDiscountId, ProviderName, "
                                   "BillingAccountId, BillingPeriodEnd, ListCost, ServiceCategory, ServiceSubcategory, "
                                   "ServiceName, x_UnmappedService, x_SourceDataset")
    # `null` in the file is a missing value, not a number to quarantine
    assert [(r[0], r[1], r[2]) for r in rows] == [(Decimal(1), "Used", "ri/a100-pair-3y"),
                                                  (None, "Unused", "ri/a100-pair-3y"), (Decimal(1), None, None)]
    assert {r[3:5] for r in rows} == {("Gridline", "gl-77")}
    assert rows[0][5] == datetime(2024, 3, 1, tzinfo=timezone.utc)  # no BillingPeriodEnd: start + 1 month
    assert [r[6] for r in rows] == [Decimal(0), Decimal(0), Decimal("29.90")]  # no ListCost: BilledCost
    # no ServiceCategory / ServiceName in the file: the visible fallback, never dropped
    assert {r[7:11] for r in rows} == {("Other", "Other (Other)", "Unknown", "Unknown")}
    assert rows[0][11] == "FOCUS 1.1"  # CommitmentDiscountQuantity is the newest column present

    _, stats, _ = build(cfg, "2025-09")
    assert (stats.rows, stats.billed_cost, stats.effective_cost) == (3, Decimal(20000), Decimal("2580.00"))
    rows = rows_of(cfg, "2025-09", "ChargePeriodStart, ChargePeriodEnd, BillingPeriodStart, ProviderName, "
                                   "BillingAccountId, PricingCurrency, PricingCurrencyEffectiveCost, "
                                   "ServiceSubcategory, x_SourceDataset")
    purchase = rows[0]
    # 9/12/25 is month/day: September 12 (day/month would be December 9)
    assert purchase[:3] == (datetime(2025, 9, 12, tzinfo=timezone.utc), datetime(2026, 9, 12, tzinfo=timezone.utc),
                            datetime(2025, 9, 1, tzinfo=timezone.utc))
    assert purchase[3:5] == ("Quillmark", "0042917")  # values in the file win over option defaults; id stays text
    assert [(r[5], r[6]) for r in rows] == [("USD", Decimal(0)), ("Credits", Decimal(3600)),
                                            ("Credits", Decimal(2850))]  # priced in the vendor's virtual currency
    assert {(r[7], r[8]) for r in rows} == {("Natural Language Processing", "FOCUS 1.2")}


def test_unknown_service_category_kept_visible(tmp_path):
    """Values outside the FOCUS 1.2 lists never go out: Other + the provider's own name, never dropped."""
    folder = tmp_path / "f"
    folder.mkdir()
    head = ("BilledCost,BillingCurrency,BillingAccountId,BillingPeriodStart,ChargeCategory,ProviderName,"
            "ServiceName,ServiceCategory,ServiceSubcategory\n")
    (folder / "2025-03-vendor.csv").write_text(
        head
        + "4.00,EUR,v-1,2025-03-01,Usage,Vecto,Vecto Vector Store,Database,Vector Databases\n"  # not 1.2 names
        + "2.50,EUR,v-1,2025-03-01,Usage,Vecto,Vecto Support Plan,,\n"  # no category at all
        + "1.25,EUR,v-1,2025-03-01,Usage,Vecto,Vecto GPU Nodes,compute,virtual machines\n"  # case only
        + "0.75,EUR,v-1,2025-03-01,Usage,Vecto,Vecto Object Store,Storage,Vector Buckets\n")  # bad subcategory
    cfg = config(tmp_path, str(folder))
    _, stats, _ = build(cfg, "2025-03")
    assert (stats.rows, stats.billed_cost, stats.quarantined_rows) == (4, Decimal("8.50"), 0)
    rows = rows_of(cfg, "2025-03", "ServiceName, ServiceCategory, ServiceSubcategory, x_UnmappedService")
    assert rows == [
        ("Vecto Vector Store", "Other", "Other (Other)", "Vecto Vector Store"),
        ("Vecto Support Plan", "Other", "Other (Other)", "Vecto Support Plan"),
        ("Vecto GPU Nodes", "Compute", "Virtual Machines", None),
        ("Vecto Object Store", "Storage", "Other (Storage)", None),
    ]
    assert all(sub in SERVICE_SUBCATEGORIES[cat] for _, cat, sub, _ in rows)


# ---------------------------------------------------------------- the specification's own files, in place
def _when(text: str | None) -> datetime | None:
    """A FOCUS example date, parsed independently of the connector: ISO 8601 or M/D/YY."""
    text = (text or "").strip()
    if not text or text.lower() == "null":
        return None
    if "/" in text:
        return datetime.strptime(text, "%m/%d/%y").replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(text)


def _expected_by_month(folder: Path) -> dict[str, list]:
    """month -> [rows, numeric BilledCost sum, rows the connector must quarantine] from the raw files."""
    out: dict[str, list] = defaultdict(lambda: [0, Decimal(0), 0])
    seen_in: dict[tuple, Path] = {}  # a row identical to one of an earlier file is a part delivered twice
    for path in sorted(folder.rglob("*.csv")):
        for r in read_rows(path):
            start = _when(r.get("BillingPeriodStart"))
            same = tuple(sorted((k, v) for k, v in r.items() if k and v not in ("", None) and v.lower() != "null"))
            bad = seen_in.setdefault(same, path) != path
            try:
                billed = Decimal(r["BilledCost"].strip())
            except InvalidOperation:
                billed, bad = Decimal(0), True  # spreadsheet money text: '$10,000.00 '
            for col in ("BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
                try:
                    _when(r.get(col))
                except ValueError:
                    bad = True  # e.g. hour 30
            e = out[start.strftime("%Y-%m")]
            e[0] += 1
            e[1] += billed
            e[2] += bad
    return dict(out)


def _tie(cfg, expected: dict[str, list]) -> dict[str, int]:
    reasons: dict[str, int] = defaultdict(int)
    assert connector_for(cfg.sources[0]).months() == sorted(expected)
    for month, (n, billed, bad) in sorted(expected.items()):
        _, stats, _ = build(cfg, month)
        assert stats.rows + stats.quarantined_rows == n, month  # every input row is a line item or quarantined
        assert stats.billed_cost + (stats.quarantined_billed_cost or 0) == billed, month
        assert stats.quarantined_rows == bad, (month, stats.quarantine_reasons)
        for k, v in stats.quarantine_reasons.items():
            reasons[k] += v
    return dict(reasons)


def test_real_focus_1_2_specification_examples(tmp_path):
    """The FOCUS 1.2 example files (commitment discounts, SaaS, virtual currency): every row accounted for."""
    folder = shared_sample("focus-spec-1.2/saas_examples/virtual_currency_pricing_model_a1.csv").parents[1]
    cfg = config(tmp_path, str(folder), billing_currency="USD", provider_name="FOCUS example",
                 billing_account_id="example")
    expected = _expected_by_month(folder)
    reasons = _tie(cfg, expected)
    # what the connector refuses is what the files get wrong, nothing else (`null` cells load as missing)
    assert set(reasons) <= {"non-numeric BilledCost", "unparseable ChargePeriodEnd", "unparseable ChargePeriodStart",
                            "duplicate row:"}  # two example files repeat the same rows
    assert sum(e[0] for e in expected.values()) > sum(reasons.values()) > 0


def test_real_focus_ai_billing_draft_examples(tmp_path):
    """The working-draft AI billing files: all 1.3 rows load; provider columns come from the 1.3 names."""
    folder = shared_sample("focus-ai-draft/per_token_foundation_model_api.csv").parent
    cfg = config(tmp_path, str(folder))
    expected = _expected_by_month(folder)
    assert _tie(cfg, expected) == {}
    raw = {(p.name, i): r for p in folder.glob("*.csv") for i, r in enumerate(read_rows(p), start=1)}
    got = 0
    for month in expected:
        for r in rows_of(cfg, month, "x_SourceFile, x_SourceRow, ProviderName, PublisherName, InvoiceIssuerName, "
                                     "x_SourceDataset, ServiceCategory, ServiceSubcategory, SkuPriceDetails"):
            src = raw[(r[0], r[1])]
            assert r[2:6] == (src["HostProviderName"], src["ServiceProviderName"], src["InvoiceIssuerName"],
                              "FOCUS 1.3")
            assert (r[6], r[7]) == (src["ServiceCategory"], src["ServiceSubcategory"])
            if src["SkuPriceDetails"]:
                assert json.loads(r[8]) == json.loads(src["SkuPriceDetails"])
            got += 1
    assert got == len(raw)


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
    delivery = steps.land(cfg, cfg.sources[0], "2024-06")
    with pytest.raises(SourceError, match=r"2024-06-costs.csv has no BilledCost column: not a FOCUS file") as err:
        steps.build_line_items(cfg, cfg.sources[0], delivery)
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
        [str(steps.partition_dir(cfg, steps.QUARANTINE, "focus-test", "2024-06") / "rows.parquet")]).fetchall()
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


# ------------------------------------------------------------------ CSV dialects (issue 16, points 3 and 4)
DIALECT_HEADER = ["BilledCost", "EffectiveCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart",
                  "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName", "ServiceName",
                  "ConsumedQuantity", "CommitmentDiscountId", "Tags"]
DIALECT_ROWS = [
    ["10.25", "10.25", "a", "USD", "2024-06-01", "Usage", "2024-06-02", "2024-06-03", "P", "Compute", "3",
     "cd-1", '{"team": "search"}'],
    ["2.5", "2.5", "a", "USD", "2024-06-01", "Usage", "2024-06-02", "2024-06-03", "P", "Storage", None, None, None],
    ["0.75", "0.75", "a", "USD", "2024-06-01", "Tax", "2024-06-01", "2024-07-01", "P", "Tax", None, None, None],
]


def _dialect_csv(path: Path, null: str = "", delimiter: str = ",") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(DIALECT_HEADER)
    w.writerows([[null if v is None else v for v in row] for row in DIALECT_ROWS])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())
    return path


def _dialect_build(tmp_path: Path, name: str, **options):
    cfg = config(tmp_path / name, str(tmp_path / name / "f"), **options)
    _, stats, alloc = build(cfg, "2024-06")
    cols = "BilledCost, ConsumedQuantity, CommitmentDiscountId, Tags, ChargeCategory"
    return stats, alloc, rows_of(cfg, "2024-06", cols)


@pytest.mark.parametrize("null, options", [("NULL", {}), ("null", {}), ("N/A", {"null_strings": ["", "N/A"]})])
def test_csv_null_spellings_load_as_missing(tmp_path, null, options):
    _dialect_csv(tmp_path / "empty" / "f" / "2024-06-focus.csv")
    _dialect_csv(tmp_path / "spelled" / "f" / "2024-06-focus.csv", null=null)
    want, want_alloc, want_rows = _dialect_build(tmp_path, "empty")
    got, got_alloc, got_rows = _dialect_build(tmp_path, "spelled", **options)
    assert (got.rows, got.quarantined_rows, got.quarantine_reasons) == (3, 0, {})
    assert (got.billed_cost, got.effective_cost, got_alloc.billed_cost) == \
        (want.billed_cost, want.effective_cost, want_alloc.billed_cost) == (Decimal("13.5"),) * 3
    assert got_rows == want_rows
    assert [r[2] for r in got_rows] == ["cd-1", None, None]  # never the text 'NULL' as data
    assert got_rows[2][4] == "Tax"


def test_csv_null_strings_option_is_checked(tmp_path):
    _dialect_csv(tmp_path / "x" / "f" / "2024-06-focus.csv")
    cfg = config(tmp_path / "x", str(tmp_path / "x" / "f"), null_strings="NULL")
    delivery = steps.land(cfg, cfg.sources[0], "2024-06")
    with pytest.raises(SourceError, match="null_strings must be a list of strings"):
        steps.build_line_items(cfg, cfg.sources[0], delivery)


def test_csv_semicolon_delimiter_option(tmp_path):
    _dialect_csv(tmp_path / "comma" / "f" / "2024-06-focus.csv")
    _dialect_csv(tmp_path / "semi" / "f" / "2024-06-focus.csv", delimiter=";")
    want, _, want_rows = _dialect_build(tmp_path, "comma")
    got, _, got_rows = _dialect_build(tmp_path, "semi", delimiter=";")
    assert (got.rows, got.billed_cost, got.quarantined_rows) == (want.rows, want.billed_cost, 0) == \
        (3, Decimal("13.5"), 0)
    assert got_rows == want_rows


def test_csv_rows_with_wrong_field_count_are_quarantined_never_shifted(tmp_path):
    folder = tmp_path / "f"
    path = _dialect_csv(folder / "2024-06-focus.csv")
    lines = path.read_text().splitlines(keepends=True)
    # an unquoted comma in a value (14 fields) and a row cut short after the cost columns (2 fields)
    shifted = "5,5,a,USD,2024-06-01,Usage,2024-06-02,2024-06-03,P,Compute, big box,7,cd-2,\"{\"\"team\"\": \"\"x\"\"}\"\n"
    short = "4,4\n"
    path.write_text(lines[0] + lines[1] + shifted + lines[2] + "\n" + short + lines[3])
    cfg = config(tmp_path, str(folder))
    _, stats, alloc = build(cfg, "2024-06")
    assert (stats.rows, stats.billed_cost, alloc.billed_cost) == (3, Decimal("13.5"), Decimal("13.5"))
    assert stats.quarantined_rows == 2
    q = duckdb.connect().execute(
        "SELECT x_SourceFile, x_SourceRow, reason, billed_cost FROM read_parquet(?) ORDER BY 2",
        [str(steps.partition_dir(cfg, steps.QUARANTINE, "focus-test", "2024-06") / "rows.parquet")]).fetchall()
    assert q == [
        ("2024-06-focus.csv", 2, "row has 14 fields, the header has 13 (line 3; values not read, cost unknown)", None),
        ("2024-06-focus.csv", 4, "row has 2 fields, the header has 13 (line 6; values not read, cost unknown)", None),
    ]
    # the good rows keep their own values and row numbers: nothing shifted into RegionId or Tags
    rows = rows_of(cfg, "2024-06", "x_SourceRow, BilledCost, ServiceName, CommitmentDiscountId, Tags")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(1, Decimal("10.25"), "Compute", "cd-1"),
                                                       (3, Decimal("2.5"), "Storage", None),
                                                       (5, Decimal("0.75"), "Tax", None)]
    assert json.loads(rows[0][4]) == {"team": "search"}


def test_the_same_rows_under_two_file_names_are_counted_once(tmp_path):
    """FOCUS rows have no id: a part delivered again under another file name (same rows, same values) is
    quarantined naming the row it repeats; Σ input = Σ line items + Σ quarantined, nothing summed twice."""
    folder = tmp_path / "f"
    first = _dialect_csv(folder / "2024-06-focus-part1.csv")
    (folder / "2024-06-focus-part2.csv").write_text(first.read_text())
    cfg = config(tmp_path, str(folder))
    _, stats, alloc = build(cfg, "2024-06")
    assert (stats.rows, stats.billed_cost, alloc.billed_cost) == (3, Decimal("13.5"), Decimal("13.5"))
    assert stats.quarantined_rows == 3 and stats.quarantined_billed_cost == Decimal("13.5")
    q = duckdb.connect().execute(
        "SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet(?) ORDER BY 2",
        [str(steps.partition_dir(cfg, steps.QUARANTINE, "focus-test", "2024-06") / "rows.parquet")]).fetchall()
    assert q == [("2024-06-focus-part2.csv", n, f"duplicate row: the same row is in 2024-06-focus-part1.csv:{n} "
                                                 "(a part delivered twice)") for n in (1, 2, 3)]
    # one changed value makes it a different row: kept
    text = first.read_text().splitlines(keepends=True)
    (folder / "2024-06-focus-part2.csv").write_text(text[0] + text[1].replace("2024-06-02", "2024-06-04", 1))
    _, stats, _ = build(cfg, "2024-06")
    assert stats.rows == 4 and stats.quarantined_rows == 0
