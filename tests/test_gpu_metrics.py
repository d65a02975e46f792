"""GPU utilisation samples: DCGM exporter text and API exports, nvidia-smi CSV.

Fixtures in tests/fixtures/gpu_metrics are written for apportion (NOTES.md). Real nvidia-smi captures from an
H100 and dcgm-exporter's default counter list are read in place from the workplace's shared/data/gpu
(skipped when absent).
"""

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

from apportion import steps
from apportion.connectors.base import SourceError
from apportion.connectors.gpu_metrics import DEV
from apportion.connectors.registry import connector_for
from apportion.models.config import load_config
from tests.shared_data import shared_sample

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "gpu_metrics"


def project(tmp_path: Path, files: list[str | Path], options: dict) -> Path:
    """A project over copies of the files (names are fixtures; paths are real samples, copied at test time)."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    for f in files:
        src = f if isinstance(f, Path) else FIXTURES / f
        shutil.copy(src, folder / src.name)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml",
           "sources": [{"name": "gpu-util", "kind": "gpu_metrics", "uri": "metrics", "options": options}]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path / "apportion.yaml"


def build(config: Path, month: str):
    cfg = load_config(config)
    src = cfg.sources[0]
    steps.build_line_items(cfg, src, steps.land(cfg, src, month))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    li = steps.partition_dir(cfg, steps.LINE_ITEMS, src.name, month) / "data.parquet"
    q = steps.partition_dir(cfg, steps.QUARANTINE, src.name, month) / "rows.parquet"
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


SMI_LOOP_COLUMNS = ["timestamp", "index", "uuid", "utilization.gpu", "col5", "power.draw"]


def expected_from_loop(path: Path) -> dict[str, tuple[Decimal, Decimal]]:
    """GPU uuid -> observed GPU-hours and utilisation of a header-less loop file, computed independently."""
    series: dict[str, list] = {}
    for line in path.read_text().splitlines():
        ts, _index, uuid, util, *_ = (c.strip() for c in line.split(","))
        when = datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
        series.setdefault(uuid, []).append((when, int(util)))
    out = {}
    for uuid, samples in series.items():
        gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(samples, samples[1:])]
        med = median(gaps)
        durations = [min(g, 2 * med) for g in gaps] + [med]
        total = sum(durations)
        util = sum(d * u / 100 for d, (_, u) in zip(durations, samples)) / total
        out[uuid] = (Decimal(str(total)) / 3600, Decimal(str(round(util, 6))))
    return out


def test_nvidia_smi_loop_csv_two_gpus_with_a_hole(tmp_path):
    options = {"cluster": "hpc1", "hostname": "l40s-box", "nvidia_smi_columns": SMI_LOOP_COLUMNS}
    config = project(tmp_path, ["nvidia-smi-loop-l40s.csv"], options)
    assert connector_for(load_config(config).sources[0]).months() == ["2026-11"]
    rows, bad = build(config, "2026-11")
    assert bad == []
    got = {r["ResourceId"]: (r["ConsumedQuantity"], r["x_GpuUtilization"]) for r in rows}
    # by hand: 1 s samples at 0..9 s and 15..19 s; the 6 s hole after 9 s counts twice the median (2 s), the
    # last sample one median: 9 + 2 + 4 + 1 = 16 s per GPU. GPU 0 ramps 0 -> 100 % -> 0: busy
    # (5+30+65+90+100+100+100+2*100+100+100+55+10) % of a second = 9.55 s of 16 -> 0.596875;
    # GPU 1 holds ~12 %: 1.92 s of 16 -> 0.12
    assert got == {
        "gpu/hpc1/l40s-box/GPU-1f6a92c4-3d58-4e07-b9a2-5c8d0e71f3b6": (h(16), Decimal("0.596875")),
        "gpu/hpc1/l40s-box/GPU-a47d0e3b-9c21-46f8-8e5a-0b3f7c92d1e4": (h(16), Decimal("0.12")),
    }
    independent = expected_from_loop(FIXTURES / "nvidia-smi-loop-l40s.csv")
    for rid, (hours, util) in got.items():
        assert abs(hours - independent[rid.rsplit("/", 1)[1]][0]) < Decimal("1e-9")
        assert util == independent[rid.rsplit("/", 1)[1]][1]
    assert {(r["x_Node"], r["x_JobId"], r["x_Cluster"]) for r in rows} == {("l40s-box", None, "hpc1")}
    assert {r["ChargePeriodStart"].isoformat() for r in rows} == {"2026-11-18T00:00:00+00:00"}


def test_real_nvidia_smi_loop_csv_from_an_h100(tmp_path):
    real = shared_sample("gpu/nvidia-smi-loop.csv")
    options = {"cluster": "hpc1", "hostname": "h100-box", "nvidia_smi_columns": SMI_LOOP_COLUMNS}
    config = project(tmp_path, [real], options)
    months = connector_for(load_config(config).sources[0]).months()
    assert len(months) == 1
    rows, bad = build(config, months[0])
    assert bad == []
    ((uuid, (hours, util)),) = expected_from_loop(real).items()
    [row] = rows
    assert abs(row["ConsumedQuantity"] - hours) < Decimal("1e-9")
    assert row["x_GpuUtilization"] == util and 0 < util < 1  # a load ramp: neither idle nor flat out
    assert row["x_Node"] == "h100-box" and row["x_JobId"] is None
    assert row["ResourceId"] == f"gpu/hpc1/h100-box/{uuid}"


def test_nvidia_smi_query_gpu_csv_with_header(tmp_path):
    config = project(tmp_path, ["a100-node-07.csv"], {"timezone": "UTC"})
    assert connector_for(load_config(config).sources[0]).months() == ["2026-11"]
    rows, bad = build(config, "2026-11")
    # a MIG-enabled GPU reports no whole-GPU utilisation: visible in quarantine, not read as idle
    assert bad == [("a100-node-07.csv", 5, "a100-node-07 GPU GPU-e8a63d07-b2f1-4c98-a5d4-7f1b9c0e2d36: "
                                           "nvidia-smi: non-numeric value '[N/A]'")]
    assert [(r["x_GpuUtilization"], r["ConsumedQuantity"]) for r in rows] == [
        (Decimal("0.97"), h(30)), (Decimal("0.43"), h(30)), (Decimal(0), h(30))]  # ' %' units; one 30 s sample
    assert {r["x_GpuModel"] for r in rows} == {"a100-80gb"}  # 'NVIDIA A100-SXM4-80GB' from the name column: one GPU vocabulary
    assert {r["x_Node"] for r in rows} == {"a100-node-07"}  # host from the file name when no hostname option
    assert rows[0]["ResourceId"] == "gpu/default/a100-node-07/GPU-3b9c1f52-8e07-4d2a-b6a1-0c4e5d7f9a11"
    assert {r["ChargePeriodStart"].isoformat() for r in rows} == {"2026-11-30T00:00:00+00:00"}


def test_real_nvidia_smi_query_gpu_csv_with_header(tmp_path):
    real = shared_sample("gpu/nvidia-smi-query-gpu.csv")
    config = project(tmp_path, [real], {"timezone": "UTC"})
    (month,) = connector_for(load_config(config).sources[0]).months()
    rows, bad = build(config, month)
    assert bad == []
    [row] = rows
    assert row["x_GpuModel"] == "h100-80gb"  # 'NVIDIA H100 80GB HBM3' from the name column: one GPU vocabulary
    assert row["x_GpuUtilization"] == 0 and row["ConsumedQuantity"] == h(30)
    assert row["x_Node"] == "nvidia-smi-query-gpu"  # host from the file name when no hostname option


def test_nvidia_smi_local_time_zone_and_missing_columns(tmp_path):
    config = project(tmp_path, ["a100-node-07.csv"], {"timezone": "America/New_York"})
    # 2026/11/30 21:15 EST = 2026-12-01 02:15 UTC: another day and another month
    assert connector_for(load_config(config).sources[0]).months() == ["2026-12"]
    rows, _ = build(config, "2026-12")
    assert {r["ChargePeriodStart"].isoformat() for r in rows} == {"2026-12-01T00:00:00+00:00"}
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "host.csv").write_text("a, b\n1, 2\n")
    cfg = load_config(config)
    src = cfg.sources[0].model_copy(update={"uri": str(folder),
                                            "options": {"nvidia_smi_columns": ["timestamp", "index", "uuid"]}})
    with pytest.raises(SourceError, match="needs timestamp and utilization.gpu columns"):
        connector_for(src).months()


def test_util_metric_is_a_dcgm_exporter_default_counter_in_percent():
    """DCGM_FI_DEV_GPU_UTIL, which the connector divides by 100, is on by default and measured in %."""
    real = shared_sample("gpu/dcgm-exporter_default-counters.csv")
    fields = {}
    for line in real.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, help_text = (c.strip() for c in line.split(",", 2))
            fields[name] = (kind, help_text)
    assert fields[DEV][0] == "gauge" and "%" in fields[DEV][1]
    ours = {line.split("{")[0] for name in ("dcgm-exporter-scrapes.prom", "dcgm-gpu-node-2-20261014T120000Z.prom")
            for line in (FIXTURES / name).read_text().splitlines() if line.startswith("DCGM_FI_")}
    assert DEV in ours
