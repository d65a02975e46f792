"""GPU unit economics on a real warehouse: Slurm jobs priced by the rate card, DCGM utilisation joined to jobs."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import yaml

from apportion import cli
from apportion.steps.summaries import create_unit_economics

REPO = Path(__file__).resolve().parent.parent
GPU_FIXTURES = REPO / "tests" / "fixtures" / "gpu_metrics"

SACCT = """JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|NodeList|Cluster
4243|4243|bob|search|gpu|COMPLETED|2026-10-14T12:00:00|2026-10-15T12:00:00|86400|gres/gpu:h100=1,gres/gpu=1|gpu-node-1|hpc1
4300|4300|alice|ml-platform|gpu|COMPLETED|2026-10-14T00:00:00|2026-10-14T10:00:00|36000|gres/gpu:h100=2,gres/gpu=2|gpu-node-2|hpc1
"""


def test_unit_economics_waste_and_top_idle_jobs(tmp_path, capsys):
    (tmp_path / "sacct").mkdir()
    (tmp_path / "sacct" / "jobs.txt").write_text(SACCT)
    (tmp_path / "metrics").mkdir()
    shutil.copy(GPU_FIXTURES / "dcgm-exporter-scrapes.prom", tmp_path / "metrics")
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax["dimensions"]["team"]["keys"].append("slurm_account")
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax))
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml", "sources": [
        {"name": "hpc", "kind": "slurm_sacct", "uri": "sacct", "options": {
            "cluster": "hpc1", "rates": [{"gpu_model": "h100", "per_gpu_hour": "3.00"}],
            "capacity": [{"gpu_model": "h100", "nodes": 1, "gpus_per_node": 4, "from": "2026-10-14", "until": "2026-10-16"}],
            "idle": {"owner": {"team": "research"}}}},
        {"name": "dcgm", "kind": "gpu_metrics", "uri": "metrics", "options": {"cluster": "hpc1"}},
    ]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the DCGM file also has a NaN sample: quarantined, so the run exits 3
    assert cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10", "--json"]) == 3
    capsys.readouterr()

    db = tmp_path / "copy.duckdb"
    shutil.copy(tmp_path / "data" / "apportion.duckdb", db)
    con = duckdb.connect(str(db))
    create_unit_economics(con, "gpu")

    econ = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT x_Team, x_GpuModel, allocated_gpu_hours, idle_gpu_hours, measured_gpu_hours, utilization, "
        "unused_gpu_hours, priced_cost, idle_cost, cost_per_gpu_hour FROM gpu_unit_economics "
        "WHERE x_BillingMonth = '2026-10'").fetchall()}
    # search: job 4243, 24 GPU-hours at $3, DCGM says 20 % busy (GPU_UTIL via the hpc_job label)
    assert econ[("search", "h100-80gb")] == (Decimal(24), Decimal(0), Decimal(24), Decimal("0.2"), Decimal("19.2"),
                                        Decimal(72), Decimal("57.6"), Decimal(3))
    # ml-platform: 20 GPU-hours, no utilisation measured -> no waste figure
    assert econ[("ml-platform", "h100-80gb")][:5] == (Decimal(20), Decimal(0), Decimal(0), None, None)
    # research owns the idle line: 4 GPUs x 48 h - 44 allocated
    assert econ[("research", "h100-80gb")][:2] == (None, Decimal(4 * 48 - 44))
    assert econ[("research", "h100-80gb")][6] == Decimal((4 * 48 - 44) * 3)  # idle cost = its priced cost

    top = con.execute("SELECT x_JobId, x_Team, unused_gpu_hours, idle_cost, idle_cost_rank FROM gpu_top_idle_jobs").fetchall()
    assert top == [("4243", "search", Decimal("19.2"), Decimal("57.6"), 1)]
    waste = dict(con.execute("SELECT x_JobId, utilization FROM gpu_job_waste").fetchall())
    assert waste == {"4243": Decimal("0.2"), "4300": None}
    # GPU-hours are never double counted with the observed rows
    total = con.execute("SELECT sum(gpu_hours) FROM gpu_usage").fetchone()[0]
    assert total == 4 * 48
    con.close()


def test_unit_economics_on_a_warehouse_without_gpu_sources(tmp_path, capsys):
    from tests.test_allocation import write_delivery

    write_delivery(tmp_path / "bucket")
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    assert cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()
    db = tmp_path / "copy.duckdb"
    shutil.copy(tmp_path / "data" / "apportion.duckdb", db)
    con = duckdb.connect(str(db))
    create_unit_economics(con, "gpu")
    for table in ("gpu_usage", "gpu_unit_economics", "gpu_job_waste", "gpu_top_idle_jobs"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    con.close()
