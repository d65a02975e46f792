"""GCP billing export (`kind: gcp_billing`): BigQuery over its REST API, and the export copied to GCS / a folder.

* BigQuery: google-cloud-bigquery's own REST transport talks to a local HTTP server that replays
  recorded jobs.query / jobs.get / jobs.getQueryResults responses (tests/fixtures/gcp_billing/bigquery),
  three pages joined by pageToken; their rows are the rows of our detailed-export CSV.
* GCS: gcp-storage-emulator on 127.0.0.1 (started by the session fixture), google-cloud-storage client.
* Our hand-written exports flattened to CSV (dotted columns, REPEATED fields as Python-repr or JSON
  lists; tests/fixtures/gcp_billing/NOTES.md) from a local folder, and the real flattened samples read in
  place from the workplace's shared/data (skipped when absent).
* The service table models/reference/gcp_billing/ (FOCUS 1.2 values, coverage, unmapped fallback).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import shutil
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apportion import steps
from apportion.connectors.base import SourceError
from apportion.connectors.registry import connector_for
from apportion.models.config import load_config
from apportion.models.focus import SERVICE_SUBCATEGORIES
from tests.shared_data import shared_sample

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "gcp_billing"
BQ = FIX / "bigquery"
CATALOG = FIX / "catalog"
SERVICES = REPO / "models" / "reference" / "gcp_billing" / "services.csv"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")
STANDARD = "standard-export-flattened.csv"  # invoice month 2020-11, EUR, Python-repr lists
DETAILED = "detailed-export-flattened.csv"  # invoice month 2022-08, USD, JSON lists; = the BigQuery pages
OURS = {"2020-11": STANDARD, "2022-08": DETAILED}
REAL = {"2022-08": "gcp/2022-08-01_5.csv",
        "2020-11": "gcp/202011_30c31bca571d9b7f3b2c8459dd8bc34a_2020-11-08_2020-11-11.csv"}
TABLE = "gcp_billing_export_resource_v1_01F3C2_7A9B4E_D05C16"


def config(tmp_path: Path, uri: str, **options):
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    path = tmp_path / "apportion.yaml"
    path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: gcp-test\n"
                    f"    kind: gcp_billing\n    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    return load_config(path)


def build(cfg, month):
    source = cfg.sources[0]
    delivery = steps.land(cfg, source, month)
    stats = steps.build_line_items(cfg, source, delivery)
    alloc = steps.allocate(cfg, source, month)
    return delivery, stats, alloc


def rows_of(cfg, month, columns, where="true", order="ORDER BY x_LineId"):
    path = steps.partition_dir(cfg, steps.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT {columns} FROM read_parquet(?) WHERE {where} {order}", [str(path)]).fetchall()


def quarantine_of(cfg, month):
    path = steps.partition_dir(cfg, steps.QUARANTINE, cfg.sources[0].name, month) / "rows.parquet"
    return duckdb.connect().execute("SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet(?) ORDER BY 1, 2",
                                    [str(path)]).fetchall()


def repeated(text: str) -> list:
    """A flattened REPEATED field: JSON (`null`, double quotes) or Python repr (`None`, single quotes)."""
    if not text:
        return []
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def csv_totals(path: Path) -> tuple[Decimal, Decimal, int]:
    """(Σ cost, Σ credits.amount, rows) of a flattened export CSV, parsed independently of the connector."""
    cost = credits = Decimal(0)
    rows = csv_rows(path)
    for r in rows:
        cost += Decimal(r["cost"])
        credits += sum((Decimal(str(c["amount"])) for c in repeated(r["credits"])), Decimal(0))
    return cost.quantize(Q), credits.quantize(Q), len(rows)


def export_rows() -> list[dict]:
    """The 15 export rows of the recorded BigQuery responses, as BigQuery's JSON (Decimal numbers)."""
    rows = []
    for name in ("query_202208_page1.json", "results_202208_page2.json", "results_202208_page3.json"):
        for r in json.loads((BQ / name).read_text())["rows"]:
            rows.append(json.loads(r["f"][0]["v"], parse_float=Decimal))
    return rows


def expected(rows) -> tuple[Decimal, Decimal]:
    cost = sum((Decimal(str(r["cost"])) for r in rows), Decimal(0))
    credits = sum((Decimal(str(c["amount"])) for r in rows for c in (r.get("credits") or [])), Decimal(0))
    return cost.quantize(Q), credits.quantize(Q)


# ============================================================================ flattened CSV exports
# Totals worked out by hand from the fixtures (NOTES.md lists every row's arithmetic):
#   standard 2020-11 (EUR): cost 31.845012 regular - 0.418 goodwill - 0.000003 rounding + 6.436128 VAT
#     = 37.863137; credits -0.04704 - 0.7315 - 0.000005 (x2) - 0.000002 - 0.000001 - 0.000232 = -0.778785
#   detailed 2022-08 (USD): cost 57.378789 regular + 2.859336 tax - 0.98 correction = 59.258125;
#     credits -0.000002 - 0.753408 - 2.933908 - 1.75 - 0.4321 - 5.76 = -11.629418
HAND = {"2020-11": (Decimal("37.863137"), Decimal("-0.778785"), 15),
        "2022-08": (Decimal("59.258125"), Decimal("-11.629418"), 15)}


def test_our_flattened_csv_exports_standard_and_detailed(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name in OURS.values():  # no month in the file names: the month comes from the rows' invoice.month
        shutil.copyfile(FIX / name, folder / name)
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2020-11", "2022-08"]
    for month, name in OURS.items():
        _, stats, alloc = build(cfg, month)
        cost, credits, n = csv_totals(FIX / name)
        assert (cost, credits, n) == HAND[month]
        assert stats.quarantined_rows == 0
        assert (stats.rows, stats.billed_cost, stats.effective_cost) == (n, cost + credits, cost + credits)
        assert alloc.billed_cost == cost + credits
        contracted, credit_sum = rows_of(cfg, month, "sum(ContractedCost), sum(x_CreditAmount)", order="")[0]
        assert (contracted, credit_sum) == (cost, credits)  # gross cost and credits stay visible
        assert rows_of(cfg, month, "count(*)", "x_UnmappedService IS NOT NULL", order="") == [(0,)]
    assert stats.billed_cost == Decimal("47.628707")  # 2022-08: 59.258125 - 11.629418

    # standard export: EUR account, Python-repr lists (None, single quotes), credit types side by side
    std = rows_of(cfg, "2020-11", "x_SourceRow, ServiceName, ServiceCategory, ServiceSubcategory, ChargeCategory, "
                  "BilledCost, PricingCategory, BillingCurrency, x_SourceDataset")
    assert {r[7] for r in std} == {"EUR"} and {r[8] for r in std} == {"GCP standard billing export"}
    assert [r[:5] for r in std if r[0] in (1, 3, 5, 6, 12, 13, 14, 15)] == [
        (1, "Compute Engine", "Compute", "Virtual Machines", "Usage"),
        (3, "AI Platform", "AI and Machine Learning", "AI Platforms", "Usage"),
        (5, "Speech-to-Text", "AI and Machine Learning", "Natural Language Processing", "Usage"),
        (6, "Security Command Center", "Security", "Security Posture Management", "Usage"),
        (12, "Support", "Management and Governance", "Support", "Usage"),
        (13, "Compute Engine", "Compute", "Virtual Machines", "Adjustment"),
        (14, "Rounding Error", "Other", "Other (Other)", "Adjustment"),
        (15, "Tax", "Other", "Other (Other)", "Tax")]
    by_row = {r[0]: r for r in std}
    assert by_row[1][5:7] == (Decimal("0.18816"), "Standard")  # 0.2352 - 20 % sustained use
    assert by_row[2][5:7] == (Decimal("1.358495"), "Committed")  # 2.09 - 0.7315 CUD - 0.000005 promotion
    assert [by_row[i][5] for i in (6, 7, 8, 10, 11)] == [0] * 5  # tiny costs eaten by promotion / free tier
    credits = rows_of(cfg, "2020-11", "x_Credits", "x_Credits IS NOT NULL")
    assert sorted({c["type"] for (doc,) in credits for c in json.loads(doc)}) == [
        "COMMITTED_USAGE_DISCOUNT", "FREE_TIER", "PROMOTION", "SUSTAINED_USAGE_DISCOUNT"]
    assert json.loads(credits[1][0])[1] == {"name": "FreeTrial:Credit-01B7E5-92C4D1-3FA860", "amount": -5e-06,
                                             "full_name": None, "id": "FreeTrial:Credit-01B7E5-92C4D1-3FA860",
                                             "type": "PROMOTION"}
    first = rows_of(cfg, "2020-11", "Tags, x_InstanceType, AvailabilityZone", "x_SourceRow = 1")
    assert json.loads(first[0][0]) == {"team": "nlp", "env": "dev",
                                       "compute.googleapis.com/machine_spec": "n1-standard-8",
                                       "compute.googleapis.com/cores": "8", "compute.googleapis.com/memory": "30720"}
    assert first[0][1:] == ("n1-standard-8", "europe-west4-b")
    # a late row: October usage on the November invoice stays in November
    late = rows_of(cfg, "2020-11", "strftime(ChargePeriodStart, '%Y-%m-%d %H:%M'), x_BillingMonth, "
                   "strftime(BillingPeriodStart, '%Y-%m-%d')", "x_SourceRow = 8")
    assert late == [("2020-10-31 23:00", "2020-11", "2020-11-01")]

    # detailed export: JSON lists, resource.name, zone-less location, the resource label beats the project's
    detailed = rows_of(cfg, "2022-08", "ResourceId, x_SourceDataset, SubAccountId, RegionId, PricingUnit, Tags")
    assert detailed[0][:5] == ("ranker-vm-1", "GCP detailed billing export", "recsys-prod-4821", "us-central1",
                               "gibibyte")
    assert json.loads(detailed[0][5]) == {"team": "search", "project": "recsys"}
    ai = rows_of(cfg, "2022-08", "ServiceName, ServiceSubcategory, sum(BilledCost)",
                 "ServiceCategory = 'AI and Machine Learning'", "GROUP BY ALL ORDER BY ALL")
    assert ai == [("Cloud TPU", "Machine Learning", Decimal("13.44")),  # 19.2 - 5.76 CUD
                  ("Gemini API", "Generative AI", Decimal("0.84")),
                  # one subcategory per service: 13.25 input + 10.5 output tokens + 0.4025 custom training
                  ("Vertex AI", "Generative AI", Decimal("24.1525"))]


def test_real_flattened_samples_load(tmp_path):
    """The real flattened exports (standard with PROMOTION credits as Python lists; detailed with resource.*)."""
    folder = tmp_path / "export"
    folder.mkdir()
    for relative in REAL.values():
        path = shared_sample(relative)
        shutil.copyfile(path, folder / path.name)  # into the test's own temp folder, never the repository
    cfg = config(tmp_path, str(folder))
    assert connector_for(cfg.sources[0]).months() == ["2020-11", "2022-08"]
    for month, relative in REAL.items():
        _, stats, alloc = build(cfg, month)
        cost, credits, n = csv_totals(shared_sample(relative))
        assert stats.quarantined_rows == 0
        assert (stats.rows, stats.billed_cost, stats.effective_cost) == (n, cost + credits, cost + credits)
        assert alloc.billed_cost == cost + credits
        contracted, credit_sum = rows_of(cfg, month, "sum(ContractedCost), sum(x_CreditAmount)", order="")[0]
        assert (contracted, credit_sum) == (cost, credits)
        assert rows_of(cfg, month, "count(*)", "x_UnmappedService IS NOT NULL", order="") == [(0,)]
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
    uri = f"bigquery://billing-admin/billing_export/{TABLE}"
    cfg = config(tmp_path, uri, api_endpoint=bigquery_replay.endpoint, anonymous=True, page_size=5)
    assert connector_for(cfg.sources[0]).months() == ["2022-07", "2022-08"]
    delivery, stats, alloc = build(cfg, "2022-08")
    # the query: one table, the invoice month as a parameter, 5 rows a page
    query = next(b for m, _, b in bigquery_replay.requests if m == "POST" and b.get("queryParameters"))
    assert f"`billing-admin.billing_export.{TABLE}`" in query["query"]
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
    assert (cost, credits) == HAND["2022-08"][:2]  # the pages hold the detailed CSV's rows
    assert (stats.rows, stats.quarantined_rows) == (15, 0)
    assert stats.billed_cost == stats.effective_cost == cost + credits == alloc.billed_cost == Decimal("47.628707")
    vertex = rows_of(cfg, "2022-08", "ServiceName, ServiceCategory, ServiceSubcategory, BilledCost, ContractedCost, "
                     "x_CreditAmount, PricingCategory, Tags, ResourceId", "ServiceName = 'Vertex AI'")
    chat = "projects/genai-lab-1177/locations/us-central1/endpoints/chat-assist"
    chat_tags = '{"project":"assistant","team":"ml-platform","workload":"chat"}'  # keys sorted, whatever the order
    assert vertex == [
        # 61.7284 M input tokens x $0.25 = 15.4321; CUD (dollar base) -1.75 and promotion -0.4321
        ("Vertex AI", "AI and Machine Learning", "Generative AI", Decimal("13.25"), Decimal("15.4321"),
         Decimal("-2.1821"), "Committed", chat_tags, chat),
        ("Vertex AI", "AI and Machine Learning", "Generative AI", Decimal("10.5"), Decimal("10.5"), Decimal(0),
         "Standard", chat_tags, chat),
        ("Vertex AI", "AI and Machine Learning", "Generative AI", Decimal("0.4025"), Decimal("0.4025"), Decimal(0),
         "Standard", '{"project":"assistant","team":"ml-platform","workload":"finetune"}',
         "projects/genai-lab-1177/locations/us-central1/customJobs/4410092837")]
    gpu = rows_of(cfg, "2022-08", "x_InstanceType, SkuPriceDetails, Tags, AvailabilityZone, BilledCost",
                  "SkuMeter LIKE 'Nvidia L4%' AND ChargeCategory = 'Usage'")
    assert gpu[0][0] == "g2-standard-96"
    assert json.loads(gpu[0][1]) == {"InstanceType": "g2-standard-96", "CoreCount": 96}
    # project labels fill in; the resource's own label wins; system labels keep their provider prefix
    assert json.loads(gpu[0][2]) == {"team": "research", "project": "recsys",
                                     "compute.googleapis.com/machine_spec": "g2-standard-96",
                                     "compute.googleapis.com/cores": "96", "compute.googleapis.com/memory": "393216"}
    assert gpu[0][3:] == ("us-central1-a", Decimal("3.92"))  # 8 GPU-hours x $0.49
    a100 = rows_of(cfg, "2022-08", "BilledCost, ContractedCost, PricingCategory, x_InstanceType",
                   "SkuMeter LIKE 'Nvidia Tesla A100%'")
    assert a100 == [(Decimal(0), Decimal("2.933908"), "Standard", "a2-highgpu-1g")]  # paid by a promotion credit
    tax = rows_of(cfg, "2022-08", "ChargeCategory, x_HasResource, ServiceName, BilledCost", "ChargeCategory = 'Tax'")
    assert tax == [("Tax", False, "Tax", Decimal("2.859336"))]  # 6.25 % of the 45.749371 usage net
    fix = rows_of(cfg, "2022-08", "ChargeCategory, BilledCost, ServiceName, ResourceId",
                  "x_LineItemType = 'adjustment'")
    assert fix == [("Adjustment", Decimal("-0.98"), "Compute Engine", "l4-serving-pool-0")]
    search = rows_of(cfg, "2022-08", "Tags",
                     "ServiceName = 'Compute Engine' AND x_SourceRow = 1 AND x_LineId < 4294967296")
    assert json.loads(search[0][0])["team"] == "search"

    # same content again: the same delivery; late rows arrive: a new delivery replaces the month
    assert steps.land(cfg, cfg.sources[0], "2022-08").reused
    late = json.loads((BQ / "results_202208_page3.json").read_text())
    extra = json.loads(late["rows"][0]["f"][0]["v"])
    extra.update({"cost": 3.25, "credits": [], "cost_type": "adjustment"})
    late["rows"].append({"f": [{"v": json.dumps(extra)}]})
    bigquery_replay.overrides["results_202208_page3.json"] = late
    delivery2, stats2, _ = build(cfg, "2022-08")
    assert delivery2.delivery_id != delivery.delivery_id
    assert stats2.rows == 16 and stats2.billed_cost == cost + credits + Decimal("3.25")


def test_catalog_list_prices_and_billing_account_name(tmp_path, bigquery_replay):
    """catalog: true -> SKU list prices (single-tier only) fill ListCost, the account's display name BillingAccountName."""
    uri = f"bigquery://billing-admin/billing_export/{TABLE}"
    cfg = config(tmp_path, uri, api_endpoint=bigquery_replay.endpoint, anonymous=True, page_size=5, catalog=True,
                 catalog_endpoint=bigquery_replay.endpoint)
    delivery, stats, _ = build(cfg, "2022-08")
    # the SKUs of each of the month's six services (Compute Engine in two pages; the replay has no SKUs
    # for four of them) and the billing account
    assert sorted(o["key"] for o in delivery.objects if o["key"].startswith("catalog/")) == [
        "catalog/billing-account-01F3C2-7A9B4E-D05C16.json", "catalog/skus-6F81-5844-456A-001.json",
        "catalog/skus-6F81-5844-456A-002.json", "catalog/skus-95FF-2EF5-5EA1-001.json",
        "catalog/skus-AEFF-0C7E-1A42-001.json", "catalog/skus-C7E2-9256-1C43-001.json",
        "catalog/skus-CCD8-9BF1-090E-001.json", "catalog/skus-E000-3F24-B8AA-001.json"]
    assert stats.rows == 15  # catalog pages are reference data, not line items
    rows = dict(rows_of(cfg, "2022-08", "SkuMeter, ListCost", "ChargeCategory = 'Usage' AND SkuMeter IN "
                        "('Nvidia L4 GPU running in Americas', 'Gemini 2.5 Flash Input Tokens')"))
    assert rows == {"Nvidia L4 GPU running in Americas": Decimal("4.48"),  # 8 h x $0.56 list, billed $3.92
                    "Gemini 2.5 Flash Input Tokens": Decimal("18.51852")}  # 61.7284 M x $0.30 list, billed 15.4321
    # a correction is not usage: its list cost is its cost, not the list price x its (zero) quantity
    correction = rows_of(cfg, "2022-08", "ListCost, ContractedCost", "ChargeCategory = 'Adjustment'")
    assert correction == [(Decimal("-0.98"), Decimal("-0.98"))]
    egress = rows_of(cfg, "2022-08", "DISTINCT ListCost = ContractedCost", "SkuMeter LIKE 'Network Internet Egress%'",
                     order="")
    assert egress == [(True,)]  # a tiered SKU's list price depends on the month's volume: not guessed
    names = rows_of(cfg, "2022-08", "DISTINCT BillingAccountName", order="")
    assert names == [("Recsys and GenAI (fixture)",)]


def test_bigquery_empty_month_and_bad_uri(tmp_path, bigquery_replay):
    cfg = config(tmp_path, "bigquery://billing-admin/billing_export/gcp_billing_export_v1_X",
                 api_endpoint=bigquery_replay.endpoint, anonymous=True)
    with pytest.raises(SourceError, match="no rows for invoice month 2022-07"):
        steps.land(cfg, cfg.sources[0], "2022-07")
    cfg = config(tmp_path, "bigquery://billing-admin/only-dataset", api_endpoint=bigquery_replay.endpoint,
                 anonymous=True)
    with pytest.raises(SourceError, match="expected bigquery://<project>/<dataset>/<table>"):
        connector_for(cfg.sources[0]).months()


def test_bigquery_pages_hold_the_detailed_csv_rows():
    """The recorded REST pages are our detailed CSV as BigQuery returns it: nested records, RFC 3339 times, numbers."""
    flat = csv_rows(FIX / DETAILED)
    docs = export_rows()
    assert len(flat) == len(docs) == 15

    def ts(text):  # '2022-08-01 03:00:00+00:00' (flattened) -> '2022-08-01T03:00:00Z' (TO_JSON_STRING)
        return text.replace(" ", "T").replace("+00:00", "Z")

    for f, d in zip(flat, docs):
        assert (f["service.description"] or None) == (d["service"] or {}).get("description")
        assert (f["sku.id"] or None) == (d["sku"] or {}).get("id")
        assert (f["resource.name"] or None) == (d["resource"] or {}).get("name")
        assert (f["project.id"] or None) == (d["project"] or {}).get("id")
        assert repeated(f["project.labels"]) == ((d["project"] or {}).get("labels") or [])
        assert (repeated(f["labels"]), repeated(f["system_labels"])) == (d["labels"], d["system_labels"])
        assert Decimal(f["cost"]) == d["cost"] and repeated(f["credits"]) == d["credits"]
        assert (f["cost_type"], f["invoice.month"], f["currency"]) == (d["cost_type"], d["invoice"]["month"],
                                                                      d["currency"])
        assert (ts(f["usage_start_time"]), ts(f["export_time"])) == (d["usage_start_time"], d["export_time"])
        assert "partition_date" not in d  # a column of the flattening query, not of the table


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
    # Parquet (nested) in a month folder, JSON lines without a month in the path, our standard CSV for another month
    buf = io.BytesIO()
    pq.write_table(_arrow_table(rows[:7]), buf)
    gcs_bucket.blob("billing/invoice_month=202208/part-000.parquet").upload_from_string(buf.getvalue())
    jsonl = "\n".join(json.dumps(r, default=str) for r in rows[7:]) + "\n"
    gcs_bucket.blob("billing/loose/export-000000000001.json").upload_from_string(jsonl.encode())
    gcs_bucket.blob("billing/2020-11/standard.csv").upload_from_string((FIX / STANDARD).read_bytes())
    cfg = config(tmp_path, f"gs://{gcs_bucket.name}/billing", endpoint_url=gcs_emulator.endpoint)
    assert connector_for(cfg.sources[0]).months() == ["2020-11", "2022-08"]
    delivery, stats, alloc = build(cfg, "2022-08")
    assert sorted(o["key"] for o in delivery.objects) == ["invoice_month=202208/part-000.parquet",
                                                          "loose/export-000000000001.json"]
    cost, credits = expected(rows)
    assert (stats.rows, stats.quarantined_rows) == (15, 0)
    assert stats.billed_cost == cost + credits == alloc.billed_cost == Decimal("47.628707")
    _, stats, _ = build(cfg, "2020-11")
    c, cr, n = csv_totals(FIX / STANDARD)
    assert (stats.rows, stats.billed_cost) == (n, c + cr) == (15, Decimal("37.084352"))


def test_bad_rows_are_quarantined(tmp_path):
    rows = export_rows()[:5] + [export_rows()[6]]  # five to break, and the Vertex AI input-token row
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
    assert stats.rows == 1 and stats.billed_cost == good_cost + good_credits == alloc.billed_cost == Decimal("13.25")


# ============================================================================ service table
def test_unknown_service_keeps_a_visible_fallback(tmp_path):
    """A service our table lacks: Other / Other (Other), its own name, x_UnmappedService; never dropped."""
    rows = export_rows()
    rows[9]["service"]["description"] = "Orbital Widget Studio"  # the Gemini API row (token SKU) renamed
    rows[12]["service"] = None  # a usage row without any service (Cloud Storage)
    folder = tmp_path / "f" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in rows) + "\n")
    cfg = config(tmp_path, str(tmp_path / "f"))
    _, stats, alloc = build(cfg, "2022-08")
    assert (stats.rows, stats.quarantined_rows) == (15, 0)
    assert stats.billed_cost == alloc.billed_cost == Decimal("47.628707")  # nothing lost
    unmapped = rows_of(cfg, "2022-08", "x_SourceRow, ServiceName, ServiceCategory, ServiceSubcategory, "
                       "x_UnmappedService, BilledCost", "x_UnmappedService IS NOT NULL", "ORDER BY x_SourceRow")
    assert unmapped == [
        # a token SKU does not make an unknown service Generative AI: the service decides
        (10, "Orbital Widget Studio", "Other", "Other (Other)", "Orbital Widget Studio", Decimal("0.84")),
        (13, "Unknown", "Other", "Other (Other)", "Unknown", Decimal("0.005479"))]
    # tax has no service either, but it is not an unmapped service
    assert rows_of(cfg, "2022-08", "ServiceName, x_UnmappedService", "ChargeCategory = 'Tax'") == [("Tax", None)]


def _table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_service_table_is_ours_focus_1_2_and_covers_fixtures_demo_and_ai():
    from datetime import date

    from apportion.demo.generators.clouds import _gcp_rows

    services = _table(SERVICES)
    assert list(services[0]) == ["service_description", "ServiceName", "ServiceCategory", "ServiceSubcategory"]
    names = [r["service_description"] for r in services]
    assert len(names) == len(set(names)) and len(names) >= 80
    for r in services:
        assert r["ServiceSubcategory"] in SERVICE_SUBCATEGORIES[r["ServiceCategory"]], r
        assert all(v and v == v.strip() for v in r.values()), r
    # FOCUS: a ServiceName SHOULD have one ServiceSubcategory (focus-validator ServiceName-C-008-C), so
    # the provider names we fold into one ServiceName (renames, API variants) agree on it
    per_name: dict[str, set] = {}
    for r in services:
        per_name.setdefault(r["ServiceName"], set()).add((r["ServiceCategory"], r["ServiceSubcategory"]))
    assert {n: c for n, c in per_name.items() if len(c) > 1} == {}
    # every service of our fixtures and of the demo bill is in the table
    seen = {r["service.description"] for name in OURS.values() for r in csv_rows(FIX / name)}
    seen |= {(r["service"] or {}).get("description") for r in export_rows()}
    seen |= {r["service"]["description"] for r in _gcp_rows(date(2026, 9, 1).strftime("%Y-%m"))}
    seen -= {"", None}
    assert seen and seen <= set(names), seen - set(names)
    # the AI-relevant services of Google Cloud
    category = {r["service_description"]: (r["ServiceCategory"], r["ServiceSubcategory"]) for r in services}
    assert category["Vertex AI"] == category["Gemini API"] == category["Generative Language API"] == (
        "AI and Machine Learning", "Generative AI")
    assert category["Compute Engine"] == ("Compute", "Virtual Machines")
    assert category["Kubernetes Engine"] == ("Compute", "Containers")
    assert category["Cloud Storage"] == ("Storage", "Object Storage")
    assert category["BigQuery"] == ("Databases", "Data Warehouses")
    assert category["Support"] == ("Management and Governance", "Support")
    for service in ("Cloud TPU", "Cloud Run", "Networking", "Cloud Logging", "Cloud Monitoring",
                    "Cloud Document AI API", "Cloud Speech API", "Cloud Translation", "Cloud Vision API", "Dialogflow",
                    "Notebooks", "Cloud SQL", "Cloud Spanner", "Cloud Memorystore for Redis", "Cloud Filestore",
                    "Invoice", "Tax"):
        assert service in category, service


# ============================================================================ credits without a type
def test_committed_use_discount_credits_without_a_type_are_recognised_by_name(tmp_path):
    """Older exports (and some copies) carry credits with no `type`: a CUD is known by its name then."""
    rows = [export_rows()[i] for i in (4, 5, 6, 10)]  # G2 CUD, startup credit, Vertex AI CUD + promotion, TPU CUD
    for r in rows:
        r["credits"] = [{k: v for k, v in c.items() if k != "type"} for c in r["credits"]]
    rows[0]["credits"][0]["name"] = "Committed Usage Discount: GPU"  # the older spelling
    typed = json.loads(json.dumps(export_rows()[5], default=str))  # a typed credit keeps its type's meaning
    typed["credits"][0].update(name="Committed use discount lookalike", type="PROMOTION")
    folder = tmp_path / "json" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in rows + [typed]) + "\n")
    cfg = config(tmp_path / "json", str(tmp_path / "json"))
    _, stats, _ = build(cfg, "2022-08")
    assert stats.quarantined_rows == 0
    assert rows_of(cfg, "2022-08", "x_SourceRow, PricingCategory") == [
        (1, "Committed"), (2, "Standard"), (3, "Committed"), (4, "Committed"), (5, "Standard")]

    # the flattened standard CSV with every credit's type removed: its CUD row is still Committed
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    text = (FIX / STANDARD).read_text(encoding="utf-8-sig")
    untyped = re.sub(r", 'type': '[A-Z_]+'", "", text)
    assert "'type'" in text and "'type'" not in untyped
    (csv_dir / STANDARD).write_text(untyped, encoding="utf-8")
    cfg = config(tmp_path / "csv", str(csv_dir))
    _, stats, _ = build(cfg, "2020-11")
    by_row = dict(rows_of(cfg, "2020-11", "x_SourceRow, PricingCategory"))
    assert by_row[2] == "Committed"  # 'Committed Usage Discount: GPU'
    assert by_row[1] == "Standard"  # 'Sustained Usage Discount' is not a commitment


# ============================================================================ Vertex AI decoded (issue 14 point 5)
def test_vertex_ai_skus_decode_to_model_direction_and_tokens(tmp_path):
    """Vertex AI / Gemini SKUs: model and direction from the SKU description; x_Tokens = usage.amount (single
    tokens, unit `count`) only when the SKU counts tokens, not characters."""
    import copy

    rows = export_rows()
    cached = copy.deepcopy(rows[6])
    cached["sku"] = {"id": "A121-F1D3-2B0C", "description": "Gemini 2.5 Flash Cached Input Tokens"}
    cached["usage"].update(amount=Decimal("2000000.0"), amount_in_pricing_units=Decimal("2"))
    cached["cost"] = Decimal("0.15")
    chars = copy.deepcopy(rows[7])
    chars["sku"] = {"id": "B7C1-0D2E-44F1", "description": "Gemini 2.5 Pro Text Output Characters"}
    chars["usage"].update(amount=Decimal("1000.0"), amount_in_pricing_units=Decimal("0.001"),
                          pricing_unit="1000000 count")
    chars["cost"] = Decimal("0.04")
    folder = tmp_path / "f" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in rows + [cached, chars]) + "\n")
    cfg = config(tmp_path, str(tmp_path / "f"))
    _, stats, _ = build(cfg, "2022-08")
    assert (stats.rows, stats.quarantined_rows) == (17, 0)
    got = rows_of(cfg, "2022-08", "x_SourceRow, x_LlmProvider, x_ModelId, x_TokenType, x_Tokens",
                  "x_LlmProvider IS NOT NULL", "ORDER BY x_SourceRow")
    assert got == [
        (7, "google", "gemini-2.5-flash", "input", 61_728_400),
        (8, "google", "gemini-2.5-flash", "output", 4_200_000),
        (10, "google", "gemini-2.0-flash", "input", 8_400_000),  # the Gemini API service
        (16, "google", "gemini-2.5-flash", "cache_read", 2_000_000),
        (17, "google", "gemini-2.5-pro", "output", None),  # characters are no tokens: not counted as tokens
    ]
    # the T4 training GPU of Vertex AI is no LLM line
    assert rows_of(cfg, "2022-08", "x_ModelId, x_TokenType, x_Tokens", "x_SourceRow = 9") == [(None, None, None)]
