"""The demo's Azure and GCP bills: deterministic, load without quarantine, tie out to the files."""

from __future__ import annotations

import csv
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import duckdb

from apportion import steps
from apportion.demo.generators.clouds import generate_cloud_demo
from apportion.lake import current_files
from apportion.models.config import load_config

REPO = Path(__file__).resolve().parent.parent
MONTHS = ["2026-09", "2026-10"]
Q = Decimal("0.000000000001")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_cloud_bills_are_deterministic_and_tie_out(tmp_path):
    lines = generate_cloud_demo(tmp_path / "a", MONTHS)
    generate_cloud_demo(tmp_path / "b", MONTHS)
    assert len(lines) == 2 and _digest(tmp_path / "a") == _digest(tmp_path / "b")
    demo = (REPO / "demo" / "apportion.yaml").read_text()
    assert "kind: azure_cost" in demo and "kind: gcp_billing" in demo
    cfg_path = tmp_path / "apportion.yaml"
    cfg_path.write_text(f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {REPO / 'demo' / 'taxonomy.yaml'}\nsources:\n"
                        f"  - name: azure-prod\n    kind: azure_cost\n    uri: {tmp_path / 'a' / 'demo-azure' / 'exports'}\n"
                        f"  - name: gcp-prod\n    kind: gcp_billing\n    uri: {tmp_path / 'a' / 'demo-gcp' / 'billing'}\n")
    cfg = load_config(cfg_path)
    for month in MONTHS:
        # Azure: the newest run's CSV is the bill
        az = cfg.sources[0]
        delivery = steps.land(cfg, az, month)
        stats = steps.build_line_items(cfg, az, delivery)
        with open(Path(delivery.local_dir) / delivery.objects[0]["key"], encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert stats.quarantined_rows == 0 and stats.rows == len(rows)
        assert stats.billed_cost == sum((Decimal(r["CostInBillingCurrency"]) for r in rows), Decimal(0)).quantize(Q)
        assert steps.allocate(cfg, az, month).billed_cost == stats.billed_cost
        # GCP: cost net of credits
        gcp = cfg.sources[1]
        delivery = steps.land(cfg, gcp, month)
        stats = steps.build_line_items(cfg, gcp, delivery)
        docs = [json.loads(line, parse_float=Decimal) for line in
                (Path(delivery.local_dir) / delivery.objects[0]["key"]).read_text().splitlines()]
        net = sum((d["cost"] + sum((c["amount"] for c in d["credits"]), Decimal(0)) for d in docs), Decimal(0))
        assert stats.quarantined_rows == 0 and stats.rows == len(docs)
        assert stats.billed_cost == net.quantize(Q) == steps.allocate(cfg, gcp, month).billed_cost
    con = duckdb.connect()
    lake = [str(f) for f in current_files(cfg.lake, "line_items")]
    ai = con.execute(
        f"SELECT x_SourceName, ServiceName, ServiceSubcategory, PricingUnit, count(*) FROM read_parquet({lake}) "
        "WHERE ServiceSubcategory = 'Generative AI' GROUP BY ALL ORDER BY 1").fetchall()
    assert [r[:4] for r in ai] == [("azure-prod", "Azure AI Services", "Generative AI", "Tokens"),
                                   ("gcp-prod", "Vertex AI", "Generative AI", "1000000 count")]
    gpus = con.execute(
        f"SELECT DISTINCT x_SourceName, x_InstanceType FROM read_parquet({lake}) "
        "WHERE x_InstanceType IS NOT NULL ORDER BY ALL").fetchall()
    assert gpus == [("azure-prod", "Standard_NC24ads_A100_v4"), ("azure-prod", "Standard_NC40ads_H100_v5"),
                    ("gcp-prod", "a3-highgpu-8g"), ("gcp-prod", "g2-standard-48")]


def test_three_clouds_and_focus_in_one_warehouse(tmp_path):
    """The shared samples of AWS, Azure, GCP and FOCUS in one warehouse: exact totals per source and month."""
    import shutil

    from tests.test_azure_cost import FIX as AZ
    from tests.test_azure_cost import export_run, write_local

    fixtures = REPO / "tests" / "fixtures"
    aws = tmp_path / "aws" / "cur" / "20241101-20241201"
    aws.mkdir(parents=True)
    shutil.copyfile(fixtures / "aws_cur" / "legacy-final.csv", aws / "cur-1.csv")
    write_local(tmp_path / "azure", export_run("x", "ea", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                               {"p.csv": (AZ / "ea-actual-cost.csv").read_bytes()}))
    (tmp_path / "gcp").mkdir()
    for p in (fixtures / "gcp_billing").glob("*.csv"):
        shutil.copyfile(p, tmp_path / "gcp" / p.name)
    (tmp_path / "focus").mkdir()
    for p in (fixtures / "focus").glob("*.csv"):
        shutil.copyfile(p, tmp_path / "focus" / p.name)
    cfg_path = tmp_path / "apportion.yaml"
    cfg_path.write_text(
        f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {REPO / 'demo' / 'taxonomy.yaml'}\nsources:\n"
        f"  - {{name: aws, kind: aws_cur, uri: {tmp_path / 'aws' / 'cur'}}}\n"
        f"  - {{name: azure, kind: azure_cost, uri: {tmp_path / 'azure' / 'x'}}}\n"
        f"  - {{name: gcp, kind: gcp_billing, uri: {tmp_path / 'gcp'}}}\n"
        f"  - {{name: gateway, kind: focus, uri: {tmp_path / 'focus'}}}\n")
    cfg = load_config(cfg_path)
    from apportion.connectors.registry import connector_for

    built = {}
    for source in cfg.sources:
        for month in connector_for(source).months():
            stats = steps.build_line_items(cfg, source, steps.land(cfg, source, month))
            assert stats.quarantined_rows == 0, (source.name, month, stats.quarantine_reasons)
            alloc = steps.allocate(cfg, source, month)
            assert alloc.billed_cost == stats.billed_cost and alloc.effective_cost == stats.effective_cost
            built[(source.name, month)] = stats.billed_cost
    steps.build_warehouse(cfg)
    assert steps.warehouse_breaches(cfg) == []
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    totals = {(s, m): b for s, m, b in con.execute(
        "SELECT x_SourceName, x_BillingMonth, sum(BilledCost) FROM allocations GROUP BY ALL").fetchall()}
    assert totals == built
    assert {r[0] for r in con.execute("SELECT DISTINCT ProviderName FROM line_items").fetchall()} >= {
        "AWS", "Microsoft", "Google Cloud"}
    # independent totals from the raw files
    assert built[("aws", "2024-11")] == Decimal("18.75")  # hand total in tests/fixtures/aws_cur/NOTES.md
    assert built[("azure", "2023-09")] == Decimal("1353.9035")  # hand total in tests/fixtures/azure_cost/NOTES.md
    assert built[("gateway", "2025-01")] == Decimal("37.5")
