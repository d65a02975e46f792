"""Azure Cost Management exports (`kind: azure_cost`) against Azurite over HTTP, and the real samples.

Export runs are laid out as Cost Management writes them (field notes §3.1): a run folder per
execution with its `manifest.json` (manifestVersion 2024-04-01: exportConfig, runInfo, blobs[]),
found by listing — never by a hard-coded path. The CSVs are the finops-toolkit EA samples and the
koku MCA / v1 / camelCase samples (tests/fixtures/azure). The Cost Management API client is tested
against recorded responses (`responses`).
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

from apportion import ledger
from connectors.base import SourceError
from connectors.registry import connector_for
from models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "azure"
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
    delivery = ledger.land(cfg, source, month)
    stats = ledger.build_line_items(cfg, source, delivery)
    alloc = ledger.allocate(cfg, source, month)
    return delivery, stats, alloc


def line_items(cfg, month: str, columns: str = "*") -> list[tuple]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        path = ledger.partition_dir(cfg, ledger.LINE_ITEMS, cfg.sources[0].name, month) / "data.parquet"
        return con.execute(f"SELECT {columns} FROM read_parquet(?) ORDER BY x_LineId", [str(path)]).fetchall()
    finally:
        con.close()


def quarantined(cfg, month: str) -> list[tuple]:
    path = ledger.partition_dir(cfg, ledger.QUARANTINE, cfg.sources[0].name, month) / "rows.parquet"
    return duckdb.connect().execute("SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet(?) ORDER BY 2",
                                    [str(path)]).fetchall()


# ============================================================================ Azurite
def test_newest_run_per_period_from_manifests_on_azurite(tmp_path, azure_container):
    # An older run of the same month (one row only) must be ignored; the newer run is split in two parts.
    with open(FIX / "EA_ActualCost_Small.csv", encoding="utf-8-sig", newline="") as fh:
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
    expected = csv_total(FIX / "EA_ActualCost_Small.csv", "Cost")
    assert stats.rows == csv_rows(FIX / "EA_ActualCost_Small.csv") == 11
    assert stats.billed_cost == expected == Decimal("8.545007786742")
    # FOCUS: a commitment purchase has EffectiveCost 0 (its amortisation is in AmortizedCost / FocusCost)
    assert stats.effective_cost == expected - Decimal("3.25")
    assert alloc.billed_cost == expected
    # raw zone keeps the objects byte for byte
    landed = Path(delivery.local_dir)
    assert (landed / delivery.objects[1]["key"]).read_bytes() == newer[
        next(k for k in newer if k.endswith(".csv.gz"))]

    # idempotent: landing again reuses the delivery
    again = ledger.land(cfg, cfg.sources[0], "2023-09")
    assert again.reused


def test_two_exports_in_one_root_need_export_name(tmp_path, azure_container):
    actual = export_run("exports", "ea-actual", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "a1",
                        {"part_0_0001.csv": (FIX / "EA_ActualCost_Small.csv").read_bytes()})
    table = pa.Table.from_pandas(
        __import__("pandas").read_csv(FIX / "EA_AmortizedCost_Small.csv", dtype=str, encoding="utf-8-sig"),
        preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    amortized = export_run("exports", "ea-amortized", "AmortizedCost", "2023-09", "2023-09-21T04:00:00Z", "m1",
                           {"part_0_0001.snappy.parquet": buf.getvalue()}, fmt="Parquet")
    upload(azure_container, {**actual, **amortized})

    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports")
    with pytest.raises(SourceError, match="2 exports deliver 2023-09.*export_name"):
        connector_for(cfg.sources[0]).plan("2023-09")

    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports", export_name="ea-amortized")
    delivery, stats, _ = build(cfg, "2023-09")
    assert delivery.layout == "azure-AmortizedCost-2023-05-01"
    amortized_total = csv_total(FIX / "EA_AmortizedCost_Small.csv", "Cost")
    covered = csv_total(FIX / "EA_AmortizedCost_Small.csv", "Cost",
                        lambda r: r["PricingModel"] in ("Reservation", "SavingsPlan"))
    assert stats.rows == 28
    assert stats.effective_cost == amortized_total
    # amortized commitment cost was billed by the purchase, not by the covered usage
    assert stats.billed_cost == amortized_total - covered
    rows = line_items(cfg, "2023-09", "CommitmentDiscountType, CommitmentDiscountStatus, CommitmentDiscountCategory, "
                      "PricingCategory, BilledCost, EffectiveCost, x_SourceDataset, x_InstanceType")
    committed = [r for r in rows if r[0]]
    assert sorted((r[0], r[1], r[2], r[3]) for r in committed) == [
        ("Reservation", "Used", "Usage", "Committed"), ("Savings Plan", "Used", "Spend", "Committed")]
    assert all(r[4] == 0 and r[5] > 0 for r in committed)
    assert {r[6] for r in rows} == {"AmortizedCost"}
    assert "Standard_DS2_v2" in {r[7] for r in rows}


def test_missing_manifest_blob_is_an_error_naming_it(tmp_path, azure_container):
    blobs = export_run("exports", "ea", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                       {"part_0_0001.csv": (FIX / "EA_ActualCost_Small.csv").read_bytes(),
                        "part_1_0001.csv": b"x"})
    del blobs[next(k for k in blobs if k.endswith("part_1_0001.csv"))]
    upload(azure_container, blobs)
    cfg = config(tmp_path, f"az://{azure_container.container_name}/exports")
    with pytest.raises(SourceError, match=r"manifest .*r1/manifest.json names .*part_1_0001.csv, which does not exist") as err:
        ledger.land(cfg, cfg.sources[0], "2023-09")
    assert err.value.file.endswith("manifest.json")


def test_https_account_url_and_missing_container(tmp_path, azurite_server, azure_container):
    upload(azure_container, export_run("root", "ea", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                       {"part_0_0001.csv": (FIX / "EA_ActualCost_Small.csv").read_bytes()}))
    # path-style endpoint (Azurite) with the account URL as an option
    cfg = config(tmp_path, f"{azurite_server.blob_endpoint}/{azure_container.container_name}/root",
                 account_url=azurite_server.blob_endpoint)
    assert connector_for(cfg.sources[0]).months() == ["2023-09"]
    cfg = config(tmp_path, "az://no-such-container/root")
    with pytest.raises(SourceError, match="no-such-container does not exist"):
        connector_for(cfg.sources[0]).months()


# ============================================================================ column variants (local copies)
@pytest.mark.parametrize(
    ("fixture", "cost_col", "month", "currency"),
    [
        ("EA_ActualCost_Small.csv", "Cost", "2023-09", "USD"),
        ("azure_version_2.csv", "CostInBillingCurrency", "2020-09", "MC"),
        ("camel_azure_version_2.csv", "costInBillingCurrency", "2023-08", "USD"),
        ("azure_camelCased.csv", "preTaxCost", "2019-07", "USD"),
        ("costreport_a243c6f2-199f-4074-9a2c-40e671cf1584.csv", "PreTaxCost", "2019-07", "USD"),
    ],
)
def test_ea_mca_v1_and_camel_case_variants(tmp_path, fixture, cost_col, month, currency):
    blobs = export_run("exp", "costs", "ActualCost", month, f"{month}-21T03:00:00Z", "r1",
                       {"part_0_0001.csv": (FIX / fixture).read_bytes()})
    write_local(tmp_path / "container", blobs)
    cfg = config(tmp_path, str(tmp_path / "container" / "exp"))
    _, stats, alloc = build(cfg, month)
    good = csv_total(FIX / fixture, cost_col)
    if currency == "MC":  # koku's sample uses a made-up currency code: every row is quarantined, none lost
        assert stats.rows == 0 and stats.quarantined_rows == csv_rows(FIX / fixture)
        assert all(r[2] == "unknown currency MC" for r in quarantined(cfg, month))
        return
    assert stats.quarantined_rows == 0, quarantined(cfg, month)
    assert stats.rows == csv_rows(FIX / fixture)
    assert stats.billed_cost == good == alloc.billed_cost
    rows = line_items(cfg, month, "ResourceId, Tags, ChargePeriodStart, SubAccountId, x_ResourceGroupName, "
                      "BillingCurrency, PricingUnit, PricingQuantity, x_PricingBlockSize")
    assert all(r[0] is None or r[0] == r[0].lower() for r in rows)  # ResourceId casing normalised
    assert all(r[2].strftime("%Y-%m") == month for r in rows)
    assert all(r[3] for r in rows)
    assert all(r[4] is None or r[4] == r[4].lower() for r in rows)
    assert {r[5] for r in rows} == {currency}


def test_tags_dates_and_units_of_the_ea_sample(tmp_path):
    write_local(tmp_path / "c", export_run("exp", "costs", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                           {"part_0_0001.csv": (FIX / "EA_ActualCost_Small.csv").read_bytes()}))
    cfg = config(tmp_path, str(tmp_path / "c" / "exp"))
    build(cfg, "2023-09")
    rows = line_items(cfg, "2023-09", "x_SourceRow, Tags, ChargePeriodStart, ChargePeriodEnd, PricingQuantity, "
                      "PricingUnit, x_PricingBlockSize, x_PricingUnitDescription, ListUnitPrice, ChargeCategory, "
                      "x_HasResource, ServiceName, ServiceCategory, RegionId, BillingPeriodStart, BillingPeriodEnd")
    by_row = {r[0]: r for r in rows}
    storage = by_row[2]  # Tags without outer braces, 10K block, MM/DD/YYYY
    assert json.loads(storage[1]) == {"costcenter": "1234", "env": "prod", "org": "trey", "application": "databricks",
                                      "databricks-environment": "true"}
    assert storage[2].isoformat() == "2023-09-04T00:00:00+00:00" and storage[3].isoformat() == "2023-09-05T00:00:00+00:00"
    assert storage[4] == Decimal("4") and storage[5] == "Units" and storage[6] == Decimal("10000")
    assert storage[7] == "10K" and storage[8] == Decimal("0.00001")  # 0.1 per 10K = 0.00001 per unit
    assert storage[11] == "Storage Accounts" and storage[12] == "Storage" and storage[13] == "eastus2"
    purchase = by_row[1]  # the reservation purchase: shared, not untagged
    assert purchase[9] == "Purchase" and purchase[10] is False
    assert purchase[14].isoformat() == "2023-09-01T00:00:00+00:00"
    assert purchase[15].isoformat() == "2023-10-01T00:00:00+00:00"


def test_old_manifest_and_no_manifest_layouts(tmp_path):
    # manifest 2021-01-01 (koku): blobs only, period and run time from the folders
    manifest = json.loads((FIX / "export-manifest-2021-01-01.json").read_text())
    blob = manifest["blobs"][0]["blobName"]  # cost/partitioned/20230101-20230131/202301041442/<guid>/000001.csv
    rows = (FIX / "azure_version_2.csv").read_text().replace("MC,2020-09-01,2020-09-30", "USD,2023-01-01,2023-01-31")
    rows = rows.replace("2020-09-", "2023-01-")
    base = tmp_path / "c"
    write_local(base, {blob: rows.encode(),
                       blob.rsplit("/", 1)[0] + "/manifest.json": (FIX / "export-manifest-2021-01-01.json").read_bytes()})
    cfg = config(tmp_path, str(base / "cost"))
    assert connector_for(cfg.sources[0]).months() == ["2023-01"]
    delivery, stats, _ = build(cfg, "2023-01")
    assert delivery.delivery_id == "73746dc5-5dcc-4b83-b340-bb1bd2b1ca30"
    assert stats.quarantined_rows == 0 and stats.rows == 5

    # exports older than manifests: one CSV per run in the period folder; the newest file wins
    base2 = tmp_path / "old"
    folder = base2 / "costreport" / "20190701-20190731"
    folder.mkdir(parents=True)
    (folder / "costreport_old.csv").write_bytes(b"\xef\xbb\xbf" + (FIX / "azure_camelCased.csv").read_bytes()[3:].split(b"\n")[0] + b"\n")
    import os
    import time
    os.utime(folder / "costreport_old.csv", (time.time() - 3600, time.time() - 3600))
    (folder / "costreport_new.csv").write_bytes((FIX / "azure_camelCased.csv").read_bytes())
    cfg2 = config(tmp_path, str(base2))
    plan = connector_for(cfg2.sources[0]).plan("2019-07")
    assert [o.key for o in plan.objects] == ["costreport/20190701-20190731/costreport_new.csv"]


def test_bad_rows_are_quarantined_with_file_and_row(tmp_path):
    text = (FIX / "EA_ActualCost_Small.csv").read_text(encoding="utf-8-sig")
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
    write_local(tmp_path / "c", export_run("exp", "costs", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                           {"part_0_0001.csv": out.getvalue().encode()}))
    cfg = config(tmp_path, str(tmp_path / "c" / "exp"))
    _, stats, alloc = build(cfg, "2023-09")
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
    assert stats.rows == 6 and stats.billed_cost == good.quantize(Q) == alloc.billed_cost


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
                      "x_PricingBlockSize, Tags, CommitmentDiscountStatus, x_SourceKind")
    assert rows[0][:5] == ("Azure FocusCost 1.0", "Microsoft", "Azure OpenAI", "rg-ai", Decimal(1000))
    assert json.loads(rows[0][5]) == {"team": "search", "project": "llm-serving"}
    assert rows[1][6] == "Used" and rows[1][7] == "azure_cost"


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
    from connectors.azure_cost import AzureCostManagement

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
    import connectors.azure_cost as azure_cost

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
        rsps.add(responses.GET, sas.split("?")[0], body=(FIX / "EA_AmortizedCost_Small.csv").read_bytes())
        delivery, stats, _ = build(cfg, "2023-09")
        body = json.loads(rsps.calls[0].request.body)
    assert body == {"metric": "AmortizedCost", "timePeriod": {"start": "2023-09-01", "end": "2023-09-30"}}
    assert delivery.layout == "azure-costdetails-AmortizedCost"
    assert [o["key"] for o in delivery.objects] == ["costdetails/001-part_1.csv"]
    assert "SECRET" not in (Path(delivery.local_dir) / "delivery.json").read_text()
    assert stats.rows == 28 and stats.effective_cost == csv_total(FIX / "EA_AmortizedCost_Small.csv", "Cost")
