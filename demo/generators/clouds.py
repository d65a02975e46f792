"""Deterministic demo bills for Azure and Google Cloud, beside the demo AWS CUR.

* `data/demo-azure/exports/`: a Cost Management ActualCost export (MCA columns) laid out as the
  service writes it: `<export>/<YYYYMMDD-YYYYMMDD>/<run time>/<run id>/part_0_0001.csv` + `manifest.json`,
  two runs per month (the newer one is current). Azure OpenAI token meters (`1M` / `1K` units), H100
  and A100 GPU VMs, blob storage; one untagged OpenAI account; resource-group casing that differs
  between rows, as real exports do.
* `data/demo-gcp/billing/<YYYY-MM>/export-000000000000.json`: the Cloud Billing detailed export as
  BigQuery writes it to GCS (newline-delimited JSON): Vertex AI Gemini input/output tokens, A3 H100
  and GKE L4 GPU nodes with committed-use credits, Cloud Storage, and a tax line.

Everything is derived from the month and fixed seeds: the same months give byte-identical files.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import json
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

AZURE_EXPORT = "apportion-demo-actual"
AZURE_SUB = "5c2a3f1e-7d4b-4a9e-9f10-2b6c8d0e1a11"
AZURE_SUB_NAME = "AI Production"
GCP_ACCOUNT = "01A2B3-C4D5E6-F7A8B9"


def _days(month: str, today: date | None = None) -> list[date]:
    y, m = map(int, month.split("-"))
    last = calendar.monthrange(y, m)[1]
    today = today or datetime.now(timezone.utc).date()
    if (y, m) == (today.year, today.month):
        last = max(1, today.day - 1)  # month to date, like a nightly export
    return [date(y, m, d) for d in range(1, last + 1)]


def _rng(*parts: object) -> random.Random:
    return random.Random(int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16))


def _money(x: float, places: int = 6) -> str:
    return f"{x:.{places}f}"


# ================================================================================== Azure
AZURE_HEADER = [
    "InvoiceSectionName", "AccountName", "SubscriptionId", "SubscriptionName", "ResourceGroup", "ResourceLocation",
    "Date", "ProductName", "MeterCategory", "MeterSubCategory", "MeterId", "MeterName", "MeterRegion", "UnitOfMeasure",
    "Quantity", "EffectivePrice", "CostInBillingCurrency", "CostCenter", "ConsumedService", "ResourceId", "Tags",
    "AdditionalInfo", "ResourceName", "UnitPrice", "PublisherType", "PublisherName", "ChargeType", "Frequency",
    "PricingModel", "AvailabilityZone", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodStartDate", "BillingPeriodEndDate", "BillingProfileId", "BillingProfileName", "PayGPrice",
]

# (account, resource group as written, tags) -> Azure OpenAI token meters
OPENAI_ACCOUNTS = (
    ("oai-search-prod", "rg-search-ai", {"Team": "search", "project": "llm-serving", "workload": "inference",
                                          "env": "prod"}),
    ("oai-chatbot", "RG-Finance-Apps", {"team": "finance-apps", "project": "chatbot", "workload": "inference",
                                        "environment": "production"}),
    ("oai-sandbox", "rg-experiments", {}),  # nobody tagged it: shows up as untagged spend
)
# meter, unit of measure, price per unit of measure, tokens per day (millions) range
OPENAI_METERS = (
    ("gpt-4o-0806-Inp-glbl Tokens", "1M", 2.50, (40, 90)),
    ("gpt-4o-0806-Outp-glbl Tokens", "1K", 0.010, (8, 20)),
    ("gpt-4o-0806-cached-Inp-glbl Tokens", "1M", 1.25, (10, 30)),
    ("gpt-4o-mini-0718-Inp-glbl Tokens", "1M", 0.15, (100, 300)),
)
# name, rg, size, meter subcategory, meter name, $/hour, hours/day, tags
GPU_VMS = (
    ("gpu-train-h100-01", "rg-research-gpu", "Standard_NC40ads_H100_v5", 40, "NCadsH100v5 Series", "NC40ads H100 v5",
     6.98, 24, {"team": "research", "project": "research-sandbox", "workload": "training"}),
    ("gpu-infer-a100-01", "RG-SEARCH-AI", "Standard_NC24ads_A100_v4", 24, "NCadsA100v4 Series", "NC24ads A100 v4",
     3.673, 24, {"team": "search", "project": "llm-serving", "workload": "inference", "env": "prod"}),
)


def _azure_rows(month: str) -> list[dict]:
    y, m = map(int, month.split("-"))
    start, end = date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])
    common = {
        "InvoiceSectionName": "AI Platform", "AccountName": "apportion-demo", "SubscriptionId": AZURE_SUB,
        "SubscriptionName": AZURE_SUB_NAME, "CostCenter": "", "PublisherType": "Azure", "PublisherName": "Microsoft",
        "AvailabilityZone": "", "BillingAccountId": "ab12cd34-0000-4000-8000-00000000demo:ef56_2019-05-31",
        "BillingAccountName": "Apportion Demo Ltd", "BillingCurrency": "USD",
        "BillingPeriodStartDate": start.strftime("%m/%d/%Y"), "BillingPeriodEndDate": end.strftime("%m/%d/%Y"),
        "BillingProfileId": "DEMO-BP1", "BillingProfileName": "Apportion Demo", "ChargeType": "Usage",
        "Frequency": "UsageBased", "PricingModel": "OnDemand", "AdditionalInfo": "",
    }
    rows = []
    for day in _days(month):
        for account, rg, tags in OPENAI_ACCOUNTS:
            rid = f"/subscriptions/{AZURE_SUB}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{account}"
            for meter, uom, price, (lo, hi) in OPENAI_METERS:
                r = _rng("azure-oai", account, meter, day)
                millions = r.uniform(lo, hi) * (0.25 if account == "oai-sandbox" else 1)
                qty = millions * (1000 if uom == "1K" else 1)
                rows.append({**common, "ResourceGroup": rg, "ResourceLocation": "eastus", "Date": day.strftime("%m/%d/%Y"),
                             "ProductName": f"Azure OpenAI - {meter}", "MeterCategory": "Foundry Models",
                             "MeterSubCategory": "Azure OpenAI", "MeterId": _uuid("meter", meter), "MeterName": meter,
                             "MeterRegion": "Global", "UnitOfMeasure": uom, "Quantity": f"{qty:.6f}",
                             "EffectivePrice": str(price), "UnitPrice": str(price), "PayGPrice": str(price),
                             "CostInBillingCurrency": _money(round(qty, 6) * price),
                             "ConsumedService": "Microsoft.CognitiveServices", "ResourceId": rid,
                             "ResourceName": account, "Tags": json.dumps(tags) if tags else ""})
        for name, rg, size, vcpus, subcat, meter, rate, hours, tags in GPU_VMS:
            r = _rng("azure-gpu", name, day)
            used = hours if r.random() > 0.15 else round(r.uniform(6, 20), 2)
            rid = f"/subscriptions/{AZURE_SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
            rows.append({**common, "ResourceGroup": rg, "ResourceLocation": "eastus", "Date": day.strftime("%m/%d/%Y"),
                         "ProductName": f"Virtual Machines {subcat} - {meter} - US East", "MeterCategory": "Virtual Machines",
                         "MeterSubCategory": subcat, "MeterId": _uuid("meter", meter), "MeterName": meter,
                         "MeterRegion": "US East", "UnitOfMeasure": "1 Hour", "Quantity": f"{used:.2f}",
                         "EffectivePrice": str(rate), "UnitPrice": str(rate), "PayGPrice": str(rate),
                         "CostInBillingCurrency": _money(used * rate), "ConsumedService": "Microsoft.Compute",
                         "ResourceId": rid, "ResourceName": name, "Tags": json.dumps(tags),
                         "AdditionalInfo": json.dumps({"ServiceType": size, "VCPUs": vcpus, "UsageType": "ComputeHR"})})
        gb = 42000 + 150 * day.day
        rows.append({**common, "ResourceGroup": "rg-data", "ResourceLocation": "eastus", "Date": day.strftime("%m/%d/%Y"),
                     "ProductName": "Blob Storage - Hot LRS - US East", "MeterCategory": "Storage",
                     "MeterSubCategory": "Blob Storage", "MeterId": _uuid("meter", "hot-lrs"),
                     "MeterName": "Hot LRS Data Stored", "MeterRegion": "US East", "UnitOfMeasure": "1 GB/Month",
                     "Quantity": f"{gb / calendar.monthrange(y, m)[1]:.6f}", "EffectivePrice": "0.0184",
                     "UnitPrice": "0.0184", "PayGPrice": "0.0184",
                     "CostInBillingCurrency": _money(round(gb / calendar.monthrange(y, m)[1], 6) * 0.0184),
                     "ConsumedService": "Microsoft.Storage",
                     "ResourceId": f"/subscriptions/{AZURE_SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/"
                                   "storageAccounts/demodatalake",
                     "ResourceName": "demodatalake",
                     "Tags": json.dumps({"team": "data-eng", "project": "data-lake", "workload": "storage"})})
    return rows


def _uuid(*parts: object) -> str:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def _azure_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=AZURE_HEADER, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode()  # exports start with a BOM


def generate_azure(out: Path, months: list[str]) -> list[Path]:
    written = []
    for month in months:
        y, m = map(int, month.split("-"))
        last = calendar.monthrange(y, m)[1]
        period = f"{y}{m:02d}01-{y}{m:02d}{last:02d}"
        rows = _azure_rows(month)
        days = sorted({r["Date"] for r in rows})
        # two runs: yesterday's (one day short) and today's; only the newer one is current
        for n, (run_rows, offset) in enumerate(((
                [r for r in rows if r["Date"] != days[-1]] or rows[:1], 0), (rows, 1))):
            run_day = datetime.strptime(days[-1], "%m/%d/%Y") + timedelta(days=offset)
            stamp = run_day.strftime("%Y%m%d") + "0415"
            run_id = _uuid("azure-run", month, n)
            folder = f"{AZURE_EXPORT}/{period}/{stamp}/{run_id}"
            body = _azure_csv(run_rows)
            manifest = {
                "manifestVersion": "2024-04-01", "byteCount": len(body), "blobCount": 1, "dataRowCount": len(run_rows),
                "exportConfig": {"exportName": AZURE_EXPORT, "resourceId": f"/subscriptions/{AZURE_SUB}",
                                 "dataVersion": "2023-05-01", "apiVersion": "2023-07-01-preview", "type": "ActualCost",
                                 "timeFrame": "MonthToDate", "granularity": "Daily"},
                "deliveryConfig": {"partitionData": True, "dataOverwriteBehavior": "CreateNewReport",
                                   "fileFormat": "Csv", "compressionMode": "None",
                                   "containerUri": f"/subscriptions/{AZURE_SUB}/resourceGroups/rg-finops/providers/"
                                                   "Microsoft.Storage/storageAccounts/finopsexports",
                                   "rootFolderPath": "exports"},
                "runInfo": {"executionType": "Scheduled", "submittedTime": run_day.strftime("%Y-%m-%dT04:15:00Z"),
                            "runId": run_id, "startDate": f"{month}-01T00:00:00",
                            "endDate": f"{month}-{last:02d}T00:00:00"},
                "blobs": [{"blobName": f"exports/{folder}/part_0_0001.csv", "byteCount": len(body),
                           "dataRowCount": len(run_rows)}],
            }
            for name, data in (("part_0_0001.csv", body),
                               ("manifest.json", json.dumps(manifest, indent=2).encode())):
                path = out / folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                written.append(path)
    return written


# ================================================================================== GCP
GCP_PROJECTS = {
    "search-prod": ("Search Production", "482910473021", [("team", "search"), ("project", "llm-serving")]),
    "research-gpu": ("Research GPU", "590183746510", [("team", "research"), ("project", "research-sandbox")]),
    "data-platform": ("Data Platform", "671029384756", [("team", "data-eng"), ("project", "data-lake")]),
}
VERTEX_SKUS = (
    ("E1A9-33C0-44D2", "Gemini 2.5 Pro Input Tokens", 1.25e-6, (30e6, 70e6)),
    ("E1A9-33C0-44D3", "Gemini 2.5 Pro Output Tokens", 10e-6, (4e6, 9e6)),
    ("E1A9-33C0-44D8", "Gemini 2.5 Flash Input Tokens", 0.30e-6, (80e6, 160e6)),
)


def _gcp_row(day: date, project: str, service: tuple[str, str], sku: tuple[str, str], cost: float, usage: dict,
             *, labels=(), system_labels=(), resource: str | None = None, credits=(), region="us-central1",
             zone: str | None = None) -> dict:
    name, number, plabels = GCP_PROJECTS[project]
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return {
        "billing_account_id": GCP_ACCOUNT,
        "service": {"id": service[0], "description": service[1]},
        "sku": {"id": sku[0], "description": sku[1]},
        "usage_start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "usage_end_time": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "project": {"id": project, "number": number, "name": name,
                    "labels": [{"key": k, "value": v} for k, v in plabels],
                    "ancestry_numbers": f"/1029384756/{number}/"},
        "labels": [{"key": k, "value": v} for k, v in labels],
        "system_labels": [{"key": k, "value": v} for k, v in system_labels],
        "tags": [],
        "location": {"location": region, "country": "US", "region": region, "zone": zone},
        "resource": {"name": resource, "global_name": f"//{service[1].lower().replace(' ', '')}.googleapis.com/{resource}"
                     if resource else None},
        "export_time": (start + timedelta(days=1, hours=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "cost": round(cost, 6),
        "currency": "USD",
        "currency_conversion_rate": 1.0,
        "usage": usage,
        "credits": [dict(c) for c in credits],
        "invoice": {"month": day.strftime("%Y%m"), "publisher_type": "GOOGLE"},
        "cost_type": "regular",
        "cost_at_list": round(cost, 6),
        "transaction_type": "GOOGLE",
        "seller_name": None,
    }


def _gcp_rows(month: str) -> list[dict]:
    rows = []
    vertex = ("C7E2-9256-1C43", "Vertex AI")
    compute = ("6F81-5844-456A", "Compute Engine")
    for day in _days(month):
        for sku_id, sku, price, (lo, hi) in VERTEX_SKUS:
            tokens = int(_rng("gcp-vertex", sku, day).uniform(lo, hi))
            rows.append(_gcp_row(day, "search-prod", vertex, (sku_id, sku), tokens * price,
                                 {"amount": tokens, "unit": "count", "amount_in_pricing_units": tokens / 1e6,
                                  "pricing_unit": "1000000 count"},
                                 labels=[("workload", "inference"), ("app", "semantic-search")],
                                 resource="projects/search-prod/locations/us-central1/publishers/google/models/"
                                 + ("gemini-2.5-pro" if "Pro" in sku else "gemini-2.5-flash")))
        # A3 (8 x H100) training node: GPU and core SKUs, committed-use discount credits
        hours = 24 if _rng("gcp-a3", day).random() > 0.2 else 12
        for sku_id, sku, rate in (("B7C2-1A0E-9F31", "Nvidia H100 80GB GPU running in Americas", 8 * 2.9795),
                                  ("B7C2-1A0E-9F32", "A3 Instance Core running in Americas", 208 * 0.0312)):
            cost = hours * rate
            rows.append(_gcp_row(day, "research-gpu", compute, (sku_id, sku), cost,
                                 {"amount": hours * 3600, "unit": "seconds", "amount_in_pricing_units": hours,
                                  "pricing_unit": "hour"},
                                 labels=[("workload", "training")],
                                 system_labels=[("compute.googleapis.com/machine_spec", "a3-highgpu-8g"),
                                                ("compute.googleapis.com/cores", "208")],
                                 resource="a3-train-01", zone="us-central1-a",
                                 credits=[{"name": "Committed use discount: A3", "amount": round(-0.3 * cost, 6),
                                           "full_name": None, "id": "commitments/a3-1y", "type":
                                           "COMMITTED_USAGE_DISCOUNT"}]))
        # GKE inference pool on L4 GPUs (namespace label from GKE cost allocation)
        rows.append(_gcp_row(day, "search-prod", compute, ("9A2D-4E11-7B3C", "Nvidia L4 GPU running in Americas"),
                             4 * 24 * 0.5599,
                             {"amount": 4 * 24 * 3600, "unit": "seconds", "amount_in_pricing_units": 96,
                              "pricing_unit": "hour"},
                             labels=[("goog-k8s-cluster-name", "inference-gke"), ("k8s-namespace", "ranking"),
                                     ("workload", "inference")],
                             system_labels=[("compute.googleapis.com/machine_spec", "g2-standard-48")],
                             resource="gke-inference-gke-l4-pool-7f3a", zone="us-central1-b"))
        rows.append(_gcp_row(day, "data-platform", ("95FF-2EF5-5EA1", "Cloud Storage"),
                             ("E5F0-6A5D-7BAD", "Standard Storage US Multi-region"), 3.9 + 0.01 * day.day,
                             {"amount": 1.5e14, "unit": "byte-seconds", "amount_in_pricing_units": 150.0,
                              "pricing_unit": "gibibyte month"},
                             labels=[("workload", "storage")], resource="projects/_/buckets/demo-feature-store",
                             region="us"))
    if rows:
        tax = dict(rows[-1])
        subtotal = sum(r["cost"] + sum(c["amount"] for c in r["credits"]) for r in rows)
        tax.update({"service": {"id": "", "description": "Tax"}, "sku": {"id": "", "description": "Sales tax"},
                    "project": None, "labels": [], "system_labels": [], "resource": None, "usage": None,
                    "credits": [], "cost": round(subtotal * 0.0625, 6), "cost_at_list": None, "cost_type": "tax",
                    "location": None})
        rows.append(tax)
    return rows


def generate_gcp(out: Path, months: list[str]) -> list[Path]:
    written = []
    for month in months:
        path = out / month / "export-000000000000.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in _gcp_rows(month)))
        written.append(path)
    return written


def generate_cloud_demo(data_dir: Path, months: list[str]) -> list[str]:
    """Write the Azure and GCP demo exports under `data_dir`; return lines to print."""
    azure = generate_azure(Path(data_dir) / "demo-azure" / "exports", months)
    gcp = generate_gcp(Path(data_dir) / "demo-gcp" / "billing", months)
    return [f"demo Azure Cost Management export (ActualCost, manifests): {len(azure)} files under "
            f"{Path(data_dir) / 'demo-azure'}",
            f"demo GCP billing export copied as JSON lines: {len(gcp)} files under {Path(data_dir) / 'demo-gcp'}"]
