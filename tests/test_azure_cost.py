"""Azure Cost Management exports (`kind: azure_cost`) against Azurite over HTTP, our fixtures and the real samples.

Export runs are laid out as Cost Management writes them (field notes §3.1): a run folder per
execution with its `manifest.json` (manifestVersion 2024-04-01: exportConfig, runInfo, blobs[]),
found by listing — never by a hard-coded path. The CSVs are our hand-written EA / MCA / camelCase /
v1 exports (tests/fixtures/azure_cost, quirks in its NOTES.md); the real samples are read in place from the
workplace's shared/data and skip when it is absent. The reference tables of models/reference/azure_cost/
are checked for FOCUS 1.2 values, coverage and the unmapped-service fallback. The Cost Management API
client is tested against recorded responses (`responses`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

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
FIX = REPO / "tests" / "fixtures" / "azure_cost"
REF = REPO / "models" / "reference" / "azure_cost"
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
Q = Decimal("0.000000000001")


# ============================================================================ helpers
def csv_total(path: Path, column: str, where=None) -> Decimal:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sum((Decimal(r[column]) for r in rows if where is None or where(r)), Decimal(0)).quantize(Q)


def csv_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def export_run(root: str, export: str, dataset: str, month: str, submitted: str, run_id: str,
               files: dict[str, bytes], data_version: str = "2023-05-01", fmt: str = "Csv") -> dict[str, bytes]:
    """Blobs of one export run: <root>/<export>/<YYYYMMDD-YYYYMMDD>/<YYYYMMDDHHmm>/<run id>/ + manifest.json."""
    y, m = map(int, month.split("-"))
    last = {2: 28}.get(m, 30 if m in (4, 6, 9, 11) else 31)
    period = f"{y}{m:02d}01-{y}{m:02d}{last}"
    stamp = submitted.replace("-", "").replace("T", "").replace(":", "")[:12]
    folder = f"{root}/{export}/{period}/{stamp}/{run_id}"
    blobs = {f"{folder}/{name}": body for name, body in files.items()}
    manifest = {
        "manifestVersion": "2024-04-01",
        "byteCount": sum(len(b) for b in blobs.values()),
        "blobCount": len(blobs),
        "dataRowCount": 0,
        "exportConfig": {"exportName": export, "resourceId": "/subscriptions/00000000-0000-0000-0000-000000000000",
                         "dataVersion": data_version, "apiVersion": "2023-07-01-preview", "type": dataset,
                         "timeFrame": "MonthToDate", "granularity": "Daily"},
        "deliveryConfig": {"partitionData": True, "dataOverwriteBehavior": "CreateNewReport", "fileFormat": fmt,
                           "compressionMode": "None", "containerUri": "/subscriptions/x/storageAccounts/y",
                           "rootFolderPath": root},
        "runInfo": {"executionType": "Scheduled", "submittedTime": submitted, "runId": run_id,
                    "startDate": f"{month}-01T00:00:00", "endDate": f"{month}-{last}T00:00:00"},
        "blobs": [{"blobName": k, "byteCount": len(v), "dataRowCount": 0} for k, v in blobs.items()],
    }
    blobs[f"{folder}/manifest.json"] = json.dumps(manifest, indent=2).encode()
    return blobs


def write_local(base: Path, blobs: dict[str, bytes]) -> None:
    for key, body in blobs.items():
        p = base / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)


def upload(container, blobs: dict[str, bytes]) -> None:
    for key, body in blobs.items():
        container.upload_blob(key, body, overwrite=True)


def config(tmp_path: Path, uri: str, **options) -> object:
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    text = (f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: azure-test\n    kind: azure_cost\n"
            f"    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    path = tmp_path / "apportion.yaml"
    path.write_text(text)
    return load_config(path)


def build(cfg, month: str):
    source = cfg.sources[0]
    delivery = steps.land(cfg, source, month)
    stats = steps.build_line_items(cfg, source, delivery)
    alloc = steps.allocate(cfg, source, month)
    return delivery, stats, alloc


def line_items(cfg, month: str, columns: str = "*") -> list[tuple]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        path = steps.partition_dir(cfg, steps.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
        return con.execute(f"SELECT {columns} FROM read_parquet(?) ORDER BY x_LineId", [str(path)]).fetchall()
    finally:
        con.close()


def quarantined(cfg, month: str) -> list[tuple]:
    path = steps.partition_dir(cfg, steps.QUARANTINE, cfg.sources[0].name, month) / "rows.parquet"
    return duckdb.connect().execute("SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet(?) ORDER BY 2",
                                    [str(path)]).fetchall()


def local_build(tmp_path: Path, body: bytes, month: str, dataset: str = "ActualCost"):
    """One export run holding `body`, in a local folder; built and allocated."""
    write_local(tmp_path / "c", export_run("exp", "costs", dataset, month, f"{month}-21T03:00:00Z", "r1",
                                           {"part_0_0001.csv": body}))
    cfg = config(tmp_path, str(tmp_path / "c" / "exp"))
    return (cfg, *build(cfg, month))


def edit_csv(path: Path, edit) -> bytes:
    """The fixture with `edit(row dict, index)` applied to each row (BOM and column order kept)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = list(reader)
    for i, r in enumerate(rows):
        edit(r, i)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return ("\ufeff" + out.getvalue()).encode()


# Hand-computed from the fixtures (tests/fixtures/azure_cost/NOTES.md): rows, cost total.
EA_ACTUAL_ROWS, EA_ACTUAL_TOTAL = 13, Decimal("1353.9035")  # 1200 reservation purchase + 153.9035 usage
EA_PURCHASE = Decimal("1200")
EA_AMORTIZED_ROWS, EA_AMORTIZED_TOTAL = 12, Decimal("75.6796")
EA_AMORTIZED_COMMITTED = Decimal("53.354")  # 39.36 + 2.904 used, 9.84 + 1.25 unused


# ============================================================================ Azurite
def test_newest_run_per_period_from_manifests_on_azurite(tmp_path, azure_container):
    # An older run of the same month (one row only) must be ignored; the newer run is split in two parts.
    with open(FIX / "ea-actual-cost.csv", encoding="utf-8-sig", newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    older = export_run("exports", "ea-actual", "ActualCost", "2023-09", "2023-09-20T03:00:00Z", "run-old",
                       {"part_0_0001.csv": "".join(lines[:2]).encode()})
    part1 = "\ufeff" + "".join(lines[:6])
    part2 = "\ufeff" + lines[0] + "".join(lines[6:])
    newer = export_run("exports", "ea-actual", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "run-new",
                       {"part_0_0001.csv": part1.encode(), "part_1_0001.csv.gz": gzip.compress(part2.encode())})
    upload(azure_container, {**older, **newer})
    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports")
    assert connector_for(cfg.sources[0]).months() == ["2023-09"]

    delivery, stats, alloc = build(cfg, "2023-09")
    assert delivery.delivery_id == "run-new"
    assert delivery.manifest_key.endswith("run-new/manifest.json")
    assert len(delivery.objects) == 2
    assert stats.rows == csv_rows(FIX / "ea-actual-cost.csv") == EA_ACTUAL_ROWS
    assert stats.billed_cost == csv_total(FIX / "ea-actual-cost.csv", "Cost") == EA_ACTUAL_TOTAL
    # FOCUS: a commitment purchase has EffectiveCost 0 (its amortisation is in AmortizedCost / FocusCost)
    assert stats.effective_cost == EA_ACTUAL_TOTAL - EA_PURCHASE == Decimal("153.9035")
    assert alloc.billed_cost == EA_ACTUAL_TOTAL
    # raw zone keeps the objects byte for byte
    landed = Path(delivery.local_dir)
    assert (landed / delivery.objects[1]["key"]).read_bytes() == newer[
        next(k for k in newer if k.endswith(".csv.gz"))]

    # idempotent: landing again reuses the delivery
    again = steps.land(cfg, cfg.sources[0], "2023-09")
    assert again.reused


def amortized_parquet(path: Path) -> bytes:
    import pandas

    table = pa.Table.from_pandas(pandas.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False),
                                 preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def test_two_exports_in_one_root_need_export_name(tmp_path, azure_container):
    actual = export_run("exports", "ea-actual", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "a1",
                        {"part_0_0001.csv": (FIX / "ea-actual-cost.csv").read_bytes()})
    amortized = export_run("exports", "ea-amortized", "AmortizedCost", "2023-09", "2023-09-21T04:00:00Z", "m1",
                           {"part_0_0001.snappy.parquet": amortized_parquet(FIX / "ea-amortized-cost.csv")},
                           fmt="Parquet")
    upload(azure_container, {**actual, **amortized})

    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports")
    with pytest.raises(SourceError, match="2 exports deliver 2023-09.*export_name"):
        connector_for(cfg.sources[0]).plan("2023-09")

    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports", export_name="ea-amortized")
    delivery, stats, _ = build(cfg, "2023-09")
    assert delivery.layout == "azure-AmortizedCost-2023-05-01"
    assert csv_total(FIX / "ea-amortized-cost.csv", "Cost") == EA_AMORTIZED_TOTAL
    assert csv_total(FIX / "ea-amortized-cost.csv", "Cost",
                     lambda r: r["PricingModel"] in ("Reservation", "SavingsPlan")) == EA_AMORTIZED_COMMITTED
    assert stats.rows == EA_AMORTIZED_ROWS
    assert stats.effective_cost == EA_AMORTIZED_TOTAL
    # amortized commitment cost (used and unused) was billed by the purchase, not by these rows
    assert stats.billed_cost == EA_AMORTIZED_TOTAL - EA_AMORTIZED_COMMITTED == Decimal("22.3256")
    rows = line_items(cfg, "2023-09", "CommitmentDiscountType, CommitmentDiscountStatus, CommitmentDiscountCategory, "
                      "PricingCategory, BilledCost, EffectiveCost, x_SourceDataset, x_InstanceType, ServiceName, "
                      "CommitmentDiscountId, x_HasResource, PricingUnit, PricingQuantity")
    committed = [r for r in rows if r[0]]
    assert sorted((r[0], r[1], r[2], r[3]) for r in committed) == [
        ("Reservation", "Unused", "Usage", "Committed"), ("Reservation", "Used", "Usage", "Committed"),
        ("Savings Plan", "Unused", "Spend", "Committed"), ("Savings Plan", "Used", "Spend", "Committed")]
    assert all(r[4] == 0 and r[5] > 0 for r in committed)
    assert sorted(r[5] for r in committed) == [Decimal("1.25"), Decimal("2.904"), Decimal("9.84"), Decimal("39.36")]
    unused = {r[0]: r for r in committed if r[1] == "Unused"}
    assert unused["Reservation"][8] == "Azure Reservations" and unused["Reservation"][10] is False
    assert unused["Savings Plan"][8] == "Azure Savings Plan for Compute"
    assert unused["Reservation"][9].endswith("/reservations/c6d7e8f9-0a1b-4c2d-9e3f-4a5b6c7d8e9f")
    assert {r[6] for r in rows} == {"AmortizedCost"}
    assert {"Standard_NC24ads_A100_v4", "Standard_D4s_v5", "Standard_NC4as_T4_v3"} <= {r[7] for r in rows}
    # Cosmos DB `100/Hour` (100 RU/s per hour): 96 blocks = 9,600 unit-hours; ML compute is Azure Machine Learning
    assert ("Units/Hour", Decimal(9600)) in {(r[11], r[12]) for r in rows}
    assert "Azure Machine Learning" in {r[8] for r in rows}


def test_missing_manifest_blob_is_an_error_naming_it(tmp_path, azure_container):
    blobs = export_run("exports", "ea", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                       {"part_0_0001.csv": (FIX / "ea-actual-cost.csv").read_bytes(),
                        "part_1_0001.csv": b"x"})
    del blobs[next(k for k in blobs if k.endswith("part_1_0001.csv"))]
    upload(azure_container, blobs)
    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports")
    with pytest.raises(SourceError, match=r"manifest .*r1/manifest.json names .*part_1_0001.csv, which does not exist") as err:
        steps.land(cfg, cfg.sources[0], "2023-09")
    assert err.value.file.endswith("manifest.json")


def test_https_account_url_and_missing_container(tmp_path, azurite_server, azure_container):
    upload(azure_container, export_run("root", "ea", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                       {"part_0_0001.csv": (FIX / "ea-actual-cost.csv").read_bytes()}))
    # path-style endpoint (Azurite) with the account URL as an option
    cfg = config(tmp_path, f"{azurite_server.blob_endpoint}/{azure_container.container_name}/root",
                 account_url=azurite_server.blob_endpoint)
    assert connector_for(cfg.sources[0]).months() == ["2023-09"]
    cfg = config(tmp_path, "az://no-such-container/root")
    with pytest.raises(SourceError, match="no-such-container does not exist"):
        connector_for(cfg.sources[0]).months()


# ============================================================================ column variants (our fixtures)
VARIANTS = [
    # fixture, cost column, month, currency, rows, hand-computed total
    ("ea-actual-cost.csv", "Cost", "2023-09", "USD", EA_ACTUAL_ROWS, EA_ACTUAL_TOTAL),
    ("mca-actual-cost.csv", "CostInBillingCurrency", "2023-01", "EUR", 8, Decimal("192.696024")),
    ("mca-camel-case.csv", "costInBillingCurrency", "2023-08", "USD", 5, Decimal("13.01864")),
    ("v1-camel-case.csv", "preTaxCost", "2019-07", "USD", 3, Decimal("11.23518")),
    ("v1-pascal-case.csv", "PreTaxCost", "2019-07", "USD", 3, Decimal("14.749")),
]


def pricing_unit_keys() -> set[str]:
    with open(REF / "pricing_units.csv", encoding="utf-8", newline="") as fh:
        return {" ".join(r["UnitOfMeasure"].lower().split()).replace(" /", "/") for r in csv.DictReader(fh)}


@pytest.mark.parametrize(("fixture", "cost_col", "month", "currency", "n_rows", "total"), VARIANTS)
def test_ea_mca_v1_and_camel_case_variants(tmp_path, fixture, cost_col, month, currency, n_rows, total):
    cfg, _, stats, alloc = local_build(tmp_path, (FIX / fixture).read_bytes(), month)
    assert stats.quarantined_rows == 0, quarantined(cfg, month)
    assert stats.rows == csv_rows(FIX / fixture) == n_rows
    assert stats.billed_cost == csv_total(FIX / fixture, cost_col) == total == alloc.billed_cost
    rows = line_items(cfg, month, "ResourceId, Tags, ChargePeriodStart, SubAccountId, x_ResourceGroupName, "
                      "BillingCurrency, x_PricingUnitDescription, RegionId, x_UnmappedService, ServiceCategory, "
                      "ServiceSubcategory")
    assert all(r[0] is None or r[0] == r[0].lower() for r in rows)  # ResourceId casing normalised
    assert all(r[2].strftime("%Y-%m") == month for r in rows)
    assert all(r[3] for r in rows)
    assert all(r[4] is None or r[4] == r[4].lower() for r in rows)
    assert {r[5] for r in rows} == {currency}
    # every service, unit and region of our fixtures is in our reference tables
    assert [r for r in rows if r[8] is not None] == []
    units = pricing_unit_keys()
    assert {" ".join(r[6].lower().split()).replace(" /", "/") for r in rows if r[6]} <= units
    with open(FIX / fixture, encoding="utf-8-sig", newline="") as fh:
        located = [r for r in csv.DictReader(fh) if (r.get("ResourceLocation") or r.get("resourceLocation"))]
    assert sum(1 for r in rows if r[7]) == len(located)
    assert all(r[10] in SERVICE_SUBCATEGORIES[r[9]] for r in rows)
    # resource groups spelled with different casing on different rows are one group
    groups = {r[4] for r in rows if r[4]}
    assert len(groups) == len({g.lower() for g in groups})


def test_ea_fixture_tags_dates_units_regions_and_services(tmp_path):
    cfg, _, stats, _ = local_build(tmp_path, (FIX / "ea-actual-cost.csv").read_bytes(), "2023-09")
    assert stats.quarantined_rows == 0
    rows = line_items(cfg, "2023-09", "x_SourceRow, Tags, ChargePeriodStart, ChargePeriodEnd, PricingQuantity, "
                      "PricingUnit, x_PricingBlockSize, x_PricingUnitDescription, ListUnitPrice, ChargeCategory, "
                      "x_HasResource, ServiceName, ServiceCategory, ServiceSubcategory, RegionId, RegionName, "
                      "BillingPeriodStart, BillingPeriodEnd, x_InstanceType, SkuPriceDetails, ResourceId, "
                      "x_ResourceGroupName, BilledCost, EffectiveCost, CommitmentDiscountType, AvailabilityZone, "
                      "ConsumedQuantity, ConsumedUnit")
    by_row = {r[0]: r for r in rows}

    purchase = by_row[1]  # the reservation purchase: shared, not untagged; no EffectiveCost in ActualCost
    assert purchase[9] == "Purchase" and purchase[10] is False
    assert purchase[16].isoformat() == "2023-09-01T00:00:00+00:00"
    assert purchase[17].isoformat() == "2023-10-01T00:00:00+00:00"
    assert (purchase[22], purchase[23], purchase[24]) == (Decimal(1200), Decimal(0), "Reservation")
    assert purchase[11:14] == ("Azure Reservations", "Management and Governance", "Cost Management")

    storage = by_row[2]  # Tags without outer braces, 10K block, MM/DD/YYYY, location EastUS2
    assert json.loads(storage[1]) == {"costcenter": "CC-210", "env": "prod", "team": "ml-platform",
                                      "project": "training-data"}
    assert storage[2].isoformat() == "2023-09-04T00:00:00+00:00" and storage[3].isoformat() == "2023-09-05T00:00:00+00:00"
    assert storage[4] == Decimal(2500) and storage[5] == "Units" and storage[6] == Decimal(10000)  # 0.25 x 10K
    assert storage[7] == "10K" and storage[8] == Decimal("0.000005")  # 0.05 per 10K = 0.000005 per operation
    assert storage[11:14] == ("Azure Storage", "Storage", "Storage Platforms")
    assert storage[14:16] == ("eastus2", "East US 2")

    h100 = by_row[3]  # M/D/YYYY date, GPU VM with AdditionalInfo ServiceType / VCPUs
    assert h100[2].isoformat() == "2023-09-05T00:00:00+00:00"
    assert (h100[4], h100[5], h100[6]) == (Decimal(10), "Hours", Decimal(1))
    assert h100[18] == "Standard_NC40ads_H100_v5"
    assert json.loads(h100[19]) == {"InstanceType": "Standard_NC40ads_H100_v5", "CoreCount": 40}
    assert h100[11:14] == ("Virtual Machines", "Compute", "Virtual Machines")
    assert h100[14] == "southcentralus" and h100[25] == "2"
    assert (h100[26], h100[27]) == (Decimal(10), "Hours")

    tokens_1m, tokens_1k = by_row[4], by_row[5]  # Azure OpenAI: `1M` and `1K` token meters
    assert (tokens_1m[4], tokens_1m[5], tokens_1m[6]) == (Decimal(2400000), "Tokens", Decimal(1000000))
    assert tokens_1m[8] == Decimal("0.0000015")  # 1.50 per 1M tokens
    assert (tokens_1k[4], tokens_1k[5], tokens_1k[6]) == (Decimal(310000), "Tokens", Decimal(1000))
    assert tokens_1k[8] == Decimal("0.00006")
    for r in (tokens_1m, tokens_1k):
        assert r[11:14] == ("Azure AI Services", "AI and Machine Learning", "Generative AI")
        assert r[21] == "rg-chat-ai"
    assert tokens_1m[20] == tokens_1k[20]  # same account, ResourceId cased differently in the export

    disk = by_row[6]  # `1/Month`, empty tag value dropped
    assert json.loads(disk[1]) == {"team": "research", "project": "model-eval"}
    assert (disk[4], disk[5]) == (Decimal("0.5"), "Units/Month")
    assert disk[11:14] == ("Managed Disks", "Storage", "Block Storage") and disk[14] == "westeurope"

    bandwidth = by_row[7]  # data transfer of the H100 VM: the Bandwidth meter category wins over the VM
    assert bandwidth[11:14] == ("Bandwidth", "Networking", "Network Connectivity")
    assert (bandwidth[4], bandwidth[5]) == (Decimal(120), "GB") and bandwidth[20] == h100[20]

    aks = by_row[8]
    assert aks[11:14] == ("Virtual Machine Scale Sets", "Compute", "Virtual Machines")
    assert aks[18] == "Standard_D4s_v5" and aks[21] == "mc_rg-aks_aks-inference_eastus"

    vault = by_row[9]  # upper-case ConsumedService and ResourceId, blank location
    assert vault[11:14] == ("Azure Key Vault", "Security", "Secret Management")
    assert vault[14:16] == (None, None) and vault[20] == vault[20].lower() and vault[21] == "rg-platform"

    ahb = by_row[10]  # Azure Hybrid Benefit licence meter: a zero-cost usage row is kept
    assert ahb[22] == 0 and ahb[11:14] == ("Azure SQL Database", "Databases", "Relational Databases")

    cosmos = by_row[11]  # `1M` request units are not tokens; location spelled `East US`
    assert (cosmos[4], cosmos[5], cosmos[6]) == (Decimal(12000000), "Units", Decimal(1000000))
    assert cosmos[11:14] == ("Azure Cosmos DB", "Databases", "NoSQL Databases") and cosmos[14] == "eastus"

    search, databricks = by_row[12], by_row[13]  # locations `us east 2` and `US East 2`
    assert search[11:14] == ("Azure AI Search", "Analytics", "Search") and search[14:16] == ("eastus2", "East US 2")
    assert databricks[11:14] == ("Azure Databricks", "Analytics", "Analytics Platforms") and databricks[14] == "eastus2"
    assert databricks[21] == storage[21] == "rg-ml-data"  # `RG-ML-DATA` and `rg-ML-Data`

    assert sum(r[22] for r in rows) == EA_ACTUAL_TOTAL and sum(r[23] for r in rows) == EA_ACTUAL_TOTAL - EA_PURCHASE


def test_mca_fixture_prices_are_converted_to_the_billing_currency(tmp_path):
    cfg, _, stats, _ = local_build(tmp_path, (FIX / "mca-actual-cost.csv").read_bytes(), "2023-01")
    assert stats.quarantined_rows == 0 and stats.billed_cost == Decimal("192.696024")
    rows = line_items(cfg, "2023-01", "x_SourceRow, BillingCurrency, PricingCurrency, ContractedUnitPrice, "
                      "ListUnitPrice, ContractedCost, ListCost, PricingQuantity, PricingUnit, x_PricingBlockSize, "
                      "ChargeCategory, ChargeFrequency, EffectiveCost, ServiceName, ServiceCategory, x_UnmappedService, "
                      "PublisherName, Tags, RegionId, ServiceSubcategory, ChargePeriodStart")
    by_row = {r[0]: r for r in rows}
    gpu = by_row[3]  # `10 Hours` block priced 36.73 USD, billed in EUR at 0.92
    assert gpu[1:3] == ("EUR", "USD")
    assert gpu[3] == gpu[4] == Decimal("3.37916")  # 36.73 x 0.92 / 10 per hour, in EUR
    assert gpu[5] == gpu[6] == Decimal("81.09984")  # 2.4 blocks x 33.7916 EUR = CostInBillingCurrency
    assert (gpu[7], gpu[8], gpu[9]) == (Decimal(24), "Hours", Decimal(10))
    assert gpu[18] == "westeurope" and gpu[20].isoformat() == "2023-01-06T00:00:00+00:00"  # ISO date
    output = by_row[2]
    assert (output[7], output[8]) == (Decimal(800000), "Tokens") and output[19] == "Generative AI"
    assert output[3] == Decimal("0.00000138")  # 0.0015 USD per 1K x 0.92 / 1000
    assert by_row[4][13:15] == ("Azure Kubernetes Service", "Compute")
    blob, disk = by_row[5], by_row[6]
    assert blob[17] is None and disk[17] is None  # Tags `{}` and blank
    assert blob[18] == "westeurope"  # `West Europe`
    assert (disk[8], disk[7]) == ("Units/Month", Decimal("0.5"))  # `1 /Month`
    saas = by_row[8]  # a Marketplace SaaS purchase (no commitment): billed and effective, publisher kept
    assert saas[10:13] == ("Purchase", "Recurring", Decimal(92))
    assert saas[13:16] == ("Azure Marketplace", "Other", None) and saas[16] == "Example Vector Search Ltd"


def test_unknown_service_is_kept_with_a_visible_fallback(tmp_path):
    """A service our table does not know: Other / Other (Other), the provider's own name, never dropped."""
    def unknown(r, i):
        if i == 1:  # an unknown resource provider with a meter category
            r.update(ConsumedService="Example.Widgets", MeterCategory="Widget Analytics", MeterSubCategory="Standard",
                     ResourceId=r["ResourceId"].replace("Microsoft.Storage/storageAccounts", "Example.Widgets/widgets"))
        if i == 8:  # unknown provider and no meter category: the ConsumedService is the name
            r.update(ConsumedService="Example.Gadgets", MeterCategory="",
                     ResourceId=r["ResourceId"].replace("MICROSOFT.KEYVAULT/VAULTS", "EXAMPLE.GADGETS/GADGETS"))
    cfg, _, stats, alloc = local_build(tmp_path, edit_csv(FIX / "ea-actual-cost.csv", unknown), "2023-09")
    assert stats.quarantined_rows == 0 and stats.rows == EA_ACTUAL_ROWS
    assert stats.billed_cost == EA_ACTUAL_TOTAL == alloc.billed_cost
    rows = line_items(cfg, "2023-09", "x_SourceRow, ServiceName, ServiceCategory, ServiceSubcategory, x_UnmappedService, "
                      "BilledCost")
    unmapped = [r for r in rows if r[4] is not None]
    assert unmapped == [(2, "Widget Analytics", "Other", "Other (Other)", "Widget Analytics", Decimal("0.0125")),
                        (9, "Example.Gadgets", "Other", "Other (Other)", "Example.Gadgets", Decimal("0.009"))]
    assert all(r[2] != "Other" for r in rows if r[4] is None)


def test_openai_meters_are_tokens_unless_counted_in_hours(tmp_path):
    def meters(r, i):
        if i == 3:  # a cached-input meter whose name lacks "Tokens", in `1M`
            r["MeterName"] = "gpt-4o-1120-cached-Inp-glbl"
        if i == 4:  # provisioned throughput of the same account, billed by the hour
            r.update(MeterName="Provisioned Managed Unit", UnitOfMeasure="1 Hour", Quantity="310", EffectivePrice="0.06")
    cfg, _, stats, _ = local_build(tmp_path, edit_csv(FIX / "ea-actual-cost.csv", meters), "2023-09")
    assert stats.quarantined_rows == 0 and stats.billed_cost == EA_ACTUAL_TOTAL
    rows = {r[0]: r[1:] for r in line_items(cfg, "2023-09", "x_SourceRow, PricingUnit, PricingQuantity, "
                                                            "ServiceSubcategory")}
    assert rows[4] == ("Tokens", Decimal(2400000), "Generative AI")
    assert rows[5] == ("Hours", Decimal(310), "Generative AI")


def test_old_manifest_and_no_manifest_layouts(tmp_path):
    # manifest 2021-01-01: blobs only, period and run time from the folders
    manifest = json.loads((FIX / "manifest-2021-01-01.json").read_text())
    assert manifest["manifestVersion"] == "2021-01-01" and set(manifest) == {
        "manifestVersion", "dataFormat", "blobCount", "byteCount", "dataRowCount", "blobs"}
    blob = manifest["blobs"][0]["blobName"]  # billing/partitioned/20230101-20230131/202301061015/<guid>/000001.csv
    base = tmp_path / "c"
    write_local(base, {blob: (FIX / "mca-actual-cost.csv").read_bytes(),
                       blob.rsplit("/", 1)[0] + "/manifest.json": (FIX / "manifest-2021-01-01.json").read_bytes()})
    cfg = config(tmp_path, str(base / "billing"))
    assert connector_for(cfg.sources[0]).months() == ["2023-01"]
    delivery, stats, _ = build(cfg, "2023-01")
    assert delivery.delivery_id == "5f0c2d7e-91b4-4c3a-a8e2-6d1b0f3c9a44"
    assert stats.quarantined_rows == 0 and stats.rows == manifest["dataRowCount"] == 8
    assert stats.billed_cost == Decimal("192.696024")

    # exports older than manifests: one CSV per run in the period folder; the newest file wins
    base2 = tmp_path / "old"
    folder = base2 / "costreport" / "20190701-20190731"
    folder.mkdir(parents=True)
    body = (FIX / "v1-camel-case.csv").read_bytes()
    (folder / "costreport_old.csv").write_bytes(body.split(b"\n")[0] + b"\n")
    import os
    import time
    os.utime(folder / "costreport_old.csv", (time.time() - 3600, time.time() - 3600))
    (folder / "costreport_new.csv").write_bytes(body)
    cfg2 = config(tmp_path, str(base2))
    plan = connector_for(cfg2.sources[0]).plan("2019-07")
    assert [o.key for o in plan.objects] == ["costreport/20190701-20190731/costreport_new.csv"]


def test_unknown_currency_quarantines_every_row(tmp_path):
    def made_up(r, i):
        r["BillingCurrencyCode"] = "MC"  # not an ISO 4217 code
    cfg, _, stats, _ = local_build(tmp_path, edit_csv(FIX / "mca-actual-cost.csv", made_up), "2023-01")
    assert stats.rows == 0 and stats.quarantined_rows == 8
    assert {r[2] for r in quarantined(cfg, "2023-01")} == {"unknown currency MC"}


def test_bad_rows_are_quarantined_with_file_and_row(tmp_path):
    text = (FIX / "ea-actual-cost.csv").read_text(encoding="utf-8-sig")
    header, *rows = text.splitlines()
    cols = next(csv.reader([header]))
    parsed = [next(csv.reader([r])) for r in rows]
    i = {c: n for n, c in enumerate(cols)}
    parsed[1][i["Tags"]] = '"env": "prod", broken'
    parsed[2][i["Date"]] = "13/45/2023"
    parsed[3][i["Cost"]] = "1,23"
    parsed[4][i["ChargeType"]] = "Mystery"
    parsed[5][i["BillingPeriodStartDate"]] = "08/01/2023"
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    w.writerows(parsed)
    cfg, _, stats, alloc = local_build(tmp_path, out.getvalue().encode(), "2023-09")
    q = quarantined(cfg, "2023-09")
    assert [(r[1], r[2]) for r in q] == [
        (2, "malformed Tags"),
        (3, "unparseable Date 13/45/2023"),
        (4, "non-numeric cost 1,23"),
        (5, "unknown ChargeType Mystery"),
        (6, "row belongs to billing period 2023-08, delivered in 2023-09"),
    ]
    assert all(r[0].endswith("r1/part_0_0001.csv") for r in q)
    good = sum((Decimal(p[i["Cost"]]) for n, p in enumerate(parsed) if n not in (1, 2, 3, 4, 5)), Decimal(0))
    # rows 1 (the 1200 purchase) and 7..13: 1200 + 10.44 + 4.608 + 0.009 + 0 + 3 + 2.424 + 4.8
    assert good == Decimal("1225.281")
    assert stats.rows == 8 and stats.billed_cost == good.quantize(Q) == alloc.billed_cost


# ============================================================================ the real samples (shared/data)
REAL_VARIANTS = [
    # shared/data path, cost column, month, currency (None: every row quarantined for its made-up currency)
    ("azure/EA_ActualCost_Small.csv", "Cost", "2023-09", "USD"),
    ("azure/azure_version_2.csv", "CostInBillingCurrency", "2020-09", None),
    ("azure/camel_azure_version_2.csv", "costInBillingCurrency", "2023-08", "USD"),
    ("azure/azure_camelCased.csv", "preTaxCost", "2019-07", "USD"),
    ("azure/costreport_a243c6f2-199f-4074-9a2c-40e671cf1584.csv", "PreTaxCost", "2019-07", "USD"),
]


@pytest.mark.parametrize(("relative", "cost_col", "month", "currency"), REAL_VARIANTS)
def test_real_samples_load(tmp_path, relative, cost_col, month, currency):
    path = shared_sample(relative)
    cfg, _, stats, alloc = local_build(tmp_path, path.read_bytes(), month)
    if currency is None:  # koku's MCA sample bills in `MC`: every row quarantined, none lost
        assert stats.rows == 0 and stats.quarantined_rows == csv_rows(path)
        assert all(r[2] == "unknown currency MC" for r in quarantined(cfg, month))
        return
    assert stats.quarantined_rows == 0, quarantined(cfg, month)
    assert stats.rows == csv_rows(path)
    assert stats.billed_cost == csv_total(path, cost_col) == alloc.billed_cost
    rows = line_items(cfg, month, "ResourceId, ChargePeriodStart, x_ResourceGroupName, BillingCurrency, "
                      "ServiceCategory, ServiceSubcategory, x_UnmappedService")
    assert all(r[0] is None or r[0] == r[0].lower() for r in rows)
    assert all(r[1].strftime("%Y-%m") == month for r in rows)
    assert all(r[2] is None or r[2] == r[2].lower() for r in rows)
    assert {r[3] for r in rows} == {currency}
    assert all(r[5] in SERVICE_SUBCATEGORIES[r[4]] for r in rows)
    assert [r for r in rows if r[6] is not None] == []  # our table maps every service of the real samples
    if relative.endswith("EA_ActualCost_Small.csv"):
        assert stats.billed_cost == Decimal("8.545007786742")
        assert stats.effective_cost == stats.billed_cost - Decimal("3.25")  # the reservation purchase


def test_real_amortized_sample_and_manifest(tmp_path):
    amortized = shared_sample("azure/EA_AmortizedCost_Small.csv")
    cfg, delivery, stats, _ = local_build(tmp_path / "a", amortized.read_bytes(), "2023-09", dataset="AmortizedCost")
    total = csv_total(amortized, "Cost")
    covered = csv_total(amortized, "Cost", lambda r: r["PricingModel"] in ("Reservation", "SavingsPlan"))
    assert stats.quarantined_rows == 0 and stats.rows == csv_rows(amortized) == 28
    assert stats.effective_cost == total and stats.billed_cost == total - covered
    # the older manifest shape (blobs[] only), delivering our MCA fixture under its blob path
    real_manifest = shared_sample("azure/export-manifest-2021-01-01.json")
    blob = json.loads(real_manifest.read_text())["blobs"][0]["blobName"]
    base = tmp_path / "m"
    write_local(base, {blob: (FIX / "mca-actual-cost.csv").read_bytes(),
                       blob.rsplit("/", 1)[0] + "/manifest.json": real_manifest.read_bytes()})
    cfg = config(tmp_path / "m", str(base / blob.split("/", 1)[0]))
    assert connector_for(cfg.sources[0]).months() == ["2023-01"]
    delivery, stats, _ = build(cfg, "2023-01")
    assert delivery.delivery_id == blob.rsplit("/", 2)[-2]
    assert stats.quarantined_rows == 0 and stats.rows == 8


# ============================================================================ reference tables (models/reference/azure_cost)
def read_ref(name: str) -> list[dict]:
    with open(REF / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def ref_connection():
    from apportion.connectors.azure_cost import load_azure_reference

    con = duckdb.connect()
    load_azure_reference(con)
    return con


def test_services_table_uses_focus_values_and_unambiguous_keys():
    rows = read_ref("services.csv")
    assert 100 <= len(rows) <= 200
    for r in rows:
        assert r["ServiceCategory"] in SERVICE_SUBCATEGORIES, r
        assert r["ServiceSubcategory"] in SERVICE_SUBCATEGORIES[r["ServiceCategory"]], r
        assert r["ServiceName"].strip(), r
        keyed_by_resource = bool(r["ConsumedService"] or r["ResourceType"])
        assert keyed_by_resource != bool(r["MeterCategory"]), r  # a resource key or a meter category, not both
        if r["ResourceType"]:
            assert r["ResourceType"] == r["ResourceType"].lower(), r
            namespace = r["ResourceType"].split("/")[0]
            assert not r["ConsumedService"] or namespace == r["ConsumedService"].lower(), r
    keys = [(r["ConsumedService"].lower(), r["ResourceType"], r["MeterCategory"].lower()) for r in rows]
    assert len(keys) == len(set(keys))
    types = [r["ResourceType"] for r in rows if r["ResourceType"]]
    assert len(types) == len(set(types))  # the by-resource-type fallback finds one row
    # the AI-relevant services a bill carries
    names = {r["ServiceName"] for r in rows}
    assert {"Azure AI Services", "Azure Machine Learning", "Virtual Machines", "Azure Kubernetes Service",
            "Azure Storage", "Bandwidth", "Azure Databricks", "Azure Cosmos DB", "Azure AI Search", "Azure Support",
            "Azure Managed Lustre", "Azure Container Registry", "Azure Reservations"} <= names


def test_pricing_units_table_and_rule_agree():
    rows = read_ref("pricing_units.csv")
    con = ref_connection()
    by_key: dict[str, tuple] = {}
    for r in rows:
        key = con.execute("SELECT apportion_azure_unit_key(?)", [r["UnitOfMeasure"]]).fetchone()[0]
        value = (Decimal(r["BlockSize"]), r["DistinctUnit"])
        assert value[0] > 0, r
        assert by_key.setdefault(key, value) == value, r  # `1 /Month` and `1/Month` are one unit
        if not r["UnitOfMeasure"].startswith("0 "):
            rule = con.execute("SELECT apportion_azure_unit_block(?)", [r["UnitOfMeasure"]]).fetchone()[0]
            assert rule == value[0], r  # the table never contradicts the `<n>[K|M] <unit>` rule
    for spelling, block, unit in (("1", 1, "Units"), ("1 Hour", 1, "Hours"), ("10 Hours", 10, "Hours"),
                                  ("100 Hours", 100, "Hours"), ("1/Hour", 1, "Units/Hour"),
                                  ("1 /Month", 1, "Units/Month"), ("1/Month", 1, "Units/Month"), ("1 GB", 1, "GB"),
                                  ("10 GB", 10, "GB"), ("100 GB", 100, "GB"), ("1 GB/Month", 1, "GB-Months"),
                                  ("1 TB", 1, "TB"), ("10K", 10000, "Units"), ("1K", 1000, "Units"),
                                  ("1M", 1000000, "Units"), ("100", 100, "Units"), ("10000", 10000, "Units"),
                                  ("1/Day", 1, "Units/Day"), ("100/Hour", 100, "Units/Hour")):
        key = con.execute("SELECT apportion_azure_unit_key(?)", [spelling]).fetchone()[0]
        assert by_key.get(key) == (Decimal(block), unit), spelling
    # spellings the table lacks go by the rule
    assert con.execute("SELECT apportion_azure_unit_block('50K'), apportion_azure_unit_name('50K'), "
                       "apportion_azure_unit_block('5 Widgets'), apportion_azure_unit_name('5 Widgets'), "
                       "apportion_azure_unit_block('Widgets'), apportion_azure_unit_name('2/Week')").fetchone() == (
        Decimal(50000), "Units", Decimal(5), "Widgets", Decimal(1), "Units/Week")


def test_region_spellings_resolve_to_one_region():
    rows = read_ref("regions.csv")
    assert len(rows) >= 60 and len({r["RegionId"] for r in rows}) == len(rows)
    con = ref_connection()
    assert con.execute("SELECT count(*) FROM (SELECT spelling FROM ref_azure_regions GROUP BY spelling "
                       "HAVING count(DISTINCT RegionId) > 1)").fetchone()[0] == 0
    for spelling in ("US East 2", "eastus2", "EastUS2", "East US 2", "us east 2", "USEast2"):
        assert con.execute("SELECT RegionId, RegionName FROM ref_azure_regions WHERE spelling = lower(trim(?))",
                           [spelling]).fetchall() == [("eastus2", "East US 2")], spelling
    for spelling, region in (("EU West", "westeurope"), ("AP Southeast", "southeastasia"), ("UK South", "uksouth"),
                             ("SwedenCentral", "swedencentral"), ("JA East", "japaneast")):
        assert con.execute("SELECT RegionId FROM ref_azure_regions WHERE spelling = lower(?)",
                           [spelling]).fetchone() == (region,)


def test_demo_bill_services_units_and_regions_are_all_in_our_tables(tmp_path):
    from apportion.demo.generators.clouds import generate_azure

    generate_azure(tmp_path / "demo", ["2026-09"])
    cfg = config(tmp_path, str(tmp_path / "demo"))
    _, stats, _ = build(cfg, "2026-09")
    assert stats.quarantined_rows == 0 and stats.rows > 0
    rows = line_items(cfg, "2026-09", "ServiceName, ServiceCategory, ServiceSubcategory, x_UnmappedService, "
                      "x_PricingUnitDescription, RegionId, PricingUnit, x_LineId")
    assert [r for r in rows if r[3] is not None or r[5] is None] == []
    assert {r[4] for r in rows} <= {"1M", "1K", "1 Hour", "1 GB/Month"}
    assert {r[:3] for r in rows} == {("Azure AI Services", "AI and Machine Learning", "Generative AI"),
                                     ("Virtual Machines", "Compute", "Virtual Machines"),
                                     ("Azure Storage", "Storage", "Storage Platforms")}
    assert {r[6] for r in rows} == {"Tokens", "Hours", "GB-Months"}


def test_unknown_focus_data_version_and_bad_manifest(tmp_path):
    base = tmp_path / "c"
    write_local(base, export_run("exp", "focus", "FocusCost", "2024-05", "2024-05-21T03:00:00Z", "r1",
                                 {"part_0_0001.csv": b"BilledCost\n1\n"}, data_version="9.9"))
    cfg = config(tmp_path, str(base / "exp"))
    with pytest.raises(SourceError, match=r"unknown FocusCost dataVersion '9.9'") as err:
        connector_for(cfg.sources[0]).months()
    assert err.value.file.endswith("manifest.json")
    import shutil
    shutil.rmtree(base / "exp" / "focus")
    (base / "exp" / "other" / "manifest.json").parent.mkdir(parents=True)
    (base / "exp" / "other" / "manifest.json").write_text("{not json")
    with pytest.raises(SourceError, match="is not valid JSON"):
        connector_for(cfg.sources[0]).months()


FOCUS_COST_HEADER = (
    "AvailabilityZone,BilledCost,BillingAccountId,BillingAccountName,BillingAccountType,BillingCurrency,"
    "BillingPeriodEnd,BillingPeriodStart,ChargeCategory,ChargeClass,ChargeDescription,ChargeFrequency,ChargePeriodEnd,"
    "ChargePeriodStart,CommitmentDiscountCategory,CommitmentDiscountId,CommitmentDiscountName,CommitmentDiscountStatus,"
    "CommitmentDiscountType,ConsumedQuantity,ConsumedUnit,ContractedCost,ContractedUnitPrice,EffectiveCost,"
    "InvoiceIssuerName,ListCost,ListUnitPrice,PricingCategory,PricingQuantity,PricingUnit,ProviderName,PublisherName,"
    "RegionId,RegionName,ResourceId,ResourceName,ResourceType,ServiceCategory,ServiceName,SkuId,SkuPriceId,"
    "SubAccountId,SubAccountName,SubAccountType,Tags,x_ResourceGroupName,x_PricingBlockSize,x_PricingUnitDescription,"
    "x_BilledCostInUsd,x_SkuMeterCategory\n"
)


def focus_cost_rows() -> str:
    common = ("ba-1,Contoso,Billing Profile,USD,2024-06-01T00:00:00Z,2024-05-01T00:00:00Z")
    return FOCUS_COST_HEADER + "\n".join([
        f",12.50,{common},Usage,,gpt-4o-0513 Input global Tokens,Usage-Based,2024-05-03T00:00:00Z,"
        "2024-05-02T00:00:00Z,,,,,,5000,Tokens,12.50,0.0025,12.50,Microsoft,12.50,0.0025,Standard,5000,Tokens,"
        "Microsoft,Microsoft,eastus,East US,/subscriptions/s1/resourcegroups/rg-ai/providers/microsoft.cognitiveservices/"
        "accounts/oai,oai,Cognitive Services account,AI and Machine Learning,Azure OpenAI,sku1,sku1p,s1,AI Sub,"
        'Subscription,"{""team"":""search"",""project"":""llm-serving""}",rg-ai,1000,1K,12.50,Foundry Models',
        f",0,{common},Usage,,NC40ads H100 v5,Usage-Based,2024-05-03T00:00:00Z,2024-05-02T00:00:00Z,Usage,"
        "/providers/microsoft.capacity/reservationorders/o1/reservations/r1,h100-ri,Used,Reservation,24,Hours,"
        "80.00,3.33,55.00,Microsoft,88.00,3.67,Committed,24,Hours,Microsoft,Microsoft,eastus,East US,"
        "/subscriptions/s1/resourcegroups/rg-gpu/providers/microsoft.compute/virtualmachines/gpu1,gpu1,"
        "Virtual machine,Compute,Virtual Machines,sku2,sku2p,s1,AI Sub,Subscription,,rg-gpu,1,1 Hour,0,Virtual Machines",
    ]) + "\n"


def test_focus_cost_export_uses_the_focus_mapping(tmp_path, azure_container):
    upload(azure_container, export_run("exp", "focus", "FocusCost", "2024-05", "2024-05-21T03:00:00Z", "r1",
                                       {"part_0_0001.csv": focus_cost_rows().encode()}, data_version="1.0r2"))
    cfg = config(tmp_path, f"az://{azure_container.container_name}/exp")
    delivery, stats, _ = build(cfg, "2024-05")
    assert delivery.layout == "azure-FocusCost-1.0r2"
    assert stats.rows == 2 and stats.billed_cost == Decimal("12.5") and stats.effective_cost == Decimal("67.5")
    rows = line_items(cfg, "2024-05", "x_SourceDataset, ProviderName, ServiceName, x_ResourceGroupName, "
                      "x_PricingBlockSize, Tags, CommitmentDiscountStatus, x_SourceKind, ServiceSubcategory")
    assert rows[0][:5] == ("Azure FocusCost 1.0", "Microsoft", "Azure OpenAI", "rg-ai", Decimal(1000))
    assert json.loads(rows[0][5]) == {"team": "search", "project": "llm-serving"}
    assert rows[1][6] == "Used" and rows[1][7] == "azure_cost"
    # FocusCost 1.0 has no ServiceSubcategory: it comes from our services table by ServiceName
    assert [r[8] for r in rows] == ["Generative AI", "Virtual Machines"]


# ============================================================================ Cost Management API (recorded responses)
class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", 4102444800)

    def get_token_info(self, *scopes, options=None):
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-token", 4102444800)


def test_cost_management_api_with_recorded_responses():
    responses = pytest.importorskip("responses")
    from apportion.connectors.azure_cost import AzureCostManagement

    base = "https://management.azure.com"
    scope = "subscriptions/00000000-0000-0000-0000-000000000000"
    exports = {"value": [{
        "id": f"/{scope}/providers/Microsoft.CostManagement/exports/ea-actual",
        "name": "ea-actual", "type": "Microsoft.CostManagement/exports",
        "properties": {
            "format": "Csv",
            "deliveryInfo": {"destination": {"resourceId": "/subscriptions/x/storageAccounts/billing",
                                             "container": "exports", "rootFolderPath": "costs"}},
            "definition": {"type": "ActualCost", "timeframe": "MonthToDate",
                           "dataSet": {"granularity": "Daily", "configuration": {"dataVersion": "2023-05-01"}}},
            "schedule": {"status": "Active", "recurrence": "Daily"},
        },
    }]}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add(responses.GET, f"{base}/{scope}/providers/Microsoft.CostManagement/exports", json=exports)
        rsps.add(responses.POST, f"{base}/{scope}/providers/Microsoft.CostManagement/exports/ea-actual/run", status=200)
        op = f"{base}/{scope}/providers/Microsoft.CostManagement/costDetailsOperationResults/op-1"
        rsps.add(responses.POST, f"{base}/{scope}/providers/Microsoft.CostManagement/generateCostDetailsReport",
                 status=202, headers={"Location": op, "Retry-After": "0"})
        rsps.add(responses.GET, op, status=202, headers={"Location": op, "Retry-After": "0"})
        rsps.add(responses.GET, op, status=200, json={
            "id": "op-1", "name": "op-1", "status": "Completed",
            "manifest": {"manifestVersion": "2022-04-01", "dataFormat": "Csv", "blobCount": 1, "byteCount": 100,
                         "blobs": [{"blobLink": "https://ccmreportstorage.blob.core.windows.net/armreports/r.csv?sv=x",
                                    "byteCount": 100}],
                         "requestContext": {"requestScope": f"/{scope}"}},
            "validTill": "2024-06-01T00:00:00Z"})
        api = AzureCostManagement(scope, FakeCredential(), base_url=base, polling_interval=0)
        listed = api.list_exports()
        assert listed == [{"name": "ea-actual", "type": "ActualCost", "timeframe": "MonthToDate",
                           "data_version": "2023-05-01", "format": "Csv", "container": "exports",
                           "root_folder_path": "costs"}]
        api.run_export("ea-actual")
        links = api.cost_details_report("2024-05-01", "2024-05-31", "AmortizedCost")
        assert links == ["https://ccmreportstorage.blob.core.windows.net/armreports/r.csv?sv=x"]
        body = json.loads(rsps.calls[2].request.body)
        assert body == {"metric": "AmortizedCost", "timePeriod": {"start": "2024-05-01", "end": "2024-05-31"}}
        assert all("api-version=" in c.request.url for c in rsps.calls[:3])
        assert all(c.request.headers["Authorization"] == "Bearer fake-token" for c in rsps.calls)


def test_cost_details_report_as_a_source(tmp_path, monkeypatch):
    """`uri: https://management.azure.com/<scope>`: the month is requested as a Cost Details report."""
    responses = pytest.importorskip("responses")
    import apportion.connectors.azure_cost as azure_cost

    monkeypatch.setattr(azure_cost, "management_credential", lambda: FakeCredential())
    base = "https://management.azure.com"
    scope = "subscriptions/00000000-0000-0000-0000-000000000000"
    cfg = config(tmp_path, f"{base}/{scope}", metric="AmortizedCost", polling_interval=0, since="2023-09")
    assert connector_for(cfg.sources[0]).months()[0] == "2023-09"
    sas = "https://ccmreportstorage.blob.core.windows.net/armreports/20230901/part_1.csv?sv=2023&sig=SECRET"
    op = f"{base}/{scope}/providers/Microsoft.CostManagement/costDetailsOperationResults/op-9"
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, f"{base}/{scope}/providers/Microsoft.CostManagement/generateCostDetailsReport",
                 status=202, headers={"Location": op, "Retry-After": "0"})
        rsps.add(responses.GET, op, status=200, json={
            "id": "op-9", "name": "op-9", "status": "Completed",
            "manifest": {"manifestVersion": "2022-04-01", "dataFormat": "Csv", "blobCount": 1, "byteCount": 1,
                         "blobs": [{"blobLink": sas, "byteCount": 1}]}})
        rsps.add(responses.GET, sas.split("?")[0], body=(FIX / "ea-amortized-cost.csv").read_bytes())
        delivery, stats, _ = build(cfg, "2023-09")
        body = json.loads(rsps.calls[0].request.body)
    assert body == {"metric": "AmortizedCost", "timePeriod": {"start": "2023-09-01", "end": "2023-09-30"}}
    assert delivery.layout == "azure-costdetails-AmortizedCost"
    assert [o["key"] for o in delivery.objects] == ["costdetails/001-part_1.csv"]
    assert "SECRET" not in (Path(delivery.local_dir) / "delivery.json").read_text()
    assert stats.rows == EA_AMORTIZED_ROWS and stats.effective_cost == EA_AMORTIZED_TOTAL
    assert stats.billed_cost == EA_AMORTIZED_TOTAL - EA_AMORTIZED_COMMITTED


def test_azure_openai_meters_decode_to_model_direction_and_tokens(tmp_path):
    """Azure OpenAI meters (issue 14 point 5): the model and direction from MeterName, the tokens from Quantity
    times the UnitOfMeasure block (`1M` x 3.2 = 3,200,000; `1K` x 800 = 800,000; `1K` x 12.5 = 12,500)."""
    first: dict = {}

    def cached(r, i):
        if i == 0:
            first.update(r)
        if i == 2:  # a cached-input meter of a dated gpt-4o-mini deployment, in blocks of 1K
            r.update({**first, "MeterName": "gpt-4o-mini-0718-cached-Inp-glbl Tokens", "UnitOfMeasure": "1K",
                      "Quantity": "12.5", "MeterId": "93d5f7b9-1c4e-4a6d-8f0b-3c5e7a9c1e24"})
    cfg, _, stats, _ = local_build(tmp_path, edit_csv(FIX / "mca-actual-cost.csv", cached), "2023-01")
    assert stats.quarantined_rows == 0 and stats.rows == 8
    rows = line_items(cfg, "2023-01", "x_SourceRow, x_LlmProvider, x_ModelId, x_TokenType, x_Tokens, x_ModelRef")
    decoded = [r for r in rows if r[1] is not None]
    assert decoded == [
        (1, "azure", "gpt-35-turbo", "input", 3_200_000, "gpt-35-turbo-Inp-regnl Tokens"),
        (2, "azure", "gpt-35-turbo", "output", 800_000, "gpt-35-turbo-Outp-regnl Tokens"),
        (3, "azure", "gpt-4o-mini", "cache_read", 12_500, "gpt-4o-mini-0718-cached-Inp-glbl Tokens"),
    ]
    assert all(r[2] is r[3] is r[4] is None for r in rows if r[1] is None)  # the other meters: nothing guessed
