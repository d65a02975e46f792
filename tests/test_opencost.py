"""OpenCost /allocation source, against a real local HTTP server replaying recorded responses."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.connectors import opencost
from apportion.connectors.base import SourceError
from apportion.connectors.registry import connector_for
from apportion.models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "opencost"


@pytest.fixture(autouse=True)
def _today(monkeypatch):
    from datetime import date

    monkeypatch.setattr(opencost, "_today", lambda: date(2026, 11, 27))


def project(tmp_path: Path, uri: str, options: dict | None = None) -> Path:
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml",
           "sources": [{"name": "k8s", "kind": "opencost", "uri": uri, "options": options or {}}]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path / "apportion.yaml"


def build(config: Path, month: str = "2026-10"):
    cfg = load_config(config)
    src = cfg.sources[0]
    delivery = steps.land(cfg, src, month)
    stats = steps.build_line_items(cfg, src, delivery)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    li = steps.partition_dir(cfg, steps.LINE_ITEMS, src.name, month) / "data.parquet"
    q = steps.partition_dir(cfg, steps.QUARANTINE, src.name, month) / "rows.parquet"
    rows = [dict(zip([d[0] for d in con.description], r))
            for r in con.execute(f"SELECT * FROM read_parquet('{li}') ORDER BY x_LineId").fetchall()]
    bad = con.execute(f"SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet('{q}') ORDER BY 1, 2").fetchall()
    con.close()
    return delivery, stats, rows, bad


def test_allocation_api_over_http(tmp_path, opencost_server, monkeypatch):
    for name in ("allocation-2026-10-14.json", "allocation-2026-10-15.json"):
        shutil.copy(FIXTURES / name, opencost_server.folder / name)
    monkeypatch.setenv("OPENCOST_BEARER_TOKEN", "s3cret-token-value")
    config = project(tmp_path, opencost_server.base_url, {"cluster": "eks-ml", "idle": {"owner": "shared"}})
    delivery, stats, rows, bad = build(config)

    # one query per day of the month, with the parameters that make GPU-hours and idle come back per day
    assert len(opencost_server.requests) == 31
    first = opencost_server.requests[0]
    assert first["path"] == "/allocation" and first["authorization"] == "Bearer s3cret-token-value"
    assert first["params"] == {"window": "2026-10-01T00:00:00Z,2026-10-02T00:00:00Z", "step": "1d",
                               "aggregate": "namespace,pod", "accumulate": "false", "includeIdle": "true",
                               "shareIdle": "false", "idleByNode": "true"}
    # raw pages landed unchanged; the token is nowhere in the raw zone
    landed = Path(delivery.local_dir)
    assert (landed / "allocation-2026-10-14.json").read_bytes() == (FIXTURES / "allocation-2026-10-14.json").read_bytes()
    assert len([p for p in landed.iterdir() if p.name.startswith("allocation-")]) == 31
    assert all("s3cret" not in p.read_text() for p in landed.iterdir())

    assert bad == [] and stats.quarantined_rows == 0
    pods = {r["x_JobId"]: r for r in rows if r["x_UsageType"] == "gpu-allocated"}
    assert set(pods) == {"llm-server-7f9c4", "train-llama-0", "ranker-5d8b6"}  # the CPU-only pod is not GPU usage
    llm = pods["llm-server-7f9c4"]
    assert llm["ConsumedQuantity"] == 96 and llm["ConsumedUnit"] == "GPU-Hours"
    assert llm["x_PricedCost"] == Decimal("1179.84") and llm["BilledCost"] == 0 and llm["x_CostBasis"] == "usage"
    assert llm["x_GpuModel"] == "h100-80gb" and llm["x_GpuUtilization"] == Decimal("0.71")
    assert llm["x_Node"] == "i-0a1b2c3d4e5f60718" and llm["x_Cluster"] == "eks-ml"
    assert llm["ResourceId"] == "k8s/eks-ml/ml-serving/llm-server-7f9c4" and llm["SubAccountId"] == "ml-serving"
    assert json.loads(llm["Tags"]) == {"app": "llm-server", "k8s_cluster": "eks-ml", "k8s_controller": "llm-server",
                                       "kubernetes_io_metadata_name": "ml-serving", "namespace": "ml-serving",
                                       "node_kubernetes_io_instance_type": "p5.48xlarge",
                                       "pod_template_hash": "7f9c4", "team": "ml-platform", "workload": "inference"}
    assert llm["x_InstanceType"] == "p5.48xlarge" and llm["x_GpuHours"] == 96
    assert llm["ChargePeriodStart"].isoformat() == "2026-10-14T00:00:00+00:00"
    # a namespace label is a tag too (pod labels win when both have the key)
    assert json.loads(pods["ranker-5d8b6"]["Tags"])["team"] == "search"
    assert json.loads(llm["SkuPriceDetails"]) == {"GpuCount": 4, "x_GpuModel": "h100-80gb"}

    idle = {r["x_Node"]: r for r in rows if r["x_UsageType"] == "gpu-idle"}
    assert set(idle) == {"i-0a1b2c3d4e5f60718", "i-0f9e8d7c6b5a49382"}
    p5 = idle["i-0a1b2c3d4e5f60718"]
    assert p5["ConsumedQuantity"] == 48 and p5["x_PricedCost"] == Decimal("589.92")
    assert p5["x_GpuModel"] == "h100-80gb"  # from the GPU pods on the same node
    assert p5["x_InstanceType"] == "p5.48xlarge" and p5["x_GpuHours"] == 48
    assert p5["x_HasResource"] is False and p5["x_JobId"] is None
    # pods + idle = the node's GPUs x 24 h
    on_p5 = sum(r["ConsumedQuantity"] for r in rows if r["x_Node"] == "i-0a1b2c3d4e5f60718")
    assert on_p5 == 8 * 24


def test_failed_page_fails_the_month_with_the_day_and_status(tmp_path, opencost_server):
    shutil.copy(FIXTURES / "allocation-2026-10-14.json", opencost_server.folder / "allocation-2026-10-14.json")
    opencost_server.fail["2026-10-20"] = 503
    config = project(tmp_path, opencost_server.base_url)
    cfg = load_config(config)
    with pytest.raises(SourceError, match=r"/allocation for 2026-10-20: HTTP 503"):
        steps.land(cfg, cfg.sources[0], "2026-10")
    assert not (cfg.raw / "k8s" / "2026-10" / "LANDED").exists()


def test_invalid_response_is_a_source_error(tmp_path, opencost_server):
    (opencost_server.folder / "allocation-2026-10-03.json").write_text('{"code": 200, "data": [{"a": ')
    config = project(tmp_path, opencost_server.base_url)
    cfg = load_config(config)
    with pytest.raises(SourceError, match="allocation-2026-10-03.json is not valid JSON"):
        steps.land(cfg, cfg.sources[0], "2026-10")
    (opencost_server.folder / "allocation-2026-10-03.json").write_text('{"code": 500, "message": "boom", "data": []}')
    with pytest.raises(SourceError, match="has code 500: boom"):
        steps.land(cfg, cfg.sources[0], "2026-10")


def test_folder_of_recorded_responses_label_aggregation_rate_card_and_idle_owner(tmp_path):
    folder = tmp_path / "recorded"
    folder.mkdir()
    shutil.copy(FIXTURES / "allocation-2026-10.json", folder / "allocation-2026-10.json")
    options = {"aggregate": "namespace,label:team", "idle_by_node": False, "default_gpu_model": "NVIDIA H100 80GB HBM3",
               "rates": [{"gpu_model": "h100*", "per_gpu_hour": "2.50"}],
               "idle": {"owner": {"team": "ml-platform", "workload": "general"}}}
    config = project(tmp_path, "recorded", options)
    assert connector_for(load_config(config).sources[0]).months() == ["2026-10"]
    _, _, rows, bad = build(config)
    assert bad == []
    got = [(r["ChargePeriodStart"].day, r["ResourceName"], r["ConsumedQuantity"], r["x_PricedCost"]) for r in rows]
    assert got == [(1, "__idle__", 72, 180), (1, "ml-serving/ml-platform", 96, 240), (1, "research/__unallocated__", 24, 60),
                   (2, "__idle__", 72, 180), (2, "ml-serving/ml-platform", 96, 240), (2, "research/__unallocated__", 24, 60)]
    # the label value comes from the aggregate key; __unallocated__ means the label is not set
    assert json.loads(rows[1]["Tags"])["team"] == "ml-platform"
    assert "team" not in json.loads(rows[2]["Tags"])
    assert json.loads(rows[0]["Tags"]) == {"team": "ml-platform", "workload": "general", "k8s_cluster": "eks-ml"}
    assert rows[0]["x_HasResource"] is True


def test_bad_allocations_are_quarantined_and_unknown_models_without_rate(tmp_path):
    folder = tmp_path / "recorded"
    folder.mkdir()
    doc = json.loads((FIXTURES / "allocation-2026-10-14.json").read_text())
    doc["data"][0]["research/train-llama-0"]["gpuHours"] = "lots"
    (folder / "allocation-2026-10-14.json").write_text(json.dumps(doc))
    options = {"rates": [{"gpu_model": "h100*", "per_gpu_hour": "2.50"}]}
    config = project(tmp_path, str(folder), options)
    _, stats, rows, bad = build(config)
    assert bad == [
        ("allocation-2026-10-14.json", 5, "allocation research/train-llama-0: non-numeric gpuHours 'lots'"),
        ("allocation-2026-10-14.json", 6, "allocation search/ranker-5d8b6: no rate for GPU model a10g on cluster "
                                          "eks-ml on 2026-10-14"),
    ]
    assert {r["x_JobId"] for r in rows if r["x_UsageType"] == "gpu-allocated"} == {"llm-server-7f9c4"}
    assert stats.rows == len(rows)


def test_capacity_option_is_rejected_for_opencost(tmp_path):
    config = project(tmp_path, "recorded", {"capacity": [{"gpu_model": "a100", "nodes": 1, "gpus_per_node": 8}]})
    with pytest.raises(SourceError, match="OpenCost reports idle GPUs itself"):
        connector_for(load_config(config).sources[0])


# ------------------------------------------------------------------ one GPU vocabulary across sources
def _pod(name: str, gpu_hours: int, gpu_cost: int, gpu_model: str | None) -> dict:
    ns, pod = name.split("/")
    alloc = {"name": name, "properties": {
        "cluster": "eks-ml", "node": "ip-10-0-1-17.ec2.internal", "providerID": "aws:///us-east-1a/i-0a1b2c3d4e5f60718",
        "namespace": ns, "pod": pod, "labels": {"team": "research", "workload": "training", "node_kubernetes_io_instance_type": "p5.48xlarge"}},
        "window": {"start": "2026-10-14T00:00:00Z", "end": "2026-10-15T00:00:00Z"},
        "start": "2026-10-14T00:00:00Z", "end": "2026-10-15T00:00:00Z", "minutes": 1440,
        "gpuCount": gpu_hours // 24 or 1, "gpuHours": gpu_hours, "gpuCost": gpu_cost, "gpuCostAdjustment": 0}
    if gpu_model:
        alloc["gpuAllocation"] = {"gpuModel": gpu_model}
    return alloc


def test_one_h100_from_slurm_dcgm_and_opencost_has_one_name_and_one_unit_economics_row(tmp_path, capsys):
    """Slurm says `h100`, DCGM and OpenCost say 'NVIDIA H100 80GB HBM3', an OpenCost pod without gpuModel runs on a
    p5.48xlarge: all four are the H100 80 GB (models/reference/gpu_models.csv), and the rate `h100*` prices it."""
    from apportion import cli
    from apportion.steps.summaries import create_unit_economics

    (tmp_path / "sacct").mkdir()
    (tmp_path / "sacct" / "jobs.txt").write_text(
        "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|NodeList|Cluster\n"
        "7001|7001|ann|research|gpu|COMPLETED|2026-10-14T12:00:00|2026-10-14T14:00:00|7200|"
        "gres/gpu:h100=2,gres/gpu=2|gpu-node-1|hpc1\n")
    (tmp_path / "metrics").mkdir()
    labels = ('gpu="0",UUID="GPU-0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-1",hpc_job="7001"')
    t0 = 1792000800000  # 2026-10-14T12:00:00Z in ms
    (tmp_path / "metrics" / "dcgm.prom").write_text(
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        + "".join(f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} 50 {t0 + i * 60_000}\n" for i in range(3)))
    (tmp_path / "k8s").mkdir()
    pods = [_pod("ml/serve-1", 8, 20, "NVIDIA H100 80GB HBM3"), _pod("ml/embed-1", 4, 10, None)]
    (tmp_path / "k8s" / "allocation-2026-10-14.json").write_text(
        json.dumps({"code": 200, "data": [{p["name"]: p for p in pods}]}))
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml", "sources": [
        {"name": "hpc", "kind": "slurm_sacct", "uri": "sacct",
         "options": {"cluster": "hpc1", "timezone": "UTC", "rates": [{"gpu_model": "h100*", "per_gpu_hour": "3.00"}]}},
        {"name": "dcgm", "kind": "gpu_metrics", "uri": "metrics", "options": {"cluster": "hpc1"}},
        {"name": "k8s", "kind": "opencost", "uri": "k8s", "options": {"cluster": "eks-ml", "idle_by_node": False}},
    ]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()

    db = tmp_path / "copy.duckdb"
    shutil.copy(tmp_path / "data" / "apportion.duckdb", db)
    con = duckdb.connect(str(db))
    names = con.execute("SELECT x_SourceKind, x_UsageType, x_GpuModel, SkuPriceDetails ->> '$.x_GpuModel' "
                        "FROM line_items ORDER BY ALL").fetchall()
    assert {(k, u) for k, u, _, _ in names} == {("slurm_sacct", "gpu-allocated"), ("opencost", "gpu-allocated"),
                                                ("gpu_metrics", "gpu-observed")}
    assert {(m, s) for _, _, m, s in names} == {("h100-80gb", "h100-80gb")}
    create_unit_economics(con, "gpu")
    econ = con.execute("SELECT x_Team, x_GpuModel, gpu_hours, priced_cost FROM gpu_unit_economics "
                       "WHERE x_BillingMonth = '2026-10'").fetchall()
    # one row: Slurm 2 GPUs x 2 h at the h100* rate $3.00 = $12 + OpenCost's own estimates $20 + $10
    assert econ == [("research", "h100-80gb", Decimal(2 * 2 + 8 + 4), Decimal(2 * 2 * 3 + 20 + 10))]
