"""GCP billing export (`kind: gcp_billing`): BigQuery over its REST API, and the export copied to GCS / a folder.

* BigQuery: google-cloud-bigquery's own REST transport talks to a local HTTP server that replays
  recorded jobs.query / jobs.get / jobs.getQueryResults responses (tests/fixtures/gcp/bigquery),
  three pages joined by pageToken.
* GCS: gcp-storage-emulator on 127.0.0.1 (started by the session fixture), google-cloud-storage client.
* The koku samples (BigQuery export flattened to CSV, credits as Python lists) from a local folder.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apportion import ledger
from connectors.base import SourceError
from connectors.registry import connector_for
from models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "gcp"
BQ = FIX / "bigquery"
CATALOG = FIX / "catalog"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")
KOKU = {"2022-08": "2022-08-01_5.csv", "2020-11": "202011_30c31bca571d9b7f3b2c8459dd8bc34a_2020-11-08_2020-11-11.csv"}


def config(tmp_path: Path, uri: str, **options):
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    path = tmp_path / "apportion.yaml"
    path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: gcp-test\n"
                    f"    kind: gcp_billing\n    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    return load_config(path)


def build(cfg, month):
    source = cfg.sources[0]
    delivery = ledger.land(cfg, source, month)
    stats = ledger.build_line_items(cfg, source, delivery)
    alloc = ledger.allocate(cfg, source, month)
    return delivery, stats, alloc


def rows_of(cfg, month, columns, where="true", order="ORDER BY x_LineId"):
    path = ledger.partition_dir(cfg, ledger.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT {columns} FROM read_parquet(?) WHERE {where} {order}", [str(path)]).fetchall()


def quarantine_of(cfg, month):
    path = ledger.partition_dir(cfg, ledger.QUARANTINE, cfg.sources[0].name, month) / "rows.parquet"
    return duckdb.connect().execute("SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet(?) ORDER BY 1, 2",
                                    [str(path)]).fetchall()


def koku_totals(name: str) -> tuple[Decimal, Decimal, int]:
    """(Σ cost, Σ credits.amount, rows) of a flattened koku CSV, parsed independently of the connector."""
    cost = credits = Decimal(0)
    n = 0
    with open(FIX / name, newline="") as fh:
        for r in csv.DictReader(fh):
            cost += Decimal(r["cost"])
            credits += sum((Decimal(str(c["amount"])) for c in ast.literal_eval(r["credits"] or "[]")), Decimal(0))
            n += 1
    return cost.quantize(Q), credits.quantize(Q), n


def export_rows() -> list[dict]:
    """The 12 export rows of the recorded BigQuery responses, as BigQuery's JSON (Decimal numbers)."""
    rows = []
    for name in ("query_202208_page1.json", "results_202208_page2.json", "results_202208_page3.json"):
        for r in json.loads((BQ / name).read_text())["rows"]:
            rows.append(json.loads(r["f"][0]["v"], parse_float=Decimal))
    return rows


def expected(rows) -> tuple[Decimal, Decimal]:
    cost = sum((Decimal(str(r["cost"])) for r in rows), Decimal(0))
    credits = sum((Decimal(str(c["amount"])) for r in rows for c in (r.get("credits") or [])), Decimal(0))
    return cost.quantize(Q), credits.quantize(Q)


# ============================================================================ flattened CSV samples
def test_koku_flattened_csv_standard_and_detailed(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name in KOKU.values():
        (folder / name).write_bytes((FIX / name).read_bytes())
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2020-11", "2022-08"]
    for month, name in KOKU.items():
        _, stats, alloc = build(cfg, month)
        cost, credits, n = koku_totals(name)
        assert stats.quarantined_rows == 0
        assert (stats.rows, stats.billed_cost, stats.effective_cost) == (n, cost + credits, cost + credits)
        assert alloc.billed_cost == cost + credits
        contracted, credit_sum = rows_of(cfg, month, "sum(ContractedCost), sum(x_CreditAmount)", order="")[0]
        assert (contracted, credit_sum) == (cost, credits)  # gross cost and credits stay visible
    promo = rows_of(cfg, "2020-11", "x_Credits, x_SourceDataset, ServiceName, ServiceCategory", "x_Credits IS NOT NULL")
    assert promo and json.loads(promo[0][0])[0]["type"] == "PROMOTION"
    assert promo[0][1:] == ("GCP standard billing export", "Security Command Center", "Security")
    detailed = rows_of(cfg, "2022-08", "ResourceId, x_SourceDataset, SubAccountId, RegionId, PricingUnit")
    assert detailed[0] == ("instance-1", "GCP detailed billing export", "cloud-billing-292519", "us-central1",
                           "gibibyte")


# ============================================================================ BigQuery REST replay
class BigQueryReplay:
    """jobs.query -> first page (+ pageToken); jobs.get; jobs.getQueryResults?pageToken=... -> next pages."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        self.pages = {None: "query_202208_page1.json", "BCDEF1": "results_202208_page2.json",
                      "BCDEF2": "results_202208_page3.json"}
        self.overrides: dict[str, dict] = {}
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                replay.requests.append(("POST", self.path, body))
                if not urlparse(self.path).path.endswith("/queries"):
                    return self._reply(404, {"error": {"code": 404, "message": "not recorded"}})
                if "DISTINCT invoice.month" in body.get("query", ""):
                    return self._reply(200, json.loads((BQ / "query_months.json").read_text()))
                month = (body.get("queryParameters") or [{}])[0].get("parameterValue", {}).get("value")
                if month != "202208":
                    return self._reply(200, {"kind": "bigquery#queryResponse", "jobComplete": True, "totalRows": "0",
                                             "jobReference": {"projectId": "billing-admin", "jobId": "job_empty",
                                                              "location": "US"},
                                             "schema": {"fields": [{"name": "row_json", "type": "STRING"}]}})
                return self._reply(200, replay.page(None))

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                replay.requests.append(("GET", self.path, {}))
                catalog = re.fullmatch(r"/v1/services/([A-Za-z0-9-]+)/skus", url.path)
                if catalog:  # Cloud Billing Catalog: pages joined by nextPageToken
                    page = 2 if parse_qs(url.query).get("pageToken") == ["CE-PAGE-2"] else 1
                    f = CATALOG / f"skus-{catalog.group(1)}-page{page}.json"
                    return self._reply(200, json.loads(f.read_text()) if f.exists() else {"skus": []})
                account = re.fullmatch(r"/v1/billingAccounts/([A-Za-z0-9-]+)", url.path)
                if account and (CATALOG / f"billing-account-{account.group(1)}.json").exists():
                    return self._reply(200, json.loads((CATALOG / f"billing-account-{account.group(1)}.json").read_text()))
                if "/jobs/job_gcpbilling_202208" in url.path:
                    return self._reply(200, json.loads((BQ / "job_202208.json").read_text()))
                if "/queries/job_gcpbilling_202208" in url.path:
                    token = parse_qs(url.query).get("pageToken", [None])[0]
                    if token in replay.pages:
                        return self._reply(200, replay.page(token))
                return self._reply(404, {"error": {"code": 404, "message": "not recorded"}})

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_port}"

    def page(self, token):
        name = self.pages[token]
        return self.overrides.get(name) or json.loads((BQ / name).read_text())

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bigquery_replay():
    server = BigQueryReplay()
    yield server
    server.stop()


def test_bigquery_rest_pages_land_as_received_and_repull(tmp_path, bigquery_replay):
    uri = "bigquery://billing-admin/billing_export/gcp_billing_export_resource_v1_018984_D0AAA4_940B88"
    cfg = config(tmp_path, uri, api_endpoint=bigquery_replay.endpoint, anonymous=True, page_size=5)
    assert connector_for(cfg.sources[0]).months() == ["2022-07", "2022-08"]
    delivery, stats, alloc = build(cfg, "2022-08")
    # the query: one table, the invoice month as a parameter, 5 rows a page
    query = next(b for m, _, b in bigquery_replay.requests if m == "POST" and b.get("queryParameters"))
    assert "`billing-admin.billing_export.gcp_billing_export_resource_v1_018984_D0AAA4_940B88`" in query["query"]
    assert query["queryParameters"][0]["parameterValue"]["value"] == "202208" and query["maxResults"] == 5
    tokens = [parse_qs(urlparse(p).query).get("pageToken", [None])[0] for m, p, _ in bigquery_replay.requests
              if m == "GET" and "/queries/" in p]
    assert tokens == ["BCDEF1", "BCDEF2"]
    # three pages landed as received
    assert [o["key"] for o in delivery.objects] == ["pages/page-00001.json", "pages/page-00002.json",
                                                    "pages/page-00003.json"]
    landed = json.loads((Path(delivery.local_dir) / "pages/page-00002.json").read_text())
    assert landed["pageToken"] == "BCDEF2" and len(landed["rows"]) == 5
    rows = export_rows()
    cost, credits = expected(rows)
    assert (stats.rows, stats.quarantined_rows) == (12, 0)
    assert stats.billed_cost == stats.effective_cost == cost + credits == alloc.billed_cost
    vertex = rows_of(cfg, "2022-08", "ServiceName, ServiceCategory, ServiceSubcategory, BilledCost, ContractedCost, "
                     "x_CreditAmount, PricingCategory, Tags, ResourceId", "ServiceName = 'Vertex AI'")
    assert vertex == [("Vertex AI", "AI and Machine Learning", "Generative AI", Decimal("10.5"), Decimal("12.345678"),
                       Decimal("-1.845678"), "Committed",
                       '{"team":"ml-platform","workload":"chat","project":"recsys"}',
                       "projects/cloud-billing-292519/locations/us-central1/endpoints/chat")]
    gpu = rows_of(cfg, "2022-08", "x_InstanceType, SkuPriceDetails, Tags", "SkuMeter LIKE 'Nvidia L4%'")
    assert gpu[0][0] == "g2-standard-8" and json.loads(gpu[0][1]) == {"InstanceType": "g2-standard-8", "CoreCount": 8}
    # project labels fill in; the resource's own label wins; system labels keep their provider prefix
    assert json.loads(gpu[0][2]) == {"team": "research", "project": "recsys",
                                     "compute.googleapis.com/machine_spec": "g2-standard-8",
                                     "compute.googleapis.com/cores": "8"}
    tax = rows_of(cfg, "2022-08", "ChargeCategory, x_HasResource, ServiceName", "ChargeCategory = 'Tax'")
    assert tax == [("Tax", False, "Tax")]
    search = rows_of(cfg, "2022-08", "Tags", "ServiceName = 'Compute Engine' AND x_SourceRow = 1 AND x_LineId < 4294967296")
    assert json.loads(search[0][0])["team"] == "search"

    # same content again: the same delivery; late rows arrive: a new delivery replaces the month
    assert ledger.land(cfg, cfg.sources[0], "2022-08").reused
    late = json.loads((BQ / "results_202208_page3.json").read_text())
    extra = json.loads(late["rows"][0]["f"][0]["v"])
    extra.update({"cost": 3.25, "credits": [], "cost_type": "adjustment"})
    late["rows"].append({"f": [{"v": json.dumps(extra)}]})
    bigquery_replay.overrides["results_202208_page3.json"] = late
    delivery2, stats2, _ = build(cfg, "2022-08")
    assert delivery2.delivery_id != delivery.delivery_id
    assert stats2.rows == 13 and stats2.billed_cost == cost + credits + Decimal("3.25")


def test_catalog_list_prices_and_billing_account_name(tmp_path, bigquery_replay):
    """catalog: true -> SKU list prices (single-tier only) fill ListCost, the account's display name BillingAccountName."""
    uri = "bigquery://billing-admin/billing_export/gcp_billing_export_resource_v1_018984_D0AAA4_940B88"
    cfg = config(tmp_path, uri, api_endpoint=bigquery_replay.endpoint, anonymous=True, page_size=5, catalog=True,
                 catalog_endpoint=bigquery_replay.endpoint)
    delivery, stats, _ = build(cfg, "2022-08")
    assert sorted(o["key"] for o in delivery.objects if o["key"].startswith("catalog/")) == [
        "catalog/billing-account-018984-D0AAA4-940B88.json", "catalog/skus-6F81-5844-456A-001.json",
        "catalog/skus-6F81-5844-456A-002.json", "catalog/skus-C7E2-9256-1C43-001.json"]
    assert stats.rows == 12  # catalog pages are reference data, not line items
    rows = dict(rows_of(cfg, "2022-08", "SkuMeter, ListCost", "SkuMeter IN ('Nvidia L4 GPU running in Americas', "
                        "'Gemini 2.5 Flash Input Tokens')"))
    assert rows == {"Nvidia L4 GPU running in Americas": Decimal("8.0"),  # 10 h x $0.80 list, billed $7.00
                    "Gemini 2.5 Flash Input Tokens": Decimal("14.8148136")}
    egress = rows_of(cfg, "2022-08", "DISTINCT ListCost = ContractedCost", "SkuMeter LIKE 'Network Internet Egress%'",
                     order="")
    assert egress == [(True,)]  # a tiered SKU's list price depends on the month's volume: not guessed
    names = rows_of(cfg, "2022-08", "DISTINCT BillingAccountName", order="")
    assert names == [("Acme Billing (demo)",)]


def test_bigquery_empty_month_and_bad_uri(tmp_path, bigquery_replay):
    cfg = config(tmp_path, "bigquery://billing-admin/billing_export/gcp_billing_export_v1_X",
                 api_endpoint=bigquery_replay.endpoint, anonymous=True)
    with pytest.raises(SourceError, match="no rows for invoice month 2022-07"):
        ledger.land(cfg, cfg.sources[0], "2022-07")
    cfg = config(tmp_path, "bigquery://billing-admin/only-dataset", api_endpoint=bigquery_replay.endpoint,
                 anonymous=True)
    with pytest.raises(SourceError, match="expected bigquery://<project>/<dataset>/<table>"):
        connector_for(cfg.sources[0]).months()


# ============================================================================ GCS emulator
def _arrow_table(rows: list[dict]) -> pa.Table:
    kv = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    schema = pa.schema([
        ("billing_account_id", pa.string()),
        ("service", pa.struct([("id", pa.string()), ("description", pa.string())])),
        ("sku", pa.struct([("id", pa.string()), ("description", pa.string())])),
        ("usage_start_time", pa.timestamp("us", tz="UTC")),
        ("usage_end_time", pa.timestamp("us", tz="UTC")),
        ("project", pa.struct([("id", pa.string()), ("name", pa.string()), ("labels", kv)])),
        ("labels", kv),
        ("system_labels", kv),
        ("location", pa.struct([("location", pa.string()), ("country", pa.string()), ("region", pa.string()),
                                ("zone", pa.string())])),
        ("cost", pa.float64()),
        ("currency", pa.string()),
        ("usage", pa.struct([("amount", pa.float64()), ("unit", pa.string()), ("amount_in_pricing_units", pa.float64()),
                             ("pricing_unit", pa.string())])),
        ("credits", pa.list_(pa.struct([("name", pa.string()), ("amount", pa.float64()), ("full_name", pa.string()),
                                        ("id", pa.string()), ("type", pa.string())]))),
        ("invoice", pa.struct([("month", pa.string())])),
        ("cost_type", pa.string()),
        ("resource", pa.struct([("name", pa.string()), ("global_name", pa.string())])),
    ])
    from datetime import datetime

    def conv(r):
        out = {}
        for f in schema.names:
            v = r.get(f)
            if f in ("usage_start_time", "usage_end_time") and v:
                v = datetime.fromisoformat(v.replace("Z", "+00:00"))
            if f == "cost":
                v = float(v)
            if f == "credits":
                v = [{**c, "amount": float(c["amount"])} for c in (v or [])]
            if f == "usage" and v:
                v = {k: (float(x) if isinstance(x, Decimal) else x) for k, x in v.items()}
            if f == "project" and v:
                v = {k: v.get(k) for k in ("id", "name", "labels")}
            if f == "location" and v:
                v = {k: v.get(k) for k in ("location", "country", "region", "zone")}
            if f == "resource" and v:
                v = {k: v.get(k) for k in ("name", "global_name")}
            out[f] = v
        return out

    return pa.Table.from_pylist([conv(r) for r in rows], schema=schema)


def test_export_copied_to_gcs_parquet_jsonl_csv(tmp_path, gcs_bucket, gcs_emulator):
    rows = export_rows()
    # Parquet (nested) in a month folder, JSON lines without a month in the path, koku CSV for another month
    buf = io.BytesIO()
    pq.write_table(_arrow_table(rows[:7]), buf)
    gcs_bucket.blob("billing/invoice_month=202208/part-000.parquet").upload_from_string(buf.getvalue())
    jsonl = "\n".join(json.dumps(r, default=str) for r in rows[7:]) + "\n"
    gcs_bucket.blob("billing/loose/export-000000000001.json").upload_from_string(jsonl.encode())
    gcs_bucket.blob("billing/2020-11/koku.csv").upload_from_string((FIX / KOKU["2020-11"]).read_bytes())
    cfg = config(tmp_path, f"gs://{gcs_bucket.name}/billing", endpoint_url=gcs_emulator.endpoint)
    assert connector_for(cfg.sources[0]).months() == ["2020-11", "2022-08"]
    delivery, stats, alloc = build(cfg, "2022-08")
    assert sorted(o["key"] for o in delivery.objects) == ["invoice_month=202208/part-000.parquet",
                                                          "loose/export-000000000001.json"]
    cost, credits = expected(rows)
    assert (stats.rows, stats.quarantined_rows) == (12, 0)
    assert stats.billed_cost == cost + credits == alloc.billed_cost
    _, stats, _ = build(cfg, "2020-11")
    c, cr, n = koku_totals(KOKU["2020-11"])
    assert (stats.rows, stats.billed_cost) == (n, c + cr)


def test_bad_rows_are_quarantined(tmp_path):
    rows = export_rows()[:6]
    rows[0]["cost_type"] = "surprise"
    rows[1]["labels"] = "team=search"  # not a list of {key, value}
    rows[2]["cost"] = "twelve"
    rows[3]["invoice"] = None
    rows[4]["usage_start_time"] = "last tuesday"
    folder = tmp_path / "f" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in rows) + "\n")
    cfg = config(tmp_path, str(tmp_path / "f"))
    _, stats, alloc = build(cfg, "2022-08")
    assert [r[1:] for r in quarantine_of(cfg, "2022-08")] == [
        (1, "unknown cost_type surprise"), (2, "malformed labels"), (3, "non-numeric cost twelve"),
        (4, "missing invoice.month"), (5, "unparseable usage_start_time last tuesday")]
    good_cost, good_credits = expected(rows[5:])
    assert stats.rows == 1 and stats.billed_cost == good_cost + good_credits == alloc.billed_cost
