"""Savings advice (issue 12): each kind checked against numbers computed by hand from tiny inputs that go
through the real steps (land -> line items -> allocate -> warehouse)."""

from __future__ import annotations

import json
import shutil
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import cli, steps
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from tests.test_litellm import spend_row, write_csv

REPO = Path(__file__).resolve().parent.parent
MONTH = "2026-10"
CENT = Decimal("0.01")


def cents(x) -> Decimal:
    return Decimal(x).quantize(CENT, rounding=ROUND_HALF_EVEN)


def project(tmp_path: Path, sources: list[dict], savings: dict | None) -> Path:
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    doc = {"warehouse": "data", "taxonomy": "taxonomy.yaml", "sources": sources}
    if savings is not None:
        doc["savings"] = savings
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path / "apportion.yaml"


def run_all(config: Path, month: str = MONTH):
    cfg = load_config(config)
    for src in cfg.sources:
        steps.build_line_items(cfg, src, steps.land(cfg, src, month))
        steps.allocate(cfg, src, month)
    steps.build_warehouse(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    cur = con.execute("SELECT * FROM recommendations ORDER BY kind, scope_id")
    names = [d[0] for d in cur.description]
    recs = [dict(zip(names, r)) for r in cur.fetchall()]
    skipped = con.execute("SELECT kind, scope, reason FROM savings_skipped ORDER BY ALL").fetchall()
    con.close()
    return cfg, recs, skipped


def ev(rec) -> dict:
    return {k: Decimal(v) if isinstance(v, str) and v.replace(".", "", 1).replace("-", "", 1).isdigit() else v
            for k, v in json.loads(rec["evidence"]).items()}


# ------------------------------------------------------------------------------------------ LLM kinds
PRICES = [  # the customer's negotiated prices (USD per 1M tokens); the mini entry first (gpt-4o* matches it too)
    {"name": "mini", "provider": "openai", "model": "gpt-4o-mini*",
     "prices": {"input": "0.15", "output": "0.60", "cache_read": "0.075"}},
    {"name": "flagship", "provider": "openai", "model": "gpt-4o*",
     "prices": {"input": "2.50", "output": "10.00", "cache_read": "1.25"}},
]


def llm_rows():
    extra = {"project": "chatbot", "workload": "inference"}
    kw = dict(team_alias="search", key_alias="search-prod", extra=extra)
    return [
        # two simple requests (input <= 200k, output <= 50k) and one that is not, all gpt-4o, same day and key
        spend_row("a1", "2026-10-03 09:00:00", "gpt-4o-2024-08-06", "openai", 100_000, 20_000, **kw),
        spend_row("a2", "2026-10-03 10:00:00", "gpt-4o-2024-08-06", "openai", 150_000, 30_000, **kw),
        spend_row("a3", "2026-10-03 11:00:00", "gpt-4o-2024-08-06", "openai", 400_000, 10_000, **kw),
        # a premium model whose tier names a model nobody prices: skipped with the reason, never priced at 0
        spend_row("b1", "2026-10-04 09:00:00", "gpt-4.1", "openai", 1_000, 100, **kw),
    ]


def llm_project(tmp_path, savings):
    write_csv(tmp_path / "litellm" / "spend-2026-10.csv", llm_rows())
    src = {"name": "gw", "kind": "litellm", "uri": "litellm", "options": {"price_overrides": PRICES}}
    return project(tmp_path, [src], savings)


LLM_SAVINGS = {
    "model_tiers": [{"provider": "openai", "premium": "gpt-4o", "cheaper": "gpt-4o-mini"},
                    {"provider": "openai", "premium": "gpt-4.1", "cheaper": "gpt-nonexistent-9"}],
    "simple_requests": {"max_input_tokens": 200_000, "max_output_tokens": 50_000},
    "cache_read_target_share": "0.5",
    "prompt_tokens_target": 100_000,
}


def test_llm_kinds_against_hand_computed_numbers(tmp_path):
    cfg, recs, skipped = run_all(llm_project(tmp_path, LLM_SAVINGS))
    by = {(r["kind"], r["current"].split(":")[0]): r for r in recs}

    # smaller model: simple requests a1 + a2 = 250,000 input and 50,000 output tokens;
    # 0.25 x (2.50 - 0.15) + 0.05 x (10.00 - 0.60) = 0.5875 + 0.47 = 1.0575
    sm = by[("smaller_model", "gpt-4o")]
    assert sm["suggested"] == "gpt-4o-mini"
    assert (sm["team"], sm["project"], sm["workload"], sm["scope_id"]) == ("search", "chatbot", "inference",
                                                                           "search-prod")
    assert sm["estimated_monthly_saving"] == cents("1.0575") == Decimal("1.06")
    e = ev(sm)
    assert (e["simple_requests"], e["requests"], e["input_tokens"], e["output_tokens"]) == (2, 3, 250_000, 50_000)
    assert e["input_price_per_1m"] == Decimal("2.5") and e["input_cheaper_price_per_1m"] == Decimal("0.15")
    recomputed = (e["input_tokens"] * (e["input_price_per_1m"] - e["input_cheaper_price_per_1m"])
                  + e["output_tokens"] * (e["output_price_per_1m"] - e["output_cheaper_price_per_1m"])) / 1_000_000
    assert cents(recomputed) == sm["estimated_monthly_saving"]
    assert sm["confidence"] == "low" and "2 requests" in sm["confidence_reason"]

    # shorter prompts: 650,000 input tokens over 3 requests, target 100,000 per request:
    # (650,000 - 3 x 100,000) x 2.50 / 1M = 0.875
    sp = by[("shorter_prompts", "gpt-4o")]
    assert sp["estimated_monthly_saving"] == cents("0.875") == Decimal("0.88")
    e = ev(sp)
    assert (e["requests"], e["input_tokens"], e["target_tokens_per_request"]) == (3, 650_000, 100_000)

    # prompt caching: no cache reads, target share 0.5: 325,000 tokens could be reads at 2.50 - 1.25
    pc = by[("prompt_caching", "gpt-4o")]
    assert pc["estimated_monthly_saving"] == cents(Decimal("325000") * Decimal("1.25") / 1_000_000) == Decimal("0.41")
    assert ev(pc)["extra_cache_read_tokens"] == 325_000

    # the tier naming an unknown model: skipped with the reason; nothing estimated for gpt-4.1 -> gpt-nonexistent-9
    assert not [r for r in recs if r["suggested"] == "gpt-nonexistent-9"]
    assert any(k == "smaller_model" and "gpt-nonexistent-9" in reason for k, _, reason in skipped)


def test_savings_cli_json_and_table(tmp_path, capsys):
    config = llm_project(tmp_path, LLM_SAVINGS)
    run_all(config)
    capsys.readouterr()
    assert cli.main(["savings", "--config", str(config), "--month", MONTH, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    kinds = {f["kind"]: Decimal(f["estimated_monthly_saving"]) for f in doc["recommendations"]}
    assert kinds == {"smaller_model": Decimal("1.06"), "shorter_prompts": Decimal("0.88"),
                     "prompt_caching": Decimal("0.41")}
    assert Decimal(doc["total"]) == Decimal("2.35")
    assert any("gpt-nonexistent-9" in s["reason"] for s in doc["skipped"])
    assert cli.main(["savings", "--config", str(config), "--month", MONTH]) == 0
    text = capsys.readouterr().out
    assert "smaller_model" in text and "1.06" in text


def test_savings_config_errors_name_the_line(tmp_path):
    config = llm_project(tmp_path, {"gpu_utilisation_threshold": "2", "model_tiers": [{"provider": "openai"}]})
    with pytest.raises(ConfigError) as err:
        load_config(config)
    text = str(err.value)
    lines = config.read_text().splitlines()
    thr = next(i for i, line in enumerate(lines, 1) if "gpu_utilisation_threshold" in line)
    assert f"line {thr}: savings.gpu_utilisation_threshold" in text
    assert "savings.model_tiers[0].premium" in text


# ------------------------------------------------------------------------------------------ GPUs
SACCT_HEADER = "JobIDRaw|JobID|User|Account|Partition|State|Start|End|ElapsedRaw|AllocTRES|Cluster|TRESUsageInTot\n"


def test_idle_and_oversized_gpus_against_hand_computed_numbers(tmp_path):
    text = SACCT_HEADER + (
        # job 1: 4 A100 for 12 h = 48 GPU-hours at 2.00, utilisation 10 %
        "1|1|u|research|p|COMPLETED|2026-10-14T12:00:00|2026-10-15T00:00:00|43200|gres/gpu:a100=4,gres/gpu=4|hpc1|\n"
        "1.batch|1.batch||research||COMPLETED|2026-10-14T12:00:00|2026-10-15T00:00:00|43200|gres/gpu:a100=4,gres/gpu=4"
        "|hpc1|gres/gpuutil=10\n"
        # job 2: 2 A100 for 6 h = 12 GPU-hours, utilisation 90 %: above the threshold, no finding
        "2|2|u|search|p|COMPLETED|2026-10-14T00:00:00|2026-10-14T06:00:00|21600|gres/gpu:a100=2,gres/gpu=2|hpc1|\n"
        "2.batch|2.batch||search||COMPLETED|2026-10-14T00:00:00|2026-10-14T06:00:00|21600|gres/gpu:a100=2,gres/gpu=2"
        "|hpc1|gres/gpuutil=90\n"
        # job 3: no utilisation measured: skipped, never estimated from a zero
        "3|3|u|search|p|COMPLETED|2026-10-14T06:00:00|2026-10-14T08:00:00|7200|gres/gpu:a100=1,gres/gpu=1|hpc1|\n"
    )
    (tmp_path / "sacct").mkdir()
    (tmp_path / "sacct" / "d.txt").write_text(text)
    src = {"name": "hpc", "kind": "slurm_sacct", "uri": "sacct", "options": {
        "cluster": "hpc1", "timezone": "UTC", "rates": [{"gpu_model": "a100", "per_gpu_hour": "2.00"}],
        "capacity": [{"gpu_model": "a100", "nodes": 1, "gpus_per_node": 8, "from": "2026-10-14", "until": "2026-10-15"}],
        "idle": {"owner": {"team": "ml-platform", "project": "research-sandbox", "workload": "general"}}}}
    config = project(tmp_path, [src], {"gpu_utilisation_threshold": "0.4"})
    _, recs, skipped = run_all(config)
    idle = [r for r in recs if r["kind"] == "idle_gpus"]
    # capacity 8 x 24 = 192 GPU-hours on Oct 14; allocated 48 + 12 + 2 = 62; idle 130 at 2.00 = 260.00
    assert len(idle) == 1 and idle[0]["estimated_monthly_saving"] == Decimal("260.00")
    assert ev(idle[0])["idle_gpu_hours"] == 130 and idle[0]["team"] == "ml-platform"
    over = [r for r in recs if r["kind"] == "oversized_gpus"]
    # job 1: priced 48 x 2.00 = 96.00; at the 0.4 threshold it needs 0.1 / 0.4 = 25 % of the GPU-hours: 96 x 0.75
    assert [(r["scope_id"], r["estimated_monthly_saving"], r["team"]) for r in over] == [
        ("hpc1/1", Decimal("72.00"), "research")]
    e = ev(over[0])
    assert cents(e["priced_cost"] * (1 - e["utilisation"] / e["threshold"])) == Decimal("72.00")
    assert [(k, s) for k, s, _ in skipped] == [("oversized_gpus", "hpc: job 3 on hpc1 (a100)")]
    assert "without utilisation" in skipped[0][2]


# ------------------------------------------------------------------------------------------ spot and commitments
def cur_row(i: int, hour: int, itype: str, cost: float, tags: dict) -> dict:
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    return {"id": f"li-{i:04d}", "period_start": start, "period_end": datetime(2026, 11, 1, tzinfo=timezone.utc),
            "account": "222222222222", "type": "Usage", "product_code": "AmazonEC2",
            "usage_type": f"USE1-BoxUsage:{itype}", "operation": "RunInstances", "resource": f"i-{tags['n']}",
            "amount": 1.0, "currency": "USD", "rate": cost, "cost": cost,
            "start": start + timedelta(hours=hour), "end": start + timedelta(hours=hour + 1),
            "product_name": "Amazon Elastic Compute Cloud", "region": "us-east-1", "instance_type": itype,
            "tags": {k: v for k, v in tags.items() if k != "n"}}


def cur_project(tmp_path, savings):
    from tests.test_aws_cur import cur2_parquet

    serve = {"n": "serve", "team": "search", "project": "recsys", "workload": "inference"}
    extra = {"n": "extra", "team": "search", "project": "recsys", "workload": "inference"}
    train = {"n": "train", "team": "research", "project": "recsys", "workload": "training"}
    rows = [cur_row(h, h, "g5.xlarge", 1.00, serve) for h in range(4)]          # 1.00 every hour 0-3
    rows += [cur_row(10, 0, "g5.xlarge", 0.50, extra)]                           # +0.50 in hour 0
    rows += [cur_row(20 + h, h, "p4d.24xlarge", 32.00, train) for h in (1, 2)]   # training, hours 1-2
    folder = tmp_path / "cur" / "data" / f"BILLING_PERIOD={MONTH}"
    folder.mkdir(parents=True)
    (folder / "cur2-main-00001.snappy.parquet").write_bytes(cur2_parquet(rows))
    return project(tmp_path, [{"name": "aws", "kind": "aws_cur", "uri": "cur"}], savings)


def test_spot_and_commitments_against_hand_computed_numbers(tmp_path):
    config = cur_project(tmp_path, {"spot_discount": "0.6", "commitment_discount": "0.28"})
    _, recs, skipped = run_all(config)
    spot = [r for r in recs if r["kind"] == "spot"]
    # on-demand p4d for training: 2 x 32.00 = 64.00, x 0.6 = 38.40; the inference g5 is not interruptible work
    assert [(r["scope_id"], r["team"], r["workload"], r["estimated_monthly_saving"]) for r in spot] == [
        ("p4d.24xlarge", "research", "training", Decimal("38.40"))]
    commit = [r for r in recs if r["kind"] == "commitments"]
    # hourly on-demand: h0 1.00 + 0.50, h1 1.00 + 32, h2 1.00 + 32, h3 1.00 -> floor 1.00 over 4 hours x 0.28
    assert [r["estimated_monthly_saving"] for r in commit] == [Decimal("1.12")]
    e = ev(commit[0])
    assert (e["hourly_floor"], e["hours"], e["commitment_discount"]) == (1, 4, Decimal("0.28"))
    assert cents(e["hourly_floor"] * e["hours"] * e["commitment_discount"]) == commit[0]["estimated_monthly_saving"]


def test_spot_from_a_price_history_file_and_a_missing_instance_type(tmp_path):
    (tmp_path / "spot.csv").write_text("InstanceType,AvailabilityZone,SpotPrice\n"
                                       "p4d.24xlarge,us-east-1a,11.00\np4d.24xlarge,us-east-1b,13.00\n")
    config = cur_project(tmp_path, {"spot_price_history": "spot.csv", "spot_workloads": ["training", "inference"]})
    _, recs, skipped = run_all(config)
    spot = [r for r in recs if r["kind"] == "spot"]
    # 2 instance-hours x (32.00 - mean(11.00, 13.00)) = 40.00; g5.xlarge is not in the file: skipped
    assert [(r["scope_id"], r["estimated_monthly_saving"]) for r in spot] == [("p4d.24xlarge", Decimal("40.00"))]
    assert [(k, "g5.xlarge" in s) for k, s, _ in skipped if k == "spot"] == [("spot", True)]
