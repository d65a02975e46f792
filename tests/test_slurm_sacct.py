"""Slurm sacct source: parsing quirks, day split, rate card, idle capacity, quarantine, attribution."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import cli, steps
from apportion.connectors.base import SourceError
from apportion.connectors.registry import connector_for
from apportion.connectors.slurm_sacct import parse_alloc_tres, parse_elapsed, parse_gpu_util, unwrap
from apportion.models.config import load_config
from apportion.models.gpu_rates import GpuOptionsError, normalize_gpu_model, parse_gpu_options

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "slurm_sacct"
DAY = 86400


def make_project(tmp_path: Path, files: dict[str, str | Path], options: dict, taxonomy: Path | None = None) -> Path:
    sacct = tmp_path / "sacct"
    sacct.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, sacct / name)
        else:
            (sacct / name).write_text(content)
    shutil.copy(taxonomy or REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    cfg = {"warehouse": "data", "taxonomy": "taxonomy.yaml",
           "sources": [{"name": "hpc", "kind": "slurm_sacct", "uri": "sacct", "options": options}]}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp_path / "apportion.yaml"


def build(config: Path, month: str):
    cfg = load_config(config)
    src = cfg.sources[0]
    stats = steps.build_line_items(cfg, src, steps.land(cfg, src, month))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    li = steps.partition_dir(cfg, steps.LINE_ITEMS, src.name, month) / "data.parquet"
    q = steps.partition_dir(cfg, steps.QUARANTINE, src.name, month) / "rows.parquet"
    rows = [dict(zip([d[0] for d in con.description], r))
            for r in con.execute(f"SELECT * FROM read_parquet('{li}') ORDER BY x_LineId").fetchall()]
    bad = con.execute(f"SELECT x_SourceFile, x_SourceRow, reason FROM read_parquet('{q}') ORDER BY 1, 2").fetchall()
    con.close()
    return stats, rows, bad


def hours(rows, **where) -> Decimal:
    return sum((r["ConsumedQuantity"] for r in rows if all(r[k] == v for k, v in where.items())), Decimal(0))


BASE_OPTIONS = {
    "cluster": "hpc1",
    "timezone": "Europe/Berlin",
    "rates": [{"gpu_model": "a100*", "per_gpu_hour": "1.85"}, {"gpu_model": "h100*", "per_gpu_hour": "3.10"}],
}


# ------------------------------------------------------------------ field parsers
def test_alloc_tres_counts_typed_and_untyped_gpus_once_and_keeps_the_model():
    assert parse_alloc_tres("billing=16,cpu=16,gres/gpu:a100=2,gres/gpu=2,mem=32G,node=1") == [("a100", 2)]
    assert parse_alloc_tres("cpu=8,gres/gpu=4,mem=1T") == [(None, 4)]
    assert parse_alloc_tres("cpu=8,mem=100M,node=1") == []
    assert parse_alloc_tres("gres/gpu:a100=1,gres/gpu:v100=1,gres/gpu=2") == [("a100", 1), ("v100", 1)]
    assert parse_alloc_tres("gres/gpu:nvidia_h100_80gb_hbm3=8,gres/gpu=8") == [("nvidia_h100_80gb_hbm3", 8)]
    with pytest.raises(ValueError, match="unparseable AllocTRES"):
        parse_alloc_tres("cpu=8,gres/gpu:h100=x")
    with pytest.raises(ValueError, match="lists 4 GPUs but its typed entries sum to 2"):
        parse_alloc_tres("gres/gpu:a100=2,gres/gpu=4")


def test_elapsed_formats():
    assert parse_elapsed("1-14:17:59") == 137879
    assert parse_elapsed("04:00:00") == 14400
    assert parse_elapsed("23:08.358") == pytest.approx(1388.358)  # MM:SS.mmm as in TotalCPU
    assert parse_elapsed("3600") == 3600
    assert parse_elapsed("") is None and parse_elapsed("Unknown") is None
    with pytest.raises(ValueError):
        parse_elapsed("INVALID")


def test_json_number_wrapping_and_gpu_util():
    assert unwrap({"set": True, "infinite": False, "number": 5}) == 5
    assert unwrap({"set": False, "infinite": False, "number": 0}) is None
    assert unwrap({"set": True, "infinite": True, "number": 0}) is None
    assert unwrap(7) == 7
    assert parse_gpu_util("cpu=00:10:00,gres/gpumem=20500736K,gres/gpuutil=73") == Decimal("0.73")
    assert parse_gpu_util("cpu=00:10:00") is None


def test_gpu_model_normalisation():
    assert normalize_gpu_model("NVIDIA H100 80GB HBM3") == "h100-80gb"
    assert normalize_gpu_model("nvidia_a100-sxm4-80gb") == "a100-80gb"
    assert normalize_gpu_model("Tesla V100-SXM2-16GB") == "v100-16gb"
    assert normalize_gpu_model("a100") == "a100"
    assert normalize_gpu_model("  ") is None


# ------------------------------------------------------------------ parsable output
def test_parsable_with_header_steps_states_timezone_and_day_split(tmp_path):
    config = make_project(tmp_path, {"sacct-2026-10-31.txt": FIXTURES / "sacct-P-header-steps.txt"}, BASE_OPTIONS)
    assert connector_for(load_config(config).sources[0]).months() == ["2026-10", "2026-11"]
    stats, rows, bad = build(config, "2026-10")
    jobs = [r for r in rows if r["x_UsageType"] == "gpu-allocated"]
    # 4242 ran 22:00-02:00 Berlin (CET, UTC+1) on 2 A100: 21:00-24:00 UTC on Oct 31 = 6 GPU-hours in October;
    # the .batch/.extern steps repeat the allocation and are not counted again.
    j4242 = [r for r in jobs if r["x_JobId"] == "4242"]
    assert [(r["ChargePeriodStart"].isoformat(), r["ConsumedQuantity"]) for r in j4242] == [
        ("2026-10-31T00:00:00+00:00", Decimal("6"))]
    assert j4242[0]["x_PricedCost"] == Decimal("11.10") and j4242[0]["x_GpuHours"] == Decimal("6")
    assert j4242[0]["x_Node"] == "gpu-a01" and j4242[0]["x_Cluster"] == "hpc1" and j4242[0]["x_GpuModel"] == "a100"
    assert j4242[0]["x_GpuUtilization"] == Decimal("0.73")  # from the .batch step's gres/gpuutil
    assert json.loads(j4242[0]["SkuPriceDetails"]) == {"GpuCount": 2, "x_GpuModel": "a100"}
    assert json.loads(j4242[0]["Tags"]) == {"slurm_account": "ml-research", "slurm_user": "alice",
                                           "slurm_partition": "gpu-a100", "slurm_qos": "normal",
                                           "slurm_cluster": "hpc1"}
    assert j4242[0]["ResourceId"] == "slurm/hpc1/4242" and j4242[0]["SubAccountId"] == "ml-research"
    # 4243 ('CANCELLED by 10314909', Elapsed 1-14:17:59): 09:00 CEST Oct 2 -> 21:17:59 UTC Oct 3, 1 H100
    j4243 = [r for r in jobs if r["x_JobId"] == "4243"]
    assert [r["ConsumedQuantity"] for r in j4243] == [Decimal(17), Decimal("21.299722222222")]
    assert sum(r["ConsumedQuantity"] for r in j4243) == pytest.approx(Decimal(137879) / 3600, abs=Decimal("1e-11"))
    assert "CANCELLED by 10314909" in j4243[0]["ChargeDescription"]
    # pending (Start None) and CPU-only jobs are not GPU usage
    assert not {r["x_JobId"] for r in jobs} & {"4244", "4246"}
    for r in rows:
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"] == 0
        assert r["x_CostBasis"] == "usage" and r["ConsumedUnit"] == "GPU-Hours"
    # bad rows are quarantined with the job id; the rest of the month builds
    assert bad == [
        ("sacct-2026-10-31.txt", 6, "job 4245: unparseable AllocTRES 'cpu=8,gres/gpu:h100=x' (at 'gres/gpu:h100=x')"),
        ("sacct-2026-10-31.txt", 8, "job 4247: no rate for GPU model v100-16gb on cluster hpc1 on 2026-10-06"),
    ]
    assert stats.quarantined_rows == 2

    # November gets the other part of the job that crossed the month end
    _, rows_nov, bad_nov = build(config, "2026-11")
    assert [(r["x_JobId"], r["ConsumedQuantity"]) for r in rows_nov] == [("4242", Decimal(2))]
    assert bad_nov == []


def test_headerless_parsable_with_trailing_delimiter_partition_models_and_bad_elapsed(tmp_path):
    options = {**BASE_OPTIONS, "timezone": "UTC", "partition_gpu_models": {"gpu-a100*": "a100"}, "max_job_hours": 240}
    config = make_project(tmp_path, {"dump.txt": FIXTURES / "sacct-p-noheader.txt"}, options)
    _, rows, bad = build(config, "2026-10")
    assert [(r["x_JobId"], r["x_GpuModel"], r["ConsumedQuantity"]) for r in rows] == [
        ("5101", "h100-80gb", Decimal(8)), ("5102", "a100", Decimal(12))]
    assert rows[1]["x_PricedCost"] == Decimal("22.2")
    assert [b[1:] for b in bad] == [
        (3, "job 5103: negative elapsed time -3600 s"),
        (4, "job 5104: absurd elapsed time 264.0 h (more than max_job_hours=240)"),
    ]


def test_untyped_gpus_without_a_model_mapping_are_quarantined(tmp_path):
    config = make_project(tmp_path, {"dump.txt": FIXTURES / "sacct-p-noheader.txt"}, {**BASE_OPTIONS, "timezone": "UTC"})
    _, rows, bad = build(config, "2026-10")
    assert "5102" not in {r["x_JobId"] for r in rows}
    assert (2, "job 5102: GPU model unknown (AllocTRES has only untyped gres/gpu; set partition_gpu_models or "
               "default_gpu_model)") in [b[1:] for b in bad]


# ------------------------------------------------------------------ JSON output
@pytest.mark.parametrize("fixture", ["sacct-23.11.json", "sacct-24.05-wrapped.json"])
def test_sacct_json(tmp_path, fixture):
    config = make_project(tmp_path, {fixture: FIXTURES / fixture}, BASE_OPTIONS)
    _, rows, bad = build(config, "2026-10")
    assert bad == []
    got = {}
    for r in rows:
        got[r["x_JobId"]] = got.get(r["x_JobId"], Decimal(0)) + r["ConsumedQuantity"]
    if fixture == "sacct-23.11.json":
        # 6001: 4 A100 x 16 h (split at midnight UTC); 6002: array task 6000_7, 1 H100 x 1 h;
        # 6003 pending (start 0): nothing; 6004 running (end 0): start + elapsed = 2 h x 2 H100
        assert got == {"6001": Decimal(64), "6000_7": Decimal(1), "6004": Decimal(4)}
        by_day = {(r["x_JobId"], r["ChargePeriodStart"].day): r["ConsumedQuantity"] for r in rows}
        assert by_day[("6001", 20)] == Decimal(56) and by_day[("6001", 21)] == Decimal(8)
        assert json.loads(next(r for r in rows if r["x_JobId"] == "6004")["Tags"])["slurm_wckey"] == "llm-serving"
    else:
        assert got == {"7001": Decimal(4)}


def test_same_job_in_several_dumps_counts_once(tmp_path):
    header = "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|Cluster\n"
    running = header + "900|900|u|acct|p|RUNNING|2026-10-05T00:00:00|Unknown|36000|gres/gpu:a100=1,gres/gpu=1|hpc1\n"
    done = header + "900|900|u|acct|p|COMPLETED|2026-10-05T00:00:00|2026-10-06T00:00:00|86400|gres/gpu:a100=1,gres/gpu=1|hpc1\n"
    # sacct -T truncates Start/End to the dump window: two windows of one job add up
    win1 = header + "901|901|u|acct|p|RUNNING|2026-10-07T12:00:00|2026-10-08T00:00:00|43200|gres/gpu:a100=2,gres/gpu=2|hpc1\n"
    win2 = header + "901|901|u|acct|p|COMPLETED|2026-10-08T00:00:00|2026-10-08T06:00:00|21600|gres/gpu:a100=2,gres/gpu=2|hpc1\n"
    config = make_project(tmp_path, {"d1.txt": running, "d2.txt": done, "w1.txt": win1, "w2.txt": win2},
                          {**BASE_OPTIONS, "timezone": "UTC"})
    _, rows, bad = build(config, "2026-10")
    assert bad == []
    assert hours(rows, x_JobId="900") == Decimal(24)
    assert hours(rows, x_JobId="901") == Decimal(36)
    assert next(r for r in rows if r["x_JobId"] == "900")["x_SourceFile"] == "d2.txt"  # the latest record


# ------------------------------------------------------------------ rate card and idle capacity
def test_effective_dated_rates_cluster_specific_rates_and_idle_lines(tmp_path):
    header = "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|Cluster\n"
    text = header + (
        "1|1|u|research|p|COMPLETED|2026-10-14T12:00:00|2026-10-15T12:00:00|86400|gres/gpu:a100=4,gres/gpu=4|hpc1\n"
        "2|2|u|search|p|COMPLETED|2026-10-14T00:00:00|2026-10-14T12:00:00|43200|gres/gpu:h100=8,gres/gpu=8|hpc1\n"
    )
    options = {
        "cluster": "hpc1", "timezone": "UTC",
        "rates": [
            {"gpu_model": "a100", "per_gpu_hour": "2.00", "until": "2026-10-15"},
            {"gpu_model": "a100", "per_gpu_hour": "1.50", "from": "2026-10-15"},
            {"cluster": "hpc1", "gpu_model": "a100", "per_gpu_hour": "1.00", "from": "2026-10-15"},
            {"gpu_model": "h100*", "per_gpu_hour": "3.00"},
        ],
        "capacity": [{"gpu_model": "a100", "nodes": 1, "gpus_per_node": 8, "from": "2026-10-14", "until": "2026-10-16"},
                     {"gpu_model": "h100", "nodes": 1, "gpus_per_node": 8, "from": "2026-10-14", "until": "2026-10-15"}],
        "idle": {"owner": "shared"},
    }
    config = make_project(tmp_path, {"d.txt": text}, options)
    _, rows, bad = build(config, "2026-10")
    assert bad == []
    job1 = [(r["ChargePeriodStart"].day, r["ConsumedQuantity"], r["x_PricedCost"]) for r in rows if r["x_JobId"] == "1"]
    # Oct 14: generic rate 2.00; Oct 15: the hpc1-specific rate wins over the generic one in force
    assert job1 == [(14, Decimal(48), Decimal(96)), (15, Decimal(48), Decimal(48))]
    idle = {(r["x_GpuModel"], r["ChargePeriodStart"].day): r for r in rows if r["x_UsageType"] == "gpu-idle"}
    assert sorted(idle) == [("a100", 14), ("a100", 15), ("h100-80gb", 14)]
    assert idle[("a100", 14)]["ConsumedQuantity"] == 8 * 24 - 48
    assert idle[("a100", 14)]["x_PricedCost"] == (8 * 24 - 48) * 2
    assert idle[("h100-80gb", 14)]["ConsumedQuantity"] == 8 * 24 - 96
    assert all(r["x_HasResource"] is False for r in idle.values())  # 'shared': split by later rules
    # capacity + allocated = configured GPUs x 24 h, per model and day
    for (model, day), r in idle.items():
        allocated = sum(x["ConsumedQuantity"] for x in rows if x["x_UsageType"] == "gpu-allocated"
                        and x["x_GpuModel"] == model and x["ChargePeriodStart"].day == day)
        assert allocated + r["ConsumedQuantity"] == 8 * 24


def test_allocations_above_capacity_are_quarantined_not_negative(tmp_path):
    header = "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|Cluster\n"
    text = header + "1|1|u|research|p|COMPLETED|2026-10-14T00:00:00|2026-10-15T00:00:00|86400|gres/gpu:a100=16,gres/gpu=16|hpc1\n"
    options = {"cluster": "hpc1", "capacity": [{"gpu_model": "a100", "nodes": 1, "gpus_per_node": 8,
                                                "from": "2026-10-14", "until": "2026-10-15"}],
               "idle": {"owner": {"team": "research"}}}
    config = make_project(tmp_path, {"d.txt": text}, options)
    _, rows, bad = build(config, "2026-10")
    assert [r["x_UsageType"] for r in rows] == ["gpu-allocated"]
    assert rows[0]["x_PricedCost"] is None  # no rate card: GPU-hours only, nothing quarantined for it
    assert bad == [("config:capacity", 1, "cluster hpc1 a100 on 2026-10-14: allocated 384.000000000000 GPU-hours "
                                          "exceed the configured capacity of 192.000000000000")]


def test_option_errors_are_clear():
    with pytest.raises(GpuOptionsError, match=r"sources\[x\].options.rates\[1\].per_gpu_hour: per_gpu_hour 'abc' is not a number"):
        parse_gpu_options("x", {"rates": [{"gpu_model": "a100", "per_gpu_hour": 1}, {"gpu_model": "b", "per_gpu_hour": "abc"}]})
    with pytest.raises(GpuOptionsError, match="overlap"):
        parse_gpu_options("x", {"rates": [{"gpu_model": "a100", "per_gpu_hour": 1, "until": "2026-02-01"},
                                          {"gpu_model": "a100", "per_gpu_hour": 2, "from": "2026-01-15"}]})
    with pytest.raises(GpuOptionsError, match="owner must be 'shared'"):
        parse_gpu_options("x", {"idle": {"owner": "research"}})


def test_unknown_timezone_is_a_source_error(tmp_path):
    config = make_project(tmp_path, {"d.txt": FIXTURES / "sacct-p-noheader.txt"}, {"timezone": "Mars/Olympus"})
    with pytest.raises(SourceError, match="unknown time zone 'Mars/Olympus'"):
        connector_for(load_config(config).sources[0])


# ------------------------------------------------------------------ end to end: warehouse vs raw files
def independent_gpu_hours_by_account(path: Path, month: str) -> dict[str, Fraction]:
    """GPU-hours per account straight from a UTC `-P` file with header (allocation rows only), clipped to the month."""
    lines = path.read_text().splitlines()
    header = lines[0].split("|")
    y, m = int(month[:4]), int(month[5:])
    lo = datetime(y, m, 1, tzinfo=timezone.utc).timestamp()
    hi = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
    out: dict[str, Fraction] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("|")))
        if "." in row["JobID"] or row["Start"] in ("None", "Unknown"):
            continue
        gpus = [int(item.split("=")[1]) for item in row["AllocTRES"].split(",") if item.split("=")[0] == "gres/gpu"]
        if not gpus:
            continue
        start = datetime.fromisoformat(row["Start"] + "+00:00").timestamp()
        end = datetime.fromisoformat(row["End"] + "+00:00").timestamp()
        seconds = max(0.0, min(end, hi) - max(start, lo))
        out[row["Account"]] = out.get(row["Account"], Fraction(0)) + Fraction(int(seconds) * gpus[0], 3600)
    return out


def test_gpu_hours_per_team_in_the_warehouse_equal_an_independent_count(tmp_path, capsys):
    text = "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|Cluster\n"
    jobs = [("ml-platform", "a100", 2, "2026-10-01T03:17:11", "2026-10-03T01:01:01"),
            ("research", "h100", 8, "2026-10-30T22:13:07", "2026-11-01T05:00:00"),
            ("research", "a100", 1, "2026-10-12T10:00:00", "2026-10-12T10:00:07"),
            ("search", "h100", 3, "2026-09-30T23:00:00", "2026-10-01T01:30:30")]
    for i, (acct, model, n, start, end) in enumerate(jobs, start=1):
        el = int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
        text += f"{i}|{i}|u{i}|{acct}|p|COMPLETED|{start}|{end}|{el}|cpu=4,gres/gpu:{model}={n},gres/gpu={n}|hpc1\n"
        text += f"{i}.batch|{i}.batch||{acct}||COMPLETED|{start}|{end}|{el}|cpu=4,gres/gpu:{model}={n},gres/gpu={n}|hpc1\n"
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax["dimensions"]["team"]["keys"].append("slurm_account")
    (tmp_path / "tax.yaml").write_text(yaml.safe_dump(tax))
    config = make_project(tmp_path, {"jobs.txt": text}, {**BASE_OPTIONS, "timezone": "UTC"}, tmp_path / "tax.yaml")
    assert cli.main(["run", "--config", str(config), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()
    con = duckdb.connect(str(tmp_path / "data" / "apportion.duckdb"), read_only=True)
    got = dict(con.execute(
        "SELECT a.x_Team, sum(l.ConsumedQuantity) FROM allocations a JOIN line_items l "
        "USING (x_SourceName, x_BillingMonth, x_LineId) WHERE l.ConsumedUnit = 'GPU-Hours' "
        "AND l.x_UsageType = 'gpu-allocated' AND a.x_BillingMonth = '2026-10' GROUP BY 1").fetchall())
    con.close()
    expected = independent_gpu_hours_by_account(tmp_path / "sacct" / "jobs.txt", "2026-10")
    assert set(got) == set(expected) == {"ml-platform", "research", "search"}
    for team, value in expected.items():
        # each day piece is rounded half-up to 1e-12 GPU-hours
        assert abs(Fraction(got[team]) - value) <= Fraction(1, 10**12) * 5
