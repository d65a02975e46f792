"""GPU utilisation samples: DCGM exporter text and API exports, real nvidia-smi CSV from an H100."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from statistics import median

import duckdb
import pytest
import yaml

from apportion import ledger
from connectors.base import SourceError
from connectors.registry import connector_for
from models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "gpu"


def project(tmp_path: Path, files: list[str], options: dict) -> Path:
    folder = tmp_path / "metrics"
    folder.mkdir()
    for name in files:
        shutil.copy(FIXTURES / name, folder / name)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml",
           "sources": [{"name": "gpu-util", "kind": "gpu_metrics", "uri": "metrics", "options": options}]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path / "apportion.yaml"


def build(config: Path, month: str):
    cfg = load_config(config)
    src = cfg.sources[0]
    ledger.build_line_items(cfg, src, ledger.land(cfg, src, month))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    li = ledger.partition_dir(cfg, ledger.LINE_ITEMS, src.name, month) / "data.parquet"
    q = ledger.partition_dir(cfg, ledger.QUARANTINE, src.name, month) / "rows.parquet"
    rows = [dict(zip([d[0] for d in con.description], r))
            for r in con.execute(f"SELECT * FROM read_parquet('{li}') ORDER BY x_LineId").fetchall()]
    bad = con.execute(f"SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet('{q}') ORDER BY 1, 2").fetchall()
    con.close()
    return rows, bad


def h(seconds: int) -> Decimal:
    """GPU-hours as stored: DECIMAL(38,12)."""
    return (Decimal(seconds) / 3600).quantize(Decimal("0.000000000001"))


def test_dcgm_exposition_and_prometheus_export(tmp_path):
    files = ["dcgm-exporter-scrapes.prom", "dcgm-gpu-node-2-20261014T120000Z.prom", "prometheus-query-range.json"]
    config = project(tmp_path, files, {"cluster": "eks-ml"})
    assert connector_for(load_config(config).sources[0]).months() == ["2026-10"]
    rows, bad = build(config, "2026-10")
    got = {(r["x_Node"], r["x_JobId"], r["ChargePeriodStart"].day): (r["ConsumedQuantity"], r["x_GpuUtilization"])
           for r in rows}
    assert got == {
        # GR_ENGINE_ACTIVE wins over GPU_UTIL for the same GPU; 60 s scrapes split at midnight UTC
        ("gpu-node-1", "llm-server-7f9c4", 14): (h(120), Decimal("0.55")),
        ("gpu-node-1", "llm-server-7f9c4", 15): (h(180), Decimal("0.8")),
        # a Slurm job seen through dcgm-exporter's hpc_job label; GPU_UTIL in % becomes a 0..1 ratio
        ("gpu-node-1", "4243", 14): (h(120), Decimal("0.2")),
        ("gpu-node-1", "4243", 15): (h(180), Decimal("0.2")),
        # one scrape without sample timestamps: time from the file name, worth one scrape interval (30 s)
        ("gpu-node-2", "train-llama-0", 14): (h(30), Decimal("0.64")),
        # query_range, step 1 h: three samples = three hours
        ("ip-10-0-2-33", "ranker-5d8b6", 14): (Decimal(3), Decimal("0.5")),
    }
    for r in rows:
        assert r["x_UsageType"] == "gpu-observed" and r["ConsumedUnit"] == "GPU-Hours (observed)"
        assert r["x_CostBasis"] == "usage" and r["BilledCost"] == 0 and r["x_Cluster"] == "eks-ml"
    ranker = next(r for r in rows if r["x_JobId"] == "ranker-5d8b6")
    assert json.loads(ranker["Tags"]) == {"gpu_cluster": "eks-ml", "namespace": "search", "team": "search"}
    assert ranker["x_GpuModel"] == "a10g" and ranker["SubAccountId"] == "search"
    assert bad == [("dcgm-exporter-scrapes.prom", 13, "gpu-node-1 GPU GPU-cccc0000-0000-0000-0000-000000000000: "
                                                      "DCGM_FI_DEV_GPU_UTIL: non-numeric value 'NaN'")]


def expected_from_loop(path: Path) -> tuple[Decimal, Decimal]:
    """Observed GPU-hours and utilisation of the real loop file, computed independently."""
    samples = []
    for line in path.read_text().splitlines():
        ts, _index, _uuid, util, *_ = (c.strip() for c in line.split(","))
        samples.append((datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc), int(util)))
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(samples, samples[1:])]
    med = median(gaps)
    durations = [min(g, 2 * med) for g in gaps] + [med]
    total = sum(durations)
    util = sum(d * u / 100 for d, (_, u) in zip(durations, samples)) / total
    return Decimal(str(total)) / 3600, Decimal(str(round(util, 6)))


def test_real_nvidia_smi_loop_csv_from_an_h100(tmp_path):
    options = {"cluster": "hpc1", "hostname": "h100-box",
               "nvidia_smi_columns": ["timestamp", "index", "uuid", "utilization.gpu", "col5", "power.draw"]}
    config = project(tmp_path, ["nvidia-smi-loop.csv"], options)
    rows, bad = build(config, "2026-11")
    assert bad == []
    [row] = rows
    hours, util = expected_from_loop(FIXTURES / "nvidia-smi-loop.csv")
    assert abs(row["ConsumedQuantity"] - hours) < Decimal("1e-9")
    assert row["x_GpuUtilization"] == util
    assert row["x_Node"] == "h100-box" and row["x_JobId"] is None
    assert row["ResourceId"] == "gpu/hpc1/h100-box/GPU-00000000-1111-2222-3333-444444444444"


def test_real_nvidia_smi_query_gpu_csv_with_header(tmp_path):
    config = project(tmp_path, ["nvidia-smi-query-gpu.csv"], {"timezone": "UTC"})
    rows, bad = build(config, "2026-11")
    assert bad == []
    [row] = rows
    assert row["x_GpuModel"] == "h100-80gb-hbm3"  # 'NVIDIA H100 80GB HBM3' from the name column
    assert row["x_GpuUtilization"] == 0 and row["ConsumedQuantity"] == h(30)
    assert row["x_Node"] == "nvidia-smi-query-gpu"  # host from the file name when no hostname option


def test_nvidia_smi_local_time_zone_and_missing_columns(tmp_path):
    config = project(tmp_path, ["nvidia-smi-query-gpu.csv"], {"timezone": "America/New_York"})
    rows, _ = build(config, "2026-11")
    assert rows[0]["ChargePeriodStart"].isoformat() == "2026-11-27T00:00:00+00:00"  # 02:07 EST = 07:07 UTC
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "host.csv").write_text("a, b\n1, 2\n")
    cfg = load_config(config)
    src = cfg.sources[0].model_copy(update={"uri": str(folder),
                                            "options": {"nvidia_smi_columns": ["timestamp", "index", "uuid"]}})
    with pytest.raises(SourceError, match="needs timestamp and utilization.gpu columns"):
        connector_for(src).months()
