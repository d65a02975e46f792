"""The demo's Azure and GCP bills: deterministic, load without quarantine, tie out to the files."""

from __future__ import annotations

import csv
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import duckdb

from apportion import ledger
from apportion.demo_clouds import generate_cloud_demo
from models.config import load_config

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
        delivery = ledger.land(cfg, az, month)
        stats = ledger.build_line_items(cfg, az, delivery)
        with open(Path(delivery.local_dir) / delivery.objects[0]["key"], encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert stats.quarantined_rows == 0 and stats.rows == len(rows)
        assert stats.billed_cost == sum((Decimal(r["CostInBillingCurrency"]) for r in rows), Decimal(0)).quantize(Q)
        assert ledger.allocate(cfg, az, month).billed_cost == stats.billed_cost
        # GCP: cost net of credits
        gcp = cfg.sources[1]
        delivery = ledger.land(cfg, gcp, month)
        stats = ledger.build_line_items(cfg, gcp, delivery)
        docs = [json.loads(line, parse_float=Decimal) for line in
                (Path(delivery.local_dir) / delivery.objects[0]["key"]).read_text().splitlines()]
        net = sum((d["cost"] + sum((c["amount"] for c in d["credits"]), Decimal(0)) for d in docs), Decimal(0))
        assert stats.quarantined_rows == 0 and stats.rows == len(docs)
        assert stats.billed_cost == net.quantize(Q) == ledger.allocate(cfg, gcp, month).billed_cost
    con = duckdb.connect()
    lake = cfg.lake / "line_items"
    ai = con.execute(
        f"SELECT x_SourceName, ServiceName, ServiceSubcategory, PricingUnit, count(*) FROM read_parquet('{lake}/*/*/*.parquet') "
        "WHERE ServiceSubcategory = 'Generative AI' GROUP BY ALL ORDER BY 1").fetchall()
    assert [r[:4] for r in ai] == [("azure-prod", "Azure AI Services", "Generative AI", "Tokens"),
                                   ("gcp-prod", "Vertex AI", "Generative AI", "1000000 count")]
    gpus = con.execute(
        f"SELECT DISTINCT x_SourceName, x_InstanceType FROM read_parquet('{lake}/*/*/*.parquet') "
        "WHERE x_InstanceType IS NOT NULL ORDER BY ALL").fetchall()
    assert gpus == [("azure-prod", "Standard_NC24ads_A100_v4"), ("azure-prod", "Standard_NC40ads_H100_v5"),
                    ("gcp-prod", "a3-highgpu-8g"), ("gcp-prod", "g2-standard-48")]
