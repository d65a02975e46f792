"""AWS cost-export connector against a real S3 API: moto's S3 server, spoken to over HTTP by boto3.

Layouts follow the AWS user guides (see field notes §1.1-1.2): CUR 2.0 (Data Exports) in overwrite
mode with its metadata manifest and in create-new-version mode, and the legacy CUR with several
assemblies per period and a top-level manifest naming the current one. Our hand-written legacy CUR
CSVs (tests/fixtures/aws_cur, quirks in its NOTES.md) are built from a local folder; the real samples
they were modelled on are read in place from ../shared/data (skipped when absent).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apportion import steps
from apportion.connectors.aws_cur import AwsCurConnector
from apportion.connectors.base import SourceError, safe_dirname
from apportion.connectors.registry import connector_for
from apportion.models.config import load_config
from apportion.models.focus import SERVICE_SUBCATEGORIES
from apportion.steps import line_items as line_items_step
from tests.shared_data import shared_sample

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "aws_cur"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")  # DECIMAL(38,12)

TEAMS = ("ml-platform", "research", "search", "data-eng")
PROJECTS = ("llm-serving", "recsys", "fraud-detection", "data-lake")


# ============================================================================ synthetic CUR rows
def make_rows(month: str, costs: list, *, tag: str = "li", currency: str = "USD") -> list[dict]:
    """Logical CUR rows: one EC2 GPU usage line per cost, tagged round-robin with team/project."""
    y, m = map(int, month.split("-"))
    start = datetime(y, m, 1, tzinfo=timezone.utc)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc)
    rows = []
    for i, cost in enumerate(costs):
        tags = {"team": TEAMS[i % len(TEAMS)], "project": PROJECTS[i % len(PROJECTS)], "createdBy": f"user{i % 2}"}
        if i % 5 == 4:  # an untagged resource: empty strings, as CUR delivers them
            tags = {"team": "", "project": "", "createdBy": ""}
        rows.append({
            "id": f"{tag}-{i:04d}",
            "period_start": start,
            "period_end": end,
            "account": "222222222222",
            "type": "Usage",
            "product_code": "AmazonEC2",
            "usage_type": "USE1-BoxUsage:g5.xlarge",
            "operation": "RunInstances",
            "resource": f"i-{tag}{i:06d}",
            "amount": 1.0,
            "currency": currency,
            "rate": cost,
            "cost": cost,
            "start": start + timedelta(hours=i),
            "end": start + timedelta(hours=i + 1),
            "product_name": "Amazon Elastic Compute Cloud",
            "region": "us-east-1",
            "instance_type": "g5.xlarge",
            "tags": tags,
        })
    return rows


def expected_sum(costs) -> Decimal:
    return sum((Decimal(str(c)).quantize(Q) for c in costs), Decimal(0)).quantize(Q)


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- CUR 2.0: snake_case columns, MAP columns (JSON text in CSV), costs as double
def _cur2_record(r: dict) -> dict:
    return {
        "identity_line_item_id": r["id"],
        "identity_time_interval": f"{iso(r['start'])}/{iso(r['end'])}",
        "bill_bill_type": "Anniversary",
        "bill_billing_entity": "AWS",
        "bill_billing_period_start_date": r["period_start"],
        "bill_billing_period_end_date": r["period_end"],
        "bill_invoice_id": None,
        "bill_payer_account_id": "111111111111",
        "line_item_usage_account_id": r["account"],
        "line_item_line_item_type": r["type"],
        "line_item_usage_start_date": r["start"],
        "line_item_usage_end_date": r["end"],
        "line_item_product_code": r["product_code"],
        "line_item_usage_type": r["usage_type"],
        "line_item_operation": r["operation"],
        "line_item_resource_id": r["resource"],
        "line_item_usage_amount": r["amount"],
        "line_item_currency_code": r["currency"],
        "line_item_unblended_rate": r["rate"],
        "line_item_unblended_cost": r["cost"],
        "pricing_public_on_demand_cost": r["cost"],
        "product": {"product_name": r["product_name"], "region_code": r["region"], "instance_type": r["instance_type"]},
        "product_servicecode": r["product_code"],
        "resource_tags": {f"user_{k}" if k != "createdBy" else "aws_createdBy": v for k, v in r["tags"].items()},
        "cost_category": {},
    }


CUR2_SCHEMA = pa.schema([
    ("identity_line_item_id", pa.string()), ("identity_time_interval", pa.string()),
    ("bill_bill_type", pa.string()), ("bill_billing_entity", pa.string()),
    ("bill_billing_period_start_date", pa.timestamp("ms")), ("bill_billing_period_end_date", pa.timestamp("ms")),
    ("bill_invoice_id", pa.string()), ("bill_payer_account_id", pa.string()),
    ("line_item_usage_account_id", pa.string()), ("line_item_line_item_type", pa.string()),
    ("line_item_usage_start_date", pa.timestamp("ms")), ("line_item_usage_end_date", pa.timestamp("ms")),
    ("line_item_product_code", pa.string()), ("line_item_usage_type", pa.string()),
    ("line_item_operation", pa.string()), ("line_item_resource_id", pa.string()),
    ("line_item_usage_amount", pa.float64()), ("line_item_currency_code", pa.string()),
    ("line_item_unblended_rate", pa.float64()), ("line_item_unblended_cost", pa.float64()),
    ("pricing_public_on_demand_cost", pa.float64()),
    ("product", pa.map_(pa.string(), pa.string())), ("product_servicecode", pa.string()),
    ("resource_tags", pa.map_(pa.string(), pa.string())), ("cost_category", pa.map_(pa.string(), pa.string())),
])


def cur2_parquet(rows: list[dict]) -> bytes:
    recs = []
    for r in rows:
        rec = _cur2_record(r)
        for k in ("bill_billing_period_start_date", "bill_billing_period_end_date",
                  "line_item_usage_start_date", "line_item_usage_end_date"):
            rec[k] = rec[k].replace(tzinfo=None)
        for k in ("product", "resource_tags", "cost_category"):
            rec[k] = list(rec[k].items())
        recs.append(rec)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(recs, schema=CUR2_SCHEMA), buf, compression="snappy")
    return buf.getvalue()


def cur2_csv_gz(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = None
    for r in rows:
        rec = _cur2_record(r)
        for k, v in rec.items():
            if isinstance(v, datetime):
                rec[k] = iso(v)
            elif isinstance(v, dict):
                rec[k] = json.dumps(v) if v else ""
            elif v is None:
                rec[k] = ""
            else:
                rec[k] = str(v)
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(rec), lineterminator="\n")
            writer.writeheader()
        writer.writerow(rec)
    return gzip.compress(out.getvalue().encode(), mtime=0)


def cur2_file(rows: list[dict], fmt: str) -> bytes:
    return cur2_parquet(rows) if fmt == "parquet" else cur2_csv_gz(rows)


def cur2_suffix(fmt: str) -> str:
    return ".snappy.parquet" if fmt == "parquet" else ".csv.gz"


# ---- legacy CUR: `category/Name` columns in CSV; Athena-style snake_case in Parquet
def _legacy_record(r: dict) -> dict:
    return {
        "identity/LineItemId": r["id"],
        "identity/TimeInterval": f"{iso(r['start'])}/{iso(r['end'])}",
        "bill/InvoiceId": "",
        "bill/BillingEntity": "AWS",
        "bill/BillType": "Anniversary",
        "bill/PayerAccountId": "111111111111",
        "bill/BillingPeriodStartDate": iso(r["period_start"]),
        "bill/BillingPeriodEndDate": iso(r["period_end"]),
        "lineItem/UsageAccountId": r["account"],
        "lineItem/LineItemType": r["type"],
        "lineItem/UsageStartDate": iso(r["start"]),
        "lineItem/UsageEndDate": iso(r["end"]),
        "lineItem/ProductCode": r["product_code"],
        "lineItem/UsageType": r["usage_type"],
        "lineItem/Operation": r["operation"],
        "lineItem/ResourceId": r["resource"],
        "lineItem/UsageAmount": str(r["amount"]),
        "lineItem/CurrencyCode": r["currency"],
        "lineItem/UnblendedRate": str(r["rate"]),
        "lineItem/UnblendedCost": str(r["cost"]),
        "product/ProductName": r["product_name"],
        "product/instanceType": r["instance_type"],
        "product/region": r["region"],
        "product/servicecode": r["product_code"],
        "pricing/publicOnDemandCost": str(r["cost"]),
        "resourceTags/aws:createdBy": r["tags"]["createdBy"],
        "resourceTags/user:project": r["tags"]["project"],
        "resourceTags/user:team": r["tags"]["team"],
    }


def legacy_csv_gz(rows: list[dict]) -> bytes:
    out = io.StringIO()
    recs = [_legacy_record(r) for r in rows]
    writer = csv.DictWriter(out, fieldnames=list(recs[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(recs)
    return gzip.compress(out.getvalue().encode(), mtime=0)


# Athena/Parquet flavour of the legacy column names, written out (not derived from the code under test).
ATHENA_NAMES = {
    "identity/LineItemId": "identity_line_item_id", "identity/TimeInterval": "identity_time_interval",
    "bill/InvoiceId": "bill_invoice_id", "bill/BillingEntity": "bill_billing_entity", "bill/BillType": "bill_bill_type",
    "bill/PayerAccountId": "bill_payer_account_id", "bill/BillingPeriodStartDate": "bill_billing_period_start_date",
    "bill/BillingPeriodEndDate": "bill_billing_period_end_date", "lineItem/UsageAccountId": "line_item_usage_account_id",
    "lineItem/LineItemType": "line_item_line_item_type", "lineItem/UsageStartDate": "line_item_usage_start_date",
    "lineItem/UsageEndDate": "line_item_usage_end_date", "lineItem/ProductCode": "line_item_product_code",
    "lineItem/UsageType": "line_item_usage_type", "lineItem/Operation": "line_item_operation",
    "lineItem/ResourceId": "line_item_resource_id", "lineItem/UsageAmount": "line_item_usage_amount",
    "lineItem/CurrencyCode": "line_item_currency_code", "lineItem/UnblendedRate": "line_item_unblended_rate",
    "lineItem/UnblendedCost": "line_item_unblended_cost", "product/ProductName": "product_product_name",
    "product/instanceType": "product_instance_type", "product/region": "product_region",
    "product/servicecode": "product_servicecode", "pricing/publicOnDemandCost": "pricing_public_on_demand_cost",
    "resourceTags/aws:createdBy": "resource_tags_aws_created_by", "resourceTags/user:project": "resource_tags_user_project",
    "resourceTags/user:team": "resource_tags_user_team",
}
ATHENA_DOUBLES = ("line_item_usage_amount", "line_item_unblended_rate", "line_item_unblended_cost",
                  "pricing_public_on_demand_cost")


def legacy_parquet(rows: list[dict]) -> bytes:
    """Legacy CUR in Parquet (Athena flavour): lower snake_case names, one column per activated tag."""
    recs = []
    for r in rows:
        rec = {ATHENA_NAMES[name]: value for name, value in _legacy_record(r).items()}
        for k in ATHENA_DOUBLES:
            rec[k] = float(rec[k])
        recs.append(rec)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(recs), buf, compression="snappy")
    return buf.getvalue()


# ============================================================================ S3 layouts
class Cur2Export:
    """`<prefix>/<export>/data/BILLING_PERIOD=YYYY-MM/...` + `metadata/.../<export>-Manifest.json`."""

    def __init__(self, bucket, prefix: str = "exports", export: str = "cur2-main"):
        self.bucket, self.prefix, self.export = bucket, prefix, export
        self.root = f"{prefix}/{export}"
        self.uri = f"s3://{bucket.name}/{self.root}"

    def data_key(self, month: str, n: int, fmt: str = "parquet", execution: str | None = None) -> str:
        folder = f"data/BILLING_PERIOD={month}/" + (f"{execution}/" if execution else "")
        return f"{folder}{self.export}-{n:05d}{cur2_suffix(fmt)}"  # relative to the export root

    def put(self, rel_key: str, body: bytes) -> str:
        return self.bucket.put(f"{self.root}/{rel_key}", body)

    def manifest(self, month: str, data_keys: list[str], execution_id: str, execution_folder: str | None = None) -> str:
        rel = f"metadata/BILLING_PERIOD={month}/" + (f"{execution_folder}/" if execution_folder else "")
        rel += f"{self.export}-Manifest.json"
        body = {
            "executionId": execution_id,
            "exportArn": f"arn:aws:bcm-data-exports:us-east-1:111111111111:export/{self.export}-{uuid.uuid4()}",
            "billingPeriod": {"start": f"{month}-01T00:00:00.000Z"},
            "columns": [{"name": f.name, "type": str(f.type)} for f in CUR2_SCHEMA],
            "dataFiles": [f"s3://{self.bucket.name}/{self.root}/{k}" for k in data_keys],
            "additionalOutputFiles": [],
        }
        self.put(rel, json.dumps(body).encode())
        return rel


class LegacyReport:
    """`<prefix>/<report>/<yyyymmdd-yyyymmdd>/<assemblyId>/<report>-<n>.csv.gz` + top-level manifest."""

    def __init__(self, bucket, prefix: str = "cur", report: str = "legacy-report"):
        self.bucket, self.prefix, self.report = bucket, prefix, report
        self.root = f"{prefix}/{report}"
        self.uri = f"s3://{bucket.name}/{self.root}"

    @staticmethod
    def period(month: str) -> str:
        y, m = map(int, month.split("-"))
        return f"{y:04d}{m:02d}01-{y + (m == 12):04d}{m % 12 + 1:02d}01"

    def deliver(self, month: str, files: list[bytes], fmt: str = "csv.gz", assembly: str | None = None,
                leading_slash: bool = True, extra_keys: list[str] = (), top_manifest: bool = True) -> dict:
        """Upload one assembly and (by default) point the top-level manifest at it, as AWS does."""
        assembly = assembly or str(uuid.uuid4())
        period = self.period(month)
        suffix = ".snappy.parquet" if fmt == "parquet" else ".csv.gz"
        rel_keys = []
        for n, body in enumerate(files, start=1):
            rel = f"{period}/{assembly}/{self.report}-{n}{suffix}"
            self.bucket.put(f"{self.root}/{rel}", body)
            rel_keys.append(rel)
        report_keys = [("/" if leading_slash else "") + f"{self.root}/{k}" for k in rel_keys + list(extra_keys)]
        manifest = {
            "assemblyId": assembly,
            "account": "111111111111",
            "columns": [{"category": "lineItem", "name": "UnblendedCost", "type": "OptionalBigDecimal"}],
            "charset": "UTF-8",
            "compression": "Parquet" if fmt == "parquet" else "GZIP",
            "contentType": "application/parquet" if fmt == "parquet" else "text/csv",
            "reportId": hashlib.sha256(self.report.encode()).hexdigest(),
            "reportName": self.report,
            "billingPeriod": {"start": f"{period[:8]}T000000.000Z", "end": f"{period[9:]}T000000.000Z"},
            "bucket": self.bucket.name,
            "reportKeys": report_keys,
            "additionalArtifactKeys": [],
        }
        body = json.dumps(manifest).encode()
        self.bucket.put(f"{self.root}/{period}/{assembly}/{self.report}-Manifest.json", body)
        if top_manifest:
            self.bucket.put(f"{self.root}/{period}/{self.report}-Manifest.json", body)
        return {"assembly": assembly, "keys": rel_keys, "manifest_key": f"{period}/{self.report}-Manifest.json"}


# ============================================================================ config + lake helpers
def make_config(tmp_path: Path, uri: str, options: dict | None = None, name: str = "aws-main"):
    tax = tmp_path / "taxonomy.yaml"
    if not tax.exists():
        shutil.copy(TAXONOMY, tax)
    lines = ["warehouse: data", "taxonomy: taxonomy.yaml", "sources:", f"  - name: {name}",
             "    kind: aws_cur", f"    uri: {uri}"]
    if options:
        lines.append("    options:")
        lines += [f"      {k}: {json.dumps(v)}" for k, v in options.items()]
    (tmp_path / "apportion.yaml").write_text("\n".join(lines) + "\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    return cfg, cfg.source(name)


def s3_config(tmp_path: Path, bucket, uri: str):
    return make_config(tmp_path, uri, {"endpoint_url": bucket.endpoint_url})


def query(sql: str) -> list[dict]:
    """Rows of a query over lake files, as dicts (fresh in-memory DuckDB, UTC)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def lake_totals(cfg, table: str, source: str, month: str) -> tuple[int, Decimal, Decimal]:
    d = steps.partition_dir(cfg, table, source, month)
    r = query(f"SELECT count(*) AS n, sum(BilledCost) AS b, sum(EffectiveCost) AS e FROM read_parquet('{d}/*.parquet')")[0]
    return r["n"], r["b"], r["e"]


def line_items(cfg, source: str, month: str, columns: str = "*") -> list[dict]:
    d = steps.partition_dir(cfg, steps.LINE_ITEMS, source, month)
    return query(f"SELECT {columns} FROM read_parquet('{d}/*.parquet') ORDER BY x_LineId")


def run_month(cfg, source, month: str):
    """land -> line items -> allocations; returns (delivery, line item stats, allocation stats)."""
    delivery = steps.land(cfg, source, month)
    stats = steps.build_line_items(cfg, source, delivery)
    alloc = steps.allocate(cfg, source, month)
    return delivery, stats, alloc


def landed_files(delivery) -> dict[str, bytes]:
    base = Path(delivery.local_dir)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.name != "delivery.json"}


# ============================================================================ the S3 server itself
def test_s3_server_is_real_http(s3_bucket, tmp_path):
    """The connector's boto3 client talks HTTP to the moto server (no in-process patching)."""
    s3_bucket.put("exports/cur2-main/data/BILLING_PERIOD=2025-01/x.csv.gz", b"hello")
    url = s3_bucket.client.generate_presigned_url("get_object", Params={
        "Bucket": s3_bucket.name, "Key": "exports/cur2-main/data/BILLING_PERIOD=2025-01/x.csv.gz"})
    assert url.startswith(s3_bucket.endpoint_url + "/")
    with urllib.request.urlopen(url, timeout=10) as resp:  # a plain HTTP GET, no boto3 involved
        assert resp.read() == b"hello"
    _, source = s3_config(tmp_path, s3_bucket, f"s3://{s3_bucket.name}/exports/cur2-main")
    connector = connector_for(source)
    assert connector.store.client.meta.endpoint_url == s3_bucket.endpoint_url
    assert connector.months() == ["2025-01"]


def test_endpoint_from_environment(s3_bucket, tmp_path, monkeypatch):
    """Without the `endpoint_url` option, boto3's AWS_ENDPOINT_URL_S3 is honoured."""
    exp = Cur2Export(s3_bucket)
    exp.put(exp.data_key("2025-04", 1), cur2_parquet(make_rows("2025-04", [1.5, 2.5])))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    cfg, source = make_config(tmp_path, exp.uri)
    assert source.options == {}
    delivery, stats, _ = run_month(cfg, source, "2025-04")
    assert delivery.layout == "cur2-overwrite"
    assert (stats.rows, stats.billed_cost) == (2, Decimal("4.000000000000"))


# ============================================================================ 1. CUR 2.0 overwrite + manifest
def test_cur2_overwrite_with_manifest(s3_bucket, tmp_path):
    exp = Cur2Export(s3_bucket)
    jan_a = make_rows("2025-01", [1.25, 2.5, 3.75, 0.0001, 10.0], tag="a")
    jan_b = make_rows("2025-01", [100.0, 0.3333], tag="b")
    stale = make_rows("2025-01", [999.0], tag="stale")  # left over from an earlier, bigger refresh
    uploaded = {
        exp.data_key("2025-01", 1): cur2_parquet(jan_a),
        exp.data_key("2025-01", 2): cur2_parquet(jan_b),
        exp.data_key("2025-01", 3): cur2_parquet(stale),
        exp.data_key("2025-02", 1): cur2_parquet(make_rows("2025-02", [7.0])),
    }
    for k, body in uploaded.items():
        exp.put(k, body)
    jan_keys = [exp.data_key("2025-01", 1), exp.data_key("2025-01", 2)]
    man_key = exp.manifest("2025-01", jan_keys, "exec-2025-01-a")
    exp.manifest("2025-02", [exp.data_key("2025-02", 1)], "exec-2025-02-a")

    cfg, source = s3_config(tmp_path, s3_bucket, exp.uri)
    connector = connector_for(source)
    assert connector.months() == ["2025-01", "2025-02"]
    plan = connector.plan("2025-01")
    assert (plan.layout, plan.delivery_id, plan.manifest_key) == ("cur2", "exec-2025-01-a", man_key)
    assert [o.key for o in plan.objects] == jan_keys

    delivery = steps.land(cfg, source, "2025-01")
    assert not delivery.reused
    month_dir = cfg.raw / "aws-main" / "2025-01"
    assert Path(delivery.local_dir) == month_dir / safe_dirname("exec-2025-01-a")
    # Exactly the manifest's files (plus the manifest itself), byte for byte.
    files = landed_files(delivery)
    assert set(files) == set(jan_keys) | {man_key}
    for k in jan_keys:
        assert files[k] == uploaded[k]
    assert json.loads(files[man_key])["executionId"] == "exec-2025-01-a"
    assert [k for k, _ in delivery.files] == jan_keys

    record = json.loads((Path(delivery.local_dir) / "delivery.json").read_text())
    assert record["delivery_id"] == "exec-2025-01-a"
    assert record["source"] == "aws-main" and record["kind"] == "aws_cur" and record["month"] == "2025-01"
    assert record["layout"] == "cur2" and record["manifest_key"] == man_key
    assert [(o["key"], o["size"], o["etag"]) for o in record["objects"]] == [
        (k, len(uploaded[k]), hashlib.md5(uploaded[k]).hexdigest()) for k in jan_keys
    ]
    fetched = datetime.fromisoformat(record["fetched_at"])
    assert fetched.tzinfo is not None and abs(datetime.now(timezone.utc) - fetched) < timedelta(minutes=5)
    log = (month_dir / "deliveries.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["delivery_id"] == "exec-2025-01-a"
    assert (month_dir / "LANDED").read_text().strip() == Path(delivery.local_dir).name

    # Landing the same delivery again reuses it: same record, nothing downloaded or logged.
    again = steps.land(cfg, source, "2025-01")
    assert again.reused and again.fetched_at == delivery.fetched_at and again.local_dir == delivery.local_dir
    assert len((month_dir / "deliveries.jsonl").read_text().splitlines()) == 1
    assert landed_files(again) == files

    stats = steps.build_line_items(cfg, source, again)
    assert stats.rows == 7 and stats.quarantined_rows == 0
    assert stats.billed_cost == expected_sum([1.25, 2.5, 3.75, 0.0001, 10.0, 100.0, 0.3333])
    assert stats.effective_cost == stats.billed_cost
    rows = line_items(cfg, "aws-main", "2025-01")
    assert {r["x_SourceFile"] for r in rows} == set(jan_keys)
    first = rows[0]
    assert first["x_ProviderLineItemId"] == "a-0000" and first["x_SourceRow"] == 1
    assert first["BilledCost"] == Decimal("1.250000000000") and first["BillingCurrency"] == "USD"
    # CUR 2.0 keeps product scalars in the `product` map; tags arrive as `user_*` / `aws_*` keys.
    assert (first["ServiceName"], first["RegionId"], first["x_InstanceType"]) == (
        "Amazon Elastic Compute Cloud", "us-east-1", "g5.xlarge")
    assert first["ServiceCategory"] == "Compute" and first["ChargeCategory"] == "Usage"
    assert json.loads(first["Tags"]) == {"team": "ml-platform", "project": "llm-serving", "aws:createdBy": "user0"}
    assert rows[4]["Tags"] is None  # every tag value empty -> no tags
    assert first["BillingPeriodStart"] == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert first["x_DeliveryId"] == "exec-2025-01-a"

    alloc = steps.allocate(cfg, source, "2025-01")
    assert (alloc.billed_cost, alloc.effective_cost) == (stats.billed_cost, stats.effective_cost)


def test_cur2_doubled_export_name(s3_bucket, tmp_path):
    """`<prefix>/<export>/<export>/data/...` (prefix set to the export name) is found by listing."""
    exp = Cur2Export(s3_bucket, prefix="exports/cur2-main", export="cur2-main")
    k = exp.data_key("2025-05", 1)
    exp.put(k, cur2_parquet(make_rows("2025-05", [4.0, 5.0])))
    exp.manifest("2025-05", [k], "exec-doubled")
    cfg, source = s3_config(tmp_path, s3_bucket, f"s3://{s3_bucket.name}/exports/cur2-main")
    assert connector_for(source).months() == ["2025-05"]
    delivery, stats, _ = run_month(cfg, source, "2025-05")
    assert delivery.delivery_id == "exec-doubled"
    assert [key for key, _ in delivery.files] == ["cur2-main/" + k]
    assert stats.billed_cost == Decimal("9.000000000000")


# ============================================================================ 2. CUR 2.0 create-new-version
@pytest.mark.parametrize("fmt", ["parquet", "csv.gz"])
@pytest.mark.parametrize("with_manifests", [False, True], ids=["no-manifest", "per-execution-manifests"])
def test_cur2_versioned_loads_only_newest_execution(s3_bucket, tmp_path, fmt, with_manifests):
    exp = Cur2Export(s3_bucket)
    old_exec = "2025-03-01T06:12:40.118Z-3695a728-d559-40bd-ac30-ffc97b552489"
    new_exec = "2025-03-02T06:15:02.907Z-9c1f0e55-0b7e-4a51-8a43-1d2f7c4be5aa"
    old_costs = [50.0, 60.0, 70.0]
    new_costs_1, new_costs_2 = [1.1, 2.2, 3.3], [4.4, 0.05]
    uploads = [
        (new_exec, 1, make_rows("2025-03", new_costs_1, tag="n1")),
        (new_exec, 2, make_rows("2025-03", new_costs_2, tag="n2")),
        (old_exec, 1, make_rows("2025-03", old_costs, tag="o1")),
    ]
    if with_manifests:  # AWS writes each execution's manifest after its data, oldest execution first
        uploads = uploads[2:] + uploads[:2]
    keys: dict[str, list[str]] = {old_exec: [], new_exec: []}
    for execution, n, rows in uploads:
        key = exp.data_key("2025-03", n, fmt, execution)
        exp.put(key, cur2_file(rows, fmt))
        keys[execution].append(key)
        if with_manifests and (execution, n) in ((old_exec, 1), (new_exec, 2)):
            exp.manifest("2025-03", keys[execution], execution.split("Z-", 1)[1], execution_folder=execution)

    cfg, source = s3_config(tmp_path, s3_bucket, exp.uri)
    connector = connector_for(source)
    assert connector.months() == ["2025-03"]
    plan = connector.plan("2025-03")
    assert sorted(o.key for o in plan.objects) == sorted(keys[new_exec])
    if with_manifests:
        assert plan.layout == "cur2" and plan.delivery_id == "9c1f0e55-0b7e-4a51-8a43-1d2f7c4be5aa"
    else:
        assert plan.layout == "cur2-versioned" and plan.delivery_id == new_exec
        assert plan.notes == ["2 executions found; loaded the newest"]

    delivery, stats, alloc = run_month(cfg, source, "2025-03")
    assert set(landed_files(delivery)) - {plan.manifest_key} == set(keys[new_exec])
    assert stats.rows == 5 and stats.quarantined_rows == 0
    assert stats.billed_cost == expected_sum(new_costs_1 + new_costs_2)
    assert lake_totals(cfg, "line_items", "aws-main", "2025-03") == (5, stats.billed_cost, stats.effective_cost)
    rows = line_items(cfg, "aws-main", "2025-03")
    assert [r["x_ProviderLineItemId"] for r in rows] == ["n1-0000", "n1-0001", "n1-0002", "n2-0000", "n2-0001"]
    assert all(new_exec in r["x_SourceFile"] for r in rows)
    assert json.loads(rows[1]["Tags"]) == {"team": "research", "project": "recsys", "aws:createdBy": "user1"}
    # The `product` map (JSON text in CSV exports) still yields the product scalars.
    assert {(r["ServiceName"], r["RegionId"], r["x_InstanceType"]) for r in rows} == {
        ("Amazon Elastic Compute Cloud", "us-east-1", "g5.xlarge")}
    assert rows[0]["ChargePeriodStart"] == datetime(2025, 3, 1, tzinfo=timezone.utc)
    assert rows[0]["BillingPeriodEnd"] == datetime(2025, 4, 1, tzinfo=timezone.utc)
    assert alloc.billed_cost == stats.billed_cost


# ============================================================================ 3. legacy CUR, two assemblies
# The current assembly is the one the top-level manifest names (delivered last), whatever the ids' order:
# the first pair has the newer id sorting first, the second the newer id sorting last.
@pytest.mark.parametrize("old_id, new_id", [
    ("0a1b2c3d-old0-4000-8000-000000000001", "0a1b2c3d-new0-4000-8000-000000000002"),
    ("00000000-aaaa-4000-8000-000000000001", "ffffffff-bbbb-4000-8000-000000000002"),
])
@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_legacy_current_assembly_only(s3_bucket, tmp_path, fmt, old_id, new_id):
    rep = LegacyReport(s3_bucket)
    build = legacy_parquet if fmt == "parquet" else legacy_csv_gz
    old = rep.deliver("2025-01", [build(make_rows("2025-01", [500.0, 600.0], tag="old"))], fmt,
                      assembly=old_id, leading_slash=fmt == "csv.gz")
    new_costs = ([12.5, 7.25, 0.125], [3.0, 0.0, 2.5])
    new = rep.deliver("2025-01", [build(make_rows("2025-01", c, tag=f"new{i}")) for i, c in enumerate(new_costs)],
                      fmt, assembly=new_id, leading_slash=fmt == "csv.gz")
    rep.deliver("2025-02", [build(make_rows("2025-02", [1.0]))], fmt)

    cfg, source = s3_config(tmp_path, s3_bucket, rep.uri)
    connector = connector_for(source)
    assert connector.months() == ["2025-01", "2025-02"]
    plan = connector.plan("2025-01")
    assert plan.layout == "legacy" and plan.delivery_id == new["assembly"]
    assert plan.manifest_key == "20250101-20250201/legacy-report-Manifest.json"
    assert [o.key for o in plan.objects] == new["keys"]
    assert plan.notes == ["ignored 1 older assemblies"]

    delivery, stats, alloc = run_month(cfg, source, "2025-01")
    files = landed_files(delivery)
    assert set(files) == set(new["keys"]) | {plan.manifest_key}
    assert not any(old["assembly"] in k for k in files)
    for k in new["keys"]:
        assert files[k] == s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=f"{rep.root}/{k}")["Body"].read()

    assert stats.rows == 6 and stats.quarantined_rows == 0
    assert stats.billed_cost == expected_sum(new_costs[0] + new_costs[1])
    rows = line_items(cfg, "aws-main", "2025-01")
    assert not any(r["x_ProviderLineItemId"].startswith("old-") for r in rows)
    assert {r["x_SourceFile"] for r in rows} == set(new["keys"])
    created_by = "aws:created_by" if fmt == "parquet" else "aws:createdBy"
    assert json.loads(rows[0]["Tags"]) == {"team": "ml-platform", "project": "llm-serving", created_by: "user0"}
    assert json.loads(rows[2]["Tags"]) == {"team": "search", "project": "fraud-detection", created_by: "user0"}
    assert (rows[0]["ServiceName"], rows[0]["RegionId"], rows[0]["x_InstanceType"]) == (
        "Amazon Elastic Compute Cloud", "us-east-1", "g5.xlarge")
    assert rows[0]["x_DeliveryId"] == new["assembly"]

    # The normalised key is what the taxonomy matches on.
    d = steps.partition_dir(cfg, steps.ALLOCATIONS, "aws-main", "2025-01")
    teams = query(f"SELECT x_Team, x_TeamReason, sum(BilledCost) AS cost FROM read_parquet('{d}/*.parquet') "
                  "WHERE x_Team = 'ml-platform' GROUP BY ALL")
    assert teams == [{"x_Team": "ml-platform", "x_TeamReason": "tag:team", "cost": expected_sum([12.5, 3.0])}]
    assert alloc.billed_cost == stats.billed_cost


# ============================================================================ 4. re-delivery + idempotence
def test_redelivered_month_replaces_previous_and_reruns_are_identical(s3_bucket, tmp_path):
    rep = LegacyReport(s3_bucket)
    first_costs = [10.0, 20.0, 30.0]
    first = rep.deliver("2025-06", [legacy_csv_gz(make_rows("2025-06", first_costs, tag="d1"))])
    cfg, source = s3_config(tmp_path, s3_bucket, rep.uri)
    month_dir = cfg.raw / "aws-main" / "2025-06"

    d1, s1, a1 = run_month(cfg, source, "2025-06")
    assert d1.delivery_id == first["assembly"]
    assert s1.billed_cost == a1.billed_cost == expected_sum(first_costs)

    # AWS re-delivers the whole month-to-date with a new assembly and different numbers.
    second_costs = ([11.11, 19.99, 30.0, 0.01], [5.5, 1.234567891234])
    second = rep.deliver("2025-06", [legacy_csv_gz(make_rows("2025-06", c, tag=f"d2{i}"))
                                     for i, c in enumerate(second_costs)])
    want = expected_sum(second_costs[0] + second_costs[1])
    totals = []
    tables = []
    for run in range(3):
        delivery, stats, alloc = run_month(cfg, source, "2025-06")
        assert delivery.delivery_id == second["assembly"]
        assert delivery.reused is (run > 0)
        li = lake_totals(cfg, "line_items", "aws-main", "2025-06")
        al = lake_totals(cfg, "allocations", "aws-main", "2025-06")
        assert li == (6, want, want)
        assert (al[1], al[2]) == (li[1], li[2])  # exact Decimal equality, no tolerance
        assert (stats.billed_cost, alloc.billed_cost, alloc.effective_cost) == (want, want, want)
        totals.append((stats.rows, stats.billed_cost, stats.effective_cost, alloc.pieces, alloc.billed_cost))
        tables.append(line_items(cfg, "aws-main", "2025-06"))
    assert totals[0] == totals[1] == totals[2]
    assert tables[0] == tables[1] == tables[2]  # same rows, same lineage, same ingest time

    # The older delivery is recorded but no longer on disk; CURRENT names the new one.
    log = [json.loads(line) for line in (month_dir / "deliveries.jsonl").read_text().splitlines()]
    assert [d["delivery_id"] for d in log] == [first["assembly"], second["assembly"]]
    assert sorted(p.name for p in month_dir.iterdir() if p.is_dir()) == [safe_dirname(second["assembly"])]
    assert (month_dir / "CURRENT").read_text().strip() == safe_dirname(second["assembly"])

    counts = steps.build_warehouse(cfg)
    assert counts["line_items"] == 6 and counts["deliveries"] == 2
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        assert con.execute("SELECT sum(BilledCost) FROM line_items WHERE x_BillingMonth = '2025-06'").fetchone()[0] == want
        assert con.execute("SELECT sum(BilledCost) FROM allocations WHERE x_BillingMonth = '2025-06'").fetchone()[0] == want
        assert con.execute("SELECT delivery_id, is_current FROM deliveries ORDER BY fetched_at, is_current").fetchall() == [
            (first["assembly"], False), (second["assembly"], True)]
    finally:
        con.close()
    out = steps.export_month(cfg, "2025-06")
    with open(out / "control_totals.csv", newline="") as f:
        control = list(csv.DictReader(f))
    assert len(control) == 1
    assert Decimal(control[0]["line_items_billed_cost"]) == want == Decimal(control[0]["allocated_billed_cost"])
    assert control[0]["ties_out"] == "true" and control[0]["quarantined_rows"] == "0"


# ============================================================================ 5. bad input
def test_legacy_manifest_names_missing_object_keeps_previous_build(s3_bucket, tmp_path):
    rep = LegacyReport(s3_bucket)
    rep.deliver("2025-07", [legacy_csv_gz(make_rows("2025-07", [1.0, 2.0]))])
    cfg, source = s3_config(tmp_path, s3_bucket, rep.uri)
    good, stats, _ = run_month(cfg, source, "2025-07")
    li_file = steps.partition_dir(cfg, steps.LINE_ITEMS, "aws-main", "2025-07") / "data.parquet"
    before = li_file.read_bytes()

    missing = f"{rep.root}/{rep.period('2025-07')}/feedface-0000/legacy-report-2.csv.gz"
    broken = rep.deliver("2025-07", [legacy_csv_gz(make_rows("2025-07", [99.0]))], assembly="feedface-0000",
                         extra_keys=[missing])
    with pytest.raises(SourceError) as err:
        steps.land(cfg, source, "2025-07")
    rel_missing = f"{rep.period('2025-07')}/feedface-0000/legacy-report-2.csv.gz"
    assert err.value.file == rel_missing
    assert rel_missing in str(err.value) and broken["manifest_key"] in str(err.value)

    month_dir = cfg.raw / "aws-main" / "2025-07"
    assert li_file.read_bytes() == before
    assert lake_totals(cfg, "line_items", "aws-main", "2025-07") == (2, Decimal("3.000000000000"), Decimal("3.000000000000"))
    assert (month_dir / "CURRENT").read_text().strip() == safe_dirname(good.delivery_id)
    assert steps.current_delivery(cfg, source, "2025-07").delivery_id == good.delivery_id
    assert [p.name for p in month_dir.iterdir() if p.is_dir()] == [safe_dirname(good.delivery_id)]
    assert len((month_dir / "deliveries.jsonl").read_text().splitlines()) == 1


def test_cur2_manifest_names_missing_object(s3_bucket, tmp_path):
    exp = Cur2Export(s3_bucket)
    present = exp.data_key("2025-08", 1)
    exp.put(present, cur2_parquet(make_rows("2025-08", [1.0])))
    exp.manifest("2025-08", [present], "exec-good")
    cfg, source = s3_config(tmp_path, s3_bucket, exp.uri)
    run_month(cfg, source, "2025-08")

    absent = exp.data_key("2025-08", 2)
    exp.manifest("2025-08", [present, absent], "exec-bad")
    with pytest.raises(SourceError) as err:
        steps.land(cfg, source, "2025-08")
    assert err.value.file == absent and absent in str(err.value)
    assert lake_totals(cfg, "line_items", "aws-main", "2025-08") == (1, Decimal("1.000000000000"), Decimal("1.000000000000"))
    assert steps.current_delivery(cfg, source, "2025-08").delivery_id == "exec-good"


def test_object_vanishing_during_download(s3_bucket, tmp_path, monkeypatch):
    """Listed when planned, gone when fetched: SourceError naming it, no half-landed delivery."""
    rep = LegacyReport(s3_bucket)
    d = rep.deliver("2025-09", [legacy_csv_gz(make_rows("2025-09", [1.0])), legacy_csv_gz(make_rows("2025-09", [2.0]))])
    cfg, source = s3_config(tmp_path, s3_bucket, rep.uri)
    original = AwsCurConnector.plan

    def plan_then_delete(self, month):
        plan = original(self, month)
        s3_bucket.delete(f"{rep.root}/{d['keys'][1]}")
        return plan

    monkeypatch.setattr(AwsCurConnector, "plan", plan_then_delete)
    with pytest.raises(SourceError) as err:
        steps.land(cfg, source, "2025-09")
    assert err.value.file == d["keys"][1] and d["keys"][1] in str(err.value)
    month_dir = cfg.raw / "aws-main" / "2025-09"
    assert not (month_dir / "CURRENT").exists()
    assert not [p for p in month_dir.iterdir() if p.is_dir()]


def _corrupt(kind: str, rows: list[dict]) -> bytes:
    if kind == "not-gzip":
        return b"\x1f\x8bnot really gzip at all"
    if kind == "truncated-parquet":
        body = legacy_parquet(rows)
        return body[: len(body) // 2]  # footer gone
    if kind == "garbled-parquet":
        # the footer (schema, row counts) intact, the pages garbled: the file describes fine and fails only when
        # its rows are read with the others', so the failed build must find which file it was
        body = legacy_parquet(rows)
        footer = int.from_bytes(body[-8:-4], "little")
        pages = len(body) - 8 - footer - 4
        return body[:4] + b"\xff" * pages + body[4 + pages:]
    # A partial upload of a gzip CSV. "early": the cut is inside what the CSV sniffer reads; "late": the
    # sniffer reads a good start and the cut shows only when the whole file is staged.
    text = gzip.decompress(legacy_csv_gz(rows)).decode()
    header, body = text.split("\n", 1)
    repeat = 4 if kind == "truncated-early" else 60_000  # ~60 MB: past the sniffer's buffer
    data = gzip.compress((header + "\n" + body * repeat).encode(), compresslevel=1, mtime=0)
    return data[: int(len(data) * 0.9)]


@pytest.mark.parametrize("corruption", ["not-gzip", "truncated-early", "truncated-late", "truncated-parquet",
                                        "garbled-parquet"])
def test_corrupt_file_is_named_and_quarantined(s3_bucket, tmp_path, monkeypatch, corruption):
    fmt = "parquet" if corruption.endswith("parquet") else "csv.gz"
    build = legacy_parquet if fmt == "parquet" else legacy_csv_gz
    rep = LegacyReport(s3_bucket)
    rep.deliver("2025-10", [build(make_rows("2025-10", [4.0, 6.0]))], fmt)
    cfg, source = s3_config(tmp_path, s3_bucket, rep.uri)
    run_month(cfg, source, "2025-10")
    before = lake_totals(cfg, "line_items", "aws-main", "2025-10")
    assert before == (2, Decimal("10.000000000000"), Decimal("10.000000000000"))

    rows = make_rows("2025-10", [1.0, 2.0, 3.0], tag="c")
    bad_bytes = _corrupt(corruption, rows)
    second = rep.deliver("2025-10", [build(rows), bad_bytes], fmt)
    bad_key = second["keys"][1]
    delivery = steps.land(cfg, source, "2025-10")  # bytes are bytes: landing succeeds
    assert landed_files(delivery)[bad_key] == bad_bytes

    located = []
    original = line_items_step._locate_bad_file
    monkeypatch.setattr(line_items_step, "_locate_bad_file", lambda *a: located.append(1) or original(*a))
    # another process (a second run, a test worker) holding a lock on /dev/null must not change the answer:
    # locating once wrote each file to /dev/null, and DuckDB's lock on it made a good file look unreadable
    locker = subprocess.Popen([sys.executable, "-c", "import fcntl, time; f = open('/dev/null', 'w'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        with pytest.raises(SourceError) as err:
            steps.build_line_items(cfg, source, delivery)
    finally:
        locker.kill()
        locker.wait()
    assert located == ([1] if corruption == "garbled-parquet" else [])
    assert err.value.file == bad_key
    assert str(err.value).startswith(f"cannot read {bad_key}: ")
    # The previous build of the month is untouched and no temporary partition is left behind.
    assert lake_totals(cfg, "line_items", "aws-main", "2025-10") == before
    for table in (steps.LINE_ITEMS, steps.QUARANTINE):
        assert not list(steps.partition_dir(cfg, table, "aws-main", "2025-10").parent.glob("*.tmp-*"))

    record_path = steps.quarantine_file(cfg, source, "2025-10", err.value)
    record = json.loads(record_path.read_text())
    assert record["file"] == bad_key and record["month"] == "2025-10" and record["source"] == "aws-main"
    assert record["reason"] == str(err.value)
    assert Path(record["copy"]).read_bytes() == bad_bytes
    assert record_path.parent == cfg.lake / "quarantine" / "files" / "aws-main" / "2025-10"
    # The delivery that failed to build is LANDED but not CURRENT; the last good delivery's raw files stay.
    month_dir = cfg.raw / "aws-main" / "2025-10"
    current = steps.current_delivery(cfg, source, "2025-10", pointer="CURRENT")
    assert current.delivery_id != delivery.delivery_id
    assert all(path.exists() for _, path in current.files)
    assert (month_dir / "LANDED").read_text().strip() == Path(delivery.local_dir).name


def test_bad_rows_are_quarantined_with_file_row_and_reason(s3_bucket, tmp_path):
    exp = Cur2Export(s3_bucket)
    costs = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]
    rows = make_rows("2025-11", costs)
    rows[2]["cost"] = "12,5O"  # row 3: not a number
    rows[4]["currency"] = "XXQ"  # row 5: not an ISO 4217 code
    key = exp.data_key("2025-11", 1, "csv.gz")
    exp.put(key, cur2_csv_gz(rows))
    exp.manifest("2025-11", [key], "exec-bad-rows")
    cfg, source = s3_config(tmp_path, s3_bucket, exp.uri)

    delivery, stats, alloc = run_month(cfg, source, "2025-11")
    good = expected_sum([1.5, 2.5, 4.5, 6.5])
    assert (stats.rows, stats.quarantined_rows) == (4, 2)
    assert stats.billed_cost == good == alloc.billed_cost
    assert stats.quarantined_billed_cost == Decimal("5.500000000000")  # the unparseable cost is never a zero
    assert stats.quarantine_reasons == {"non-numeric line_item_unblended_cost": 1, "unknown currency": 1}

    qfile = steps.partition_dir(cfg, steps.QUARANTINE, "aws-main", "2025-11") / "rows.parquet"
    got = query(f"SELECT * FROM read_parquet('{qfile}') ORDER BY x_SourceRow")
    assert [(r["x_SourceFile"], r["x_SourceRow"], r["reason"]) for r in got] == [
        (key, 3, "non-numeric line_item_unblended_cost 12,5O"),
        (key, 5, "unknown currency XXQ"),
    ]
    assert all(r["x_DeliveryId"] == "exec-bad-rows" and r["x_BillingMonth"] == "2025-11" for r in got)
    ids = [r["x_ProviderLineItemId"] for r in line_items(cfg, "aws-main", "2025-11", "x_ProviderLineItemId, x_LineId")]
    assert ids == ["li-0000", "li-0001", "li-0003", "li-0005"]

    counts = steps.build_warehouse(cfg)
    assert counts["quarantined_rows"] == 2 and counts["line_items"] == 4


# ============================================================================ 6. legacy CUR CSVs from a local folder
# Our hand-written fixtures (tests/fixtures/aws_cur/NOTES.md names each file's quirks); every expected
# number below is worked out by hand from the rows of the file, not read back from the pipeline.
SP_ARN = "arn:aws:savingsplans::041572193860:savingsplan/6c0e2d7b-38f4-4e0a-9a51-b1d2f3e4a5c6"
OURS = {
    # file: (period folder, month, raw rows, line items, BilledCost, EffectiveCost, currency, invoice ids)
    "legacy-slash-names.csv": ("20240901-20241001", "2024-09", 8, 8, "2.457188671371", "2.457188671371", "USD", {None}),
    "legacy-final.csv": ("20241101-20241201", "2024-11", 10, 13, "18.75", "18.75", "NOK", {"EUINNO24-3081442"}),
    "legacy-not-final.csv": ("20241101-20241201", "2024-11", 10, 13, "18.75", "18.75", "NOK", {None}),
    "legacy-athena-snake-case.csv": ("20241001-20241101", "2024-10", 6, 6, "6.8025", "6.8025", "USD",
                                     {"2024110518", "2024110519"}),
}


def _local_report(tmp_path: Path, name: str, period: str, filename: str, body: bytes):
    root = tmp_path / "exports" / name
    (root / period).mkdir(parents=True)
    (root / period / filename).write_bytes(body)
    return make_config(tmp_path, f"exports/{name}", name=name)


def d(value: str) -> Decimal:
    return Decimal(value).quantize(Q)


def _build_fixture(tmp_path: Path, filename: str, name: str = "ours") -> tuple:
    """Build one of our fixtures as a legacy report with no manifest; checks what holds for every file."""
    period, month, n_raw, n_items, billed, effective, currency, invoices = OURS[filename]
    raw = (FIXTURES / filename).read_bytes()
    cfg, source = _local_report(tmp_path, name, period, filename, raw)
    assert connector_for(source).months() == [month]

    delivery, stats, alloc = run_month(cfg, source, month)
    assert delivery.layout == "legacy-overwrite"
    assert landed_files(delivery) == {f"{period}/{filename}": raw}
    assert (stats.rows, stats.quarantined_rows) == (n_items, 0)
    assert (stats.billed_cost, stats.effective_cost) == (d(billed), d(effective))
    assert (alloc.billed_cost, alloc.effective_cost) == (stats.billed_cost, stats.effective_cost)

    rows = line_items(cfg, name, month)
    assert {r["BillingCurrency"] for r in rows} == {currency}
    assert {r["InvoiceId"] for r in rows} == invoices
    y, m = int(month[:4]), int(month[5:])
    assert all(r["BillingPeriodStart"] == datetime(y, m, 1, tzinfo=timezone.utc) for r in rows)
    assert all(r["BillingPeriodEnd"] == datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc) for r in rows)
    # Every raw row is one line item, in file order (a commitment fee's unused part follows as a second one).
    assert [r["x_SourceRow"] for r in rows[:n_raw]] == list(range(1, n_raw + 1))
    assert all(r["ServiceSubcategory"] in SERVICE_SUBCATEGORIES[r["ServiceCategory"]] for r in rows)
    return cfg, month, rows


def test_legacy_slash_names(tmp_path):
    """`category/Name` headers, ragged rows, no tag columns, space-separated dates, >12-decimal costs."""
    _, _, rows = _build_fixture(tmp_path, "legacy-slash-names.csv")
    # Each cost rounded to 12 decimals by hand (none sits on a half): e.g. 0.00007763080453383521 -> ...805.
    assert [r["BilledCost"] for r in rows] == [d(v) for v in (
        "0.000294521872", "0.000077630805", "0", "0.002519370458", "0.002519370458", "1.212", "1.212",
        "0.027777777778")]
    assert [r["EffectiveCost"] for r in rows] == [r["BilledCost"] for r in rows]  # on-demand usage only
    assert [r["ListCost"] for r in rows] == [r["BilledCost"] for r in rows]  # publicOnDemandCost = cost
    # Data transfer billed under the EC2 product code is EC2 (product code first, servicecode second).
    assert {(r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"], r["x_ServiceCode"]) for r in rows} == {
        ("Amazon Elastic Compute Cloud", "Compute", "Virtual Machines", "AmazonEC2")}
    assert {r["x_UnmappedService"] for r in rows} == {None}
    assert all(r["Tags"] is None for r in rows)  # the file has no resourceTags/ columns
    assert all(r["x_CostCategories"] is None for r in rows)  # costCategory/CostCenter: header only, no values
    assert {r["RegionId"] for r in rows} == {None}  # only product/location, no product/region
    east, west = "US East (N. Virginia)", "US West (Oregon)"
    assert [r["RegionName"] for r in rows] == [east, west, west, east, east, west, west, west]
    assert [r["PricingUnit"] for r in rows] == ["GB"] * 5 + ["Hours"] * 2 + ["GB-Months"]
    assert rows[7]["ConsumedQuantity"] == d("0.347222222222")  # 250 GB for 1 of 720 hours
    assert [r["x_InstanceType"] for r in rows] == [None] * 5 + ["g5.2xlarge"] * 2 + [None]
    # `2024-09-14 03:00:00` (no zone) is UTC, like the ISO bill dates
    assert (rows[0]["ChargePeriodStart"], rows[0]["ChargePeriodEnd"]) == (
        datetime(2024, 9, 14, 3, tzinfo=timezone.utc), datetime(2024, 9, 14, 4, tzinfo=timezone.utc))
    assert {(r["BillingAccountId"], r["SubAccountId"], r["PublisherName"]) for r in rows} == {
        ("306417829055", "306417829055", "AWS")}


@pytest.mark.parametrize("filename", ["legacy-final.csv", "legacy-not-final.csv"])
def test_legacy_savings_plan_month_in_nok(tmp_path, filename):
    """Covered usage, its negation, the hourly commitment fee and VAT, billed in NOK."""
    _, _, rows = _build_fixture(tmp_path, filename)
    covered, negation, fee, tax = ([r for r in rows[:10] if r["x_LineItemType"] == t] for t in (
        "SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee", "Tax"))
    assert [r["x_LineItemType"] for r in rows[:10]] == [
        "SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee"] * 3 + ["Tax"]
    # Covered usage: billed at on-demand, effective at the Savings Plan rate.
    for r in covered:
        assert (r["BilledCost"], r["EffectiveCost"], r["ListCost"], r["ConsumedQuantity"]) == (
            d("11.25"), d("4.05"), d("11.25"), d("1"))
        assert (r["ChargeCategory"], r["PricingCategory"], r["CommitmentDiscountStatus"]) == (
            "Usage", "Committed", "Used")
        assert (r["CommitmentDiscountId"], r["CommitmentDiscountType"]) == (SP_ARN, "Savings Plan")
    # The negation cancels the on-demand charge and counts no usage a second time.
    for r in negation:
        assert (r["BilledCost"], r["EffectiveCost"], r["ListCost"], r["ConsumedQuantity"]) == (d("-11.25"), 0, 0, None)
        assert (r["ChargeCategory"], r["PricingCategory"]) == ("Usage", "Committed")
    # The fee is a purchase at effective 0; its unused part (5.00 - 4.05) is a Usage line item of its own.
    for r in fee:
        assert (r["ChargeCategory"], r["BilledCost"], r["EffectiveCost"], r["x_HasResource"]) == (
            "Purchase", d("5.00"), 0, False)
        assert (r["ServiceName"], r["ServiceCategory"]) == ("Savings Plans for AWS Compute usage", "Compute")
    unused = rows[10:]
    assert [r["x_SourceRow"] for r in unused] == [3, 6, 9]
    assert all((r["ChargeCategory"], r["BilledCost"], r["EffectiveCost"], r["CommitmentDiscountStatus"]) == (
        "Usage", 0, d("0.95"), "Unused") for r in unused)
    assert [(r["ChargeCategory"], r["BilledCost"], r["EffectiveCost"], r["Tags"]) for r in tax] == [
        ("Tax", d("3.75"), d("3.75"), None)]
    assert sum(r["ConsumedQuantity"] or 0 for r in rows) == 3  # three instance hours, not six
    # Tags from resourceTags/*; the noTags/* columns (owner, stage, ...) are not tags and never appear.
    want = {"team": "ml-platform", "project": "retrieval", "aws:createdBy": "IAMUser:AIDA4EXAMPLE7QZ2KX3:ingrid"}
    assert all(json.loads(r["Tags"]) == want for r in covered + negation)
    assert all(r["Tags"] is None for r in fee + unused + tax)  # empty strings, not tags
    # costCategory/* with spaces in the names; the two empty ones are dropped.
    assert all(json.loads(r["x_CostCategories"]) == {"Business Unit": "ml-research", "Environment": "production"}
               for r in rows)
    # An account id with a leading zero stays a string.
    assert {(r["BillingAccountId"], r["SubAccountId"]) for r in rows} == {("041572193860", "041572193860")}
    assert {(r["x_InvoicingEntity"], r["PublisherName"]) for r in rows} == {("Amazon Web Services EMEA SARL", "AWS")}
    assert {(r["RegionId"], r["x_InstanceType"]) for r in covered + negation} == {("eu-north-1", "g5.xlarge")}


LINEAGE = ("x_SourceName", "x_DeliveryId", "x_IngestedAt", "x_SourceFile", "InvoiceId")


def test_legacy_final_differs_from_not_final_only_in_invoice_id(tmp_path):
    """A month AWS has invoiced differs from its last open delivery exactly in bill/InvoiceId."""
    texts = {f: list(csv.reader(io.StringIO((FIXTURES / f).read_text(encoding="utf-8"))))
             for f in ("legacy-final.csv", "legacy-not-final.csv")}
    final, open_ = texts["legacy-final.csv"], texts["legacy-not-final.csv"]
    col = final[0].index("bill/InvoiceId")
    assert final[0] == open_[0] and len(final) == len(open_)
    for a, b in zip(final[1:], open_[1:]):
        assert (a[col], b[col]) == ("EUINNO24-3081442", "")
        assert a[:col] + a[col + 1:] == b[:col] + b[col + 1:]
    _, _, built_final = _build_fixture(tmp_path / "a", "legacy-final.csv")
    _, _, built_open = _build_fixture(tmp_path / "b", "legacy-not-final.csv")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in LINEAGE} for r in rows]  # noqa: E731
    assert strip(built_final) == strip(built_open)


def test_legacy_athena_snake_case(tmp_path):
    """Athena-style names, flattened tag columns, Marketplace software and a Bedrock model via Marketplace."""
    cfg, month, rows = _build_fixture(tmp_path, "legacy-athena-snake-case.csv")
    assert [r["BilledCost"] for r in rows] == [d(v) for v in ("0.35", "0.35", "2.4", "1.9", "1.515", "0.2875")]
    software, model, aws = rows[:2], rows[2:4], rows[4:]
    assert [r["x_BillingEntity"] for r in rows] == ["AWS Marketplace"] * 4 + ["AWS"] * 2
    assert [r["InvoiceId"] for r in rows] == ["2024110519"] * 4 + ["2024110518"] * 2
    # Marketplace software under an opaque code: not in our table, kept under its own name.
    assert {(r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"], r["x_UnmappedService"],
             r["PublisherName"]) for r in software} == {
        ("Nordlys\u00ae GPU Inference Server", "Other", "Other (Other)", "Nordlys\u00ae GPU Inference Server",
         "Nordlys Software, Inc.")}
    # A third-party model on Bedrock is Generative AI by the Bedrock rule, published by its seller.
    assert {(r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"], r["x_UnmappedService"],
             r["PublisherName"]) for r in model} == {
        ("Claude Haiku 4.5 (Amazon Bedrock Edition)", "AI and Machine Learning", "Generative AI", None,
         "Anthropic, PBC")}
    assert [r["ConsumedQuantity"] for r in model] == [d("2400000"), d("380000")]
    assert [(r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"], r["x_UnmappedService"],
             r["PublisherName"]) for r in aws] == [
        ("Amazon SageMaker", "AI and Machine Learning", "Machine Learning", None, "AWS"),
        ("Amazon Simple Storage Service", "Storage", "Object Storage", None, "AWS")]
    # resource_tags_user_* -> bare keys (an underscore inside a key survives), resource_tags_aws_created_by ->
    # aws:created_by; empty strings are no tags.
    assert [json.loads(r["Tags"]) if r["Tags"] else None for r in rows] == [
        {"aws:created_by": "IAMUser:AIDA2EXAMPLE5RT8MW1:arne", "team": "search"},
        {"aws:created_by": "IAMUser:AIDA2EXAMPLE5RT8MW1:arne", "cost_center": "cc-4410", "team": "search"},
        {"cost_center": "cc-2210", "team": "ml-platform"},
        {"cost_center": "cc-2210", "team": "ml-platform"},
        {"cost_center": "cc-2210", "team": "ml-platform"},
        None,
    ]
    assert [json.loads(r["x_CostCategories"]) if r["x_CostCategories"] else None for r in rows] == [None] * 4 + [
        {"business_unit": "ml-research"}] * 2
    assert [r["SubAccountId"] for r in rows] == ["518204936071"] * 2 + ["729301845562"] * 4
    assert {r["BillingAccountId"] for r in rows} == {"729301845562"}
    assert rows[0]["ChargePeriodStart"] == datetime(2024, 10, 8, 9, tzinfo=timezone.utc)  # `2024-10-08 09:00:00.000`
    # The normalised keys are what the taxonomy matches on.
    d_alloc = steps.partition_dir(cfg, steps.ALLOCATIONS, "ours", month)
    teams = query(f"SELECT x_Team, x_TeamReason, sum(BilledCost) AS cost FROM read_parquet('{d_alloc}/*.parquet') "
                  "GROUP BY ALL ORDER BY x_Team")
    assert [(t["x_Team"], t["x_TeamReason"], t["cost"]) for t in teams if t["x_TeamReason"] == "tag:team"] == [
        ("ml-platform", "tag:team", d("5.815")), ("search", "tag:team", d("0.70"))]


# ---- the real legacy CUR samples (project-koku), read in place from ../shared/data; skipped when absent
KOKU = {
    # file: (period folder, month, rows, BilledCost, EffectiveCost, currency, line item type, invoice id)
    "test_cur.csv": ("20180601-20180701", "2018-06", 19, "0.082749984125", "0.082749984125", "USD", "Usage", None),
    "2023-06-01.csv": ("20230601-20230701", "2023-06", 3, "30", "0.3", "NOK", "SavingsPlanCoveredUsage", "987654321"),
    "2023-06-01-not-final.csv": ("20230601-20230701", "2023-06", 3, "30", "0.3", "NOK", "SavingsPlanCoveredUsage", None),
    "2022-07-01-alt-columns.csv": ("20220701-20220801", "2022-07", 2, "0", "0", "USD", "Usage", "1"),
}


@pytest.mark.parametrize("filename", list(KOKU))
def test_real_koku_legacy_samples_build(tmp_path, filename):
    path = shared_sample(f"aws/{filename}")
    period, month, n, billed, effective, currency, lit, invoice = KOKU[filename]
    raw = path.read_bytes()
    cfg, source = _local_report(tmp_path, "koku", period, filename, raw)
    connector = connector_for(source)
    assert connector.months() == [month]

    delivery, stats, alloc = run_month(cfg, source, month)
    assert delivery.layout == "legacy-overwrite"
    assert landed_files(delivery) == {f"{period}/{filename}": raw}
    assert (stats.rows, stats.quarantined_rows) == (n, 0)
    assert (stats.billed_cost, stats.effective_cost) == (Decimal(billed).quantize(Q), Decimal(effective).quantize(Q))
    assert (alloc.billed_cost, alloc.effective_cost) == (stats.billed_cost, stats.effective_cost)

    rows = line_items(cfg, "koku", month)
    assert {r["BillingCurrency"] for r in rows} == {currency}
    assert {r["x_LineItemType"] for r in rows} == {lit}
    assert {r["InvoiceId"] for r in rows} == {invoice}
    assert all(r["BillingPeriodStart"] == datetime(int(month[:4]), int(month[5:]), 1, tzinfo=timezone.utc) for r in rows)
    assert [r["x_SourceRow"] for r in rows] == list(range(1, n + 1))
    assert all(r["ServiceSubcategory"] in SERVICE_SUBCATEGORIES[r["ServiceCategory"]] for r in rows)
    if filename.startswith("2023-06-01"):
        # Savings-plan-covered usage: billed at on-demand, effective = savingsPlan/SavingsPlanEffectiveCost.
        assert all(r["BilledCost"] == Decimal("10").quantize(Q) and r["EffectiveCost"] == Decimal("0.1").quantize(Q)
                   for r in rows)
        assert {(r["ChargeCategory"], r["PricingCategory"], r["CommitmentDiscountStatus"]) for r in rows} == {
            ("Usage", "Committed", "Used")}
        # costCategory/* columns (one with a space in its name) become x_CostCategories; empty ones are dropped.
        assert {r["x_CostCategories"] for r in rows} == {'{"cost_env":"prod","name":"compute","qe_source":"aws-single"}'}
        assert all(r["Tags"] is None for r in rows)  # only noTags/* columns: not tags
    if filename == "test_cur.csv":
        assert {(r["ServiceName"], r["ServiceCategory"]) for r in rows} == {("Amazon Elastic Compute Cloud", "Compute")}
        assert all(r["Tags"] is None for r in rows)  # the sample has no resourceTags/ columns
    if filename == "2022-07-01-alt-columns.csv":
        assert {r["Tags"] for r in rows} == {'{"aws:created_by":"IAMUser:fake:and"}'}
        assert {r["x_BillingEntity"] for r in rows} == {"AWS Marketplace"}
        assert {r["PublisherName"] for r in rows} == {"Red Hat, Inc."}
        # a Marketplace listing is not in our service table: visible fallback, never dropped
        assert {(r["ServiceCategory"], r["ServiceName"], r["x_UnmappedService"]) for r in rows} == {
            ("Other", "Red Hat\u00ae Enterprise Linux\u00ae", "Red Hat\u00ae Enterprise Linux\u00ae")}


def test_real_koku_alt_columns_user_tags_normalised(tmp_path):
    """Athena-style `resource_tags_user_*` columns (empty in the real sample) become bare tag keys."""
    text = shared_sample("aws/2022-07-01-alt-columns.csv").read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text)))
    header = table[0]
    table[1][header.index("resource_tags_user_insights_project")] = "fraud-detection"
    table[1][header.index("resource_tags_user_c25_key")] = "c25"
    table[2][header.index("resource_tags_user_insights_project")] = "recsys"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    body = gzip.compress(out.getvalue().encode(), mtime=0)
    cfg, source = _local_report(tmp_path, "koku-alt", "20220701-20220801", "alt.csv.gz", body)

    _, stats, _ = run_month(cfg, source, "2022-07")
    assert (stats.rows, stats.quarantined_rows) == (2, 0)
    tags = [json.loads(r["Tags"]) for r in line_items(cfg, "koku-alt", "2022-07", "Tags, x_LineId")]
    assert tags == [
        {"aws:created_by": "IAMUser:fake:and", "c25_key": "c25", "insights_project": "fraud-detection"},
        {"aws:created_by": "IAMUser:fake:and", "insights_project": "recsys"},
    ]


def test_legacy_snake_case_gzipped(tmp_path):
    """Our Athena-style fixture gzipped (`.csv.gz`) builds to the same totals and tags as the plain CSV."""
    body = gzip.compress((FIXTURES / "legacy-athena-snake-case.csv").read_bytes(), mtime=0)
    cfg, source = _local_report(tmp_path, "ours-gz", "20241001-20241101", "report-1.csv.gz", body)
    _, stats, _ = run_month(cfg, source, "2024-10")
    assert (stats.rows, stats.quarantined_rows, stats.billed_cost) == (6, 0, d("6.8025"))
    tags = [r["Tags"] for r in line_items(cfg, "ours-gz", "2024-10", "Tags, x_LineId")]
    assert json.loads(tags[1]) == {"aws:created_by": "IAMUser:AIDA2EXAMPLE5RT8MW1:arne", "cost_center": "cc-4410",
                                   "team": "search"}
    assert tags[5] is None


# ============================================================================ 7. service reference table
SERVICES = REPO / "models" / "reference" / "aws_cur" / "services.csv"
# AI-relevant AWS services a real bill needs mapped (product codes as CUR writes them).
AI_RELEVANT = (
    "AmazonEC2", "AmazonSageMaker", "AmazonBedrock", "AmazonEKS", "AmazonECS", "AmazonECR", "AWSLambda", "AmazonS3",
    "AmazonEBS", "AmazonEFS", "AmazonFSx", "AmazonCloudWatch", "AWSDataTransfer", "AmazonVPC", "AWSELB",
    "AWSDeveloperSupport", "AWSSupportBusiness", "AWSSupportEnterprise", "comprehend", "AmazonRekognition",
    "AmazonTextract", "transcribe", "translate", "AmazonPolly", "AmazonKendra", "AmazonQ", "AmazonLex",
    "AmazonES", "AmazonDynamoDB", "AmazonRDS", "AmazonRedshift", "ComputeSavingsPlans", "MachineLearningSavingsPlans",
)


def _service_rows() -> list[dict]:
    with open(SERVICES, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["product_code", "service_name", "service_category", "service_subcategory"]
        return list(reader)


def test_service_table_is_focus_values_one_row_per_code():
    rows = _service_rows()
    assert 50 <= len(rows) <= 200
    codes = [r["product_code"] for r in rows]
    assert len(codes) == len(set(codes)), [c for c in codes if codes.count(c) > 1]
    for r in rows:
        assert all(v and v == v.strip() for v in r.values()), r
        assert not any(ch in r["product_code"] for ch in "*?%"), r  # exact codes, no patterns
        assert r["service_category"] in SERVICE_SUBCATEGORIES, r
        assert r["service_subcategory"] in SERVICE_SUBCATEGORIES[r["service_category"]], r
    assert set(AI_RELEVANT) <= set(codes), sorted(set(AI_RELEVANT) - set(codes))


def test_service_table_covers_fixtures_and_demo(tmp_path):
    """Every AWS-billed product code in our fixtures and in the demo CUR has a row.

    Marketplace listings (bill/BillingEntity = AWS Marketplace) carry opaque listing ids: they are
    mapped by the Bedrock rule or take the visible fallback, never a table row."""
    codes = {r["product_code"] for r in _service_rows()}
    names = {"entity": ("bill/BillingEntity", "bill_billing_entity"),
             "code": ("lineItem/ProductCode", "line_item_product_code"),
             "servicecode": ("product/servicecode", "product_servicecode")}
    seen = set()
    for path in FIXTURES.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for rec in csv.DictReader(f):
                get = {k: next(rec[n] for n in spellings if n in rec) for k, spellings in names.items()}
                if get["entity"] == "AWS":
                    seen |= {get["code"], get["servicecode"] or get["code"]}
    assert seen >= {"AmazonEC2", "AWSDataTransfer", "ComputeSavingsPlans", "AmazonSageMaker", "AmazonS3"}
    assert seen <= codes, sorted(seen - codes)

    from apportion.demo.generators import aws_cur as demo

    files = demo.generate_cur2(tmp_path / "demo", ["2026-09"])
    demo_codes = query("SELECT DISTINCT bill_billing_entity AS e, line_item_product_code AS c "
                       f"FROM read_parquet({[str(p) for p in files]})")
    aws_codes = {r["c"] for r in demo_codes if r["e"] == "AWS"}
    assert aws_codes >= {"AmazonEC2", "AmazonSageMaker", "AmazonBedrock", "AmazonS3", "AWSDataTransfer",
                         "AmazonCloudWatch", "AmazonEKS", "AWSSupportBusiness", "ComputeSavingsPlans"}
    assert aws_codes <= codes, sorted(aws_codes - codes)
    assert {r["c"] for r in demo_codes if r["e"] == "AWS Marketplace"} == {demo.CLAUDE_PRODUCT_CODE}


def test_unknown_service_keeps_a_visible_fallback(tmp_path):
    """A product code our table does not know is kept: ServiceCategory Other, the provider's own name."""
    rows = make_rows("2025-12", [1.25, 2.5, 4.0, 8.0])
    rows[0].update(product_code="AmazonHyperWidget", product_name="Amazon Hyper Widget")
    rows[1].update(product_code="AWSNewThing", product_name="")  # no product name: the code is the name
    rows[3].update(product_code="prod-zz9plural9z", product_name="Acme Vector Store (Amazon Bedrock Edition)")
    root = tmp_path / "exports" / "cur2" / "data" / "BILLING_PERIOD=2025-12"
    root.mkdir(parents=True)
    (root / "cur2-00001.snappy.parquet").write_bytes(cur2_parquet(rows))
    cfg, source = make_config(tmp_path, "exports/cur2")

    _, stats, alloc = run_month(cfg, source, "2025-12")
    assert (stats.rows, stats.quarantined_rows) == (4, 0)  # never dropped
    assert stats.billed_cost == alloc.billed_cost == expected_sum([1.25, 2.5, 4.0, 8.0])
    got = [(r["x_ServiceCode"], r["ServiceName"], r["ServiceCategory"], r["ServiceSubcategory"], r["x_UnmappedService"])
           for r in line_items(cfg, "aws-main", "2025-12")]
    assert got == [
        ("AmazonHyperWidget", "Amazon Hyper Widget", "Other", "Other (Other)", "Amazon Hyper Widget"),
        ("AWSNewThing", "AWSNewThing", "Other", "Other (Other)", "AWSNewThing"),
        ("AmazonEC2", "Amazon Elastic Compute Cloud", "Compute", "Virtual Machines", None),
        ("prod-zz9plural9z", "Acme Vector Store (Amazon Bedrock Edition)", "AI and Machine Learning", "Generative AI",
         None),
    ]


# ============================================================================ duplicate line items (issue 16, point 2)
def quarantined(cfg, source: str, month: str) -> list[dict]:
    d = steps.partition_dir(cfg, steps.QUARANTINE, source, month)
    return query(f"SELECT x_SourceFile AS file, x_SourceRow AS row, reason, CAST(billed_cost AS DECIMAL(38, 12)) AS billed "
                 f"FROM read_parquet('{d}/*.parquet') ORDER BY file, row")


def test_same_rows_under_two_file_names_are_counted_once(tmp_path, capsys):
    """AWS re-delivers a part under another name, in a period without a manifest: the second copy is
    quarantined naming both files, never summed, and `apportion run` says so (rc 3)."""
    from apportion import cli
    from tests.test_allocation import ROWS, write_delivery

    write_delivery(tmp_path / "bucket")
    period = tmp_path / "bucket" / "export" / "data" / "BILLING_PERIOD=2026-10"
    first = "data/BILLING_PERIOD=2026-10/export-00001.csv.gz"
    again = "data/BILLING_PERIOD=2026-10/export-00002.csv.gz"  # the same part again, under the next name
    shutil.copy(period / "export-00001.csv.gz", period / "export-00002.csv.gz")
    cfg, source = make_config(tmp_path, "bucket/export")
    one_copy = sum((Decimal(r[8]) for r in ROWS), Decimal(0)).quantize(Q)

    delivery, stats, alloc = run_month(cfg, source, "2026-10")
    assert delivery.layout == "cur2-overwrite" and delivery.manifest_key is None
    # one copy exactly: every raw row once, the savings-plan fee's unused-commitment line once
    assert (stats.rows, stats.billed_cost) == (len(ROWS) + 1, one_copy)
    assert alloc.billed_cost == one_copy and alloc.effective_cost == stats.effective_cost
    assert lake_totals(cfg, steps.LINE_ITEMS, "aws-main", "2026-10")[1] == one_copy
    assert {r["x_SourceFile"] for r in line_items(cfg, "aws-main", "2026-10")} == {first}
    # the second copy: one quarantined row per raw row (the fee once, not with a second unused line)
    q = quarantined(cfg, "aws-main", "2026-10")
    assert stats.quarantined_rows == len(q) == len(ROWS)
    assert stats.quarantined_billed_cost == one_copy  # Σ input = Σ line items + Σ quarantined
    assert stats.quarantine_reasons == {"duplicate line": len(ROWS)}
    for n, (r, raw) in enumerate(zip(q, ROWS), start=1):
        assert (r["file"], r["row"]) == (again, n)
        assert r["reason"] == f"duplicate line item {raw[0]} (no interval): also in {first}:{n}"

    code = cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_QUARANTINE
    assert summary["quarantined_rows"] == len(ROWS)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_row_repeated_inside_one_file_is_counted_once(tmp_path, fmt):
    costs = [1.25, 2.5, 4.0, 8.0]
    rows = make_rows("2025-12", costs)
    rows = rows + [rows[1], rows[3]]  # rows 5 and 6 repeat rows 2 and 4 (same id, same interval)
    rows.append({**rows[0], "start": rows[0]["start"] + timedelta(days=1), "end": rows[0]["end"] + timedelta(days=1)})
    root = tmp_path / "exports" / "cur2" / "data" / "BILLING_PERIOD=2025-12"
    root.mkdir(parents=True)
    name = "cur2-00001" + cur2_suffix(fmt)
    (root / name).write_bytes(cur2_file(rows, fmt))
    cfg, source = make_config(tmp_path, "exports/cur2")

    _, stats, alloc = run_month(cfg, source, "2025-12")
    # the same id in another hour is another line item: kept
    assert (stats.rows, stats.billed_cost) == (5, expected_sum(costs + [1.25]))
    assert alloc.billed_cost == stats.billed_cost
    q = quarantined(cfg, "aws-main", "2025-12")
    assert [(r["row"], r["billed"]) for r in q] == [(5, d("2.5")), (6, d("8.0"))]
    assert stats.quarantined_billed_cost == d("10.5")
    interval = f"{iso(rows[1]['start'])}/{iso(rows[1]['end'])}"
    assert q[0]["reason"] == f"duplicate line item li-0001 {interval}: also in data/BILLING_PERIOD=2025-12/{name}:2"


def test_rows_without_an_id_are_not_deduplicated(tmp_path):
    """Legacy rows may lack an identity: identical rows with an empty id are all kept; an id'd repeat is not."""
    costs = [1.25, 2.5, 4.0]
    rows = make_rows("2025-10", costs)
    rows[0]["id"] = rows[1]["id"] = ""
    rows[1].update(start=rows[0]["start"], end=rows[0]["end"], cost=1.25, rate=1.25)  # identical apart from the resource
    rows.append(dict(rows[0]))  # a third identical row without an id
    rows.append(dict(rows[2]))  # an id'd row repeated
    cfg, source = _local_report(tmp_path, "legacy", "20251001-20251101", "legacy-00001.csv.gz", legacy_csv_gz(rows))

    delivery, stats, alloc = run_month(cfg, source, "2025-10")
    assert delivery.layout == "legacy-overwrite"
    assert (stats.rows, stats.billed_cost) == (4, expected_sum([1.25, 1.25, 4.0, 1.25]))
    assert alloc.billed_cost == stats.billed_cost
    assert [r["x_ProviderLineItemId"] for r in line_items(cfg, "legacy", "2025-10")] == [None, None, "li-0002", None]
    [q] = quarantined(cfg, "legacy", "2025-10")
    assert (q["row"], q["billed"]) == (5, d("4.0"))
    assert q["reason"].startswith("duplicate line item li-0002 ") and q["reason"].endswith("legacy-00001.csv.gz:3")


# ============================================================================ Bedrock decoded (issue 14, point 5)
BEDROCK_MONTH = "2025-12"


def bedrock_cur2_parquet() -> bytes:
    """Bedrock on a CUR 2.0 file, by hand: Nova Pro input 2.5 x 1K tokens ($0.002) and output 0.75 x 1K tokens
    ($0.0024) for team search, Claude Sonnet 4.6 via Marketplace 1,200 input tokens ($0.0036) for team research,
    and one EC2 hour ($1) that is no LLM usage."""
    rows = make_rows(BEDROCK_MONTH, [0.002, 0.0024, 0.0036, 1.0])
    bedrock = dict(product_code="AmazonBedrock", product_name="Amazon Bedrock", operation="InvokeModel",
                   instance_type="")
    search = {"team": "search", "project": "recsys", "createdBy": "user0"}
    rows[0].update(bedrock, usage_type="USE1-NovaPro-input-tokens", amount=2.5, tags=search)     # 2.5 x 1K tokens
    rows[1].update(bedrock, usage_type="USE1-NovaPro-output-tokens", amount=0.75, tags=search)   # 0.75 x 1K tokens
    rows[2].update(product_code="prod-3k7x2c9v1abcd", product_name="Claude Sonnet 4.6 (Amazon Bedrock Edition)",
                   usage_type="USE1-MP:USE1_InputTokenCount-Units", operation="Usage", instance_type="", amount=1200.0,
                   tags={"team": "research", "project": "llm-serving", "createdBy": "user1"})
    units = ["1K tokens", "1K tokens", "Units", "Hrs"]
    recs = []
    for r, unit in zip(rows, units):
        rec = _cur2_record(r)
        for k in ("bill_billing_period_start_date", "bill_billing_period_end_date",
                  "line_item_usage_start_date", "line_item_usage_end_date"):
            rec[k] = rec[k].replace(tzinfo=None)
        for k in ("product", "resource_tags", "cost_category"):
            rec[k] = list(rec[k].items())
        recs.append({**rec, "pricing_unit": unit})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(recs, schema=CUR2_SCHEMA.append(pa.field("pricing_unit", pa.string()))), buf)
    return buf.getvalue()


def test_bedrock_lines_decode_to_model_direction_and_tokens(tmp_path):
    """Bedrock on the CUR: first-party usage types carry the model before the direction, priced per 1K tokens
    (usage amount 2.5 = 2,500 tokens); a Marketplace model carries it in the product name, priced per token.
    A line that is not LLM usage gets no model, direction nor tokens."""
    root = tmp_path / "exports" / "cur2" / "data" / f"BILLING_PERIOD={BEDROCK_MONTH}"
    root.mkdir(parents=True)
    (root / "cur2-00001.snappy.parquet").write_bytes(bedrock_cur2_parquet())
    cfg, source = make_config(tmp_path, "exports/cur2")
    _, stats, _ = run_month(cfg, source, BEDROCK_MONTH)
    assert (stats.rows, stats.quarantined_rows) == (4, 0)
    got = [(r["ServiceSubcategory"], r["x_LlmProvider"], r["x_ModelId"], r["x_TokenType"], r["x_Tokens"], r["BilledCost"])
           for r in line_items(cfg, "aws-main", BEDROCK_MONTH)]
    assert got == [
        ("Generative AI", "aws", "nova-pro", "input", 2500, Decimal("0.002")),
        ("Generative AI", "aws", "nova-pro", "output", 750, Decimal("0.0024")),
        ("Generative AI", "aws", "claude-sonnet-4-6", "input", 1200, Decimal("0.0036")),
        ("Virtual Machines", None, None, None, None, Decimal("1")),
    ]
