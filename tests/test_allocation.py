"""Allocation decisions, row by row, on a small hand-written CUR 2.0 CSV.gz delivery."""

from __future__ import annotations

import csv
import gzip
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.models.config import load_config

REPO = Path(__file__).resolve().parent.parent

COLUMNS = [
    "identity_line_item_id", "bill_billing_entity", "bill_billing_period_start_date", "bill_billing_period_end_date",
    "bill_payer_account_id", "line_item_usage_account_id", "line_item_line_item_type", "line_item_usage_start_date",
    "line_item_usage_end_date", "line_item_product_code", "line_item_usage_type", "line_item_operation",
    "line_item_resource_id", "line_item_usage_amount", "line_item_currency_code", "line_item_unblended_cost",
    "pricing_public_on_demand_cost", "savings_plan_savings_plan_effective_cost", "savings_plan_savings_plan_a_r_n",
    "savings_plan_total_commitment_to_date", "savings_plan_used_commitment", "product", "resource_tags",
]

# (id, account, type, product code, product name, usage type, operation, resource, cost, extras, tags)
ROWS = [
    ("tagged", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:p5.48xlarge",
     "RunInstances", "i-1", "98.32", {}, {"user_team": "ML Platform ", "user_project": "llm-serving",
                                          "user_workload": "inference"}),
    ("slugged", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:g5.xlarge",
     "RunInstances", "i-2", "1.006", {}, {"user_Team": "ml_platform"}),
    ("unknown", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:g5.xlarge",
     "RunInstances", "i-3", "2.50", {}, {"user_team": "growth-hacking", "aws_createdBy": "IAMUser:ABC:alice"}),
    ("unknown-in-sandbox", "333333333333", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud",
     "USE1-BoxUsage:g5.xlarge", "RunInstances", "i-4", "3.25", {}, {"user_team": "growth-hacking"}),
    ("no-tags", "555555555555", "Usage", "AmazonS3", "Amazon Simple Storage Service", "USE1-TimedStorage-ByteHrs",
     "StandardStorage", "my-bucket", "0.0000012345", {}, {}),
    ("tax", "111111111111", "Tax", "AmazonEC2", "Amazon Elastic Compute Cloud", "", "", "", "20.01", {}, {}),
    ("notebook", "222222222222", "Usage", "AmazonSageMaker", "Amazon SageMaker", "USE1-Notebk:ml.t3.medium",
     "RunInstance", "arn:aws:sagemaker:us-east-1:222222222222:notebook-instance/nb", "0.05", {}, {}),
    ("priority", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:g5.xlarge",
     "RunInstances", "i-5", "1.00", {}, {"user_owner": "search", "user_team": "research"}),
    ("sp-covered", "222222222222", "SavingsPlanCoveredUsage", "AmazonEC2", "Amazon Elastic Compute Cloud",
     "USE1-BoxUsage:p5.48xlarge", "RunInstances", "i-1", "98.32",
     {"savings_plan_savings_plan_effective_cost": "70.10", "savings_plan_savings_plan_a_r_n": "arn:aws:savingsplans::1:sp/x"},
     {"user_team": "ml-platform"}),
    ("sp-negation", "222222222222", "SavingsPlanNegation", "AmazonEC2", "Amazon Elastic Compute Cloud",
     "USE1-BoxUsage:p5.48xlarge", "RunInstances", "i-1", "-98.32",
     {"savings_plan_savings_plan_a_r_n": "arn:aws:savingsplans::1:sp/x"}, {"user_team": "ml-platform"}),
    ("sp-fee", "111111111111", "SavingsPlanRecurringFee", "ComputeSavingsPlans", "Savings Plans for AWS Compute usage",
     "ComputeSP:1yrNoUpfront", "", "", "80.00",
     {"savings_plan_total_commitment_to_date": "80.00", "savings_plan_used_commitment": "70.10",
      "savings_plan_savings_plan_a_r_n": "arn:aws:savingsplans::1:sp/x"}, {}),
]

# Tag values spelled as alias variants (`ML_Infra` -> ml-infra -> ml-platform, `Production` -> prod), on two line
# items with one attribution key (same account, tags, charge category, service, usage type): each line must keep
# its own amount. Kept out of ROWS, whose hand-computed split pieces other test files rely on.
ALIASED_TAGS = {"user_team": "ML_Infra", "user_project": "recsys", "user_environment": "Production"}
ALIASED_ROWS = [
    ("aliased", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:g5.xlarge",
     "RunInstances", "i-6", "4.75", {}, ALIASED_TAGS),
    ("aliased-twin", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud", "USE1-BoxUsage:g5.xlarge",
     "RunInstances", "i-7", "0.125", {}, ALIASED_TAGS),
]


def write_delivery(root: Path, rows=ROWS, month: str = "2026-10") -> None:
    data = root / "export" / "data" / f"BILLING_PERIOD={month}"
    data.mkdir(parents=True, exist_ok=True)
    with gzip.open(data / "export-00001.csv.gz", "wt", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for rid, acct, typ, code, name, usage, op, res, cost, extras, tags in rows:
            row = {c: "" for c in COLUMNS}
            row.update(
                identity_line_item_id=rid, bill_billing_entity="AWS",
                bill_billing_period_start_date=f"{month}-01T00:00:00Z",
                bill_billing_period_end_date="2026-11-01T00:00:00Z", bill_payer_account_id="111111111111",
                line_item_usage_account_id=acct, line_item_line_item_type=typ,
                line_item_usage_start_date=f"{month}-03T00:00:00Z", line_item_usage_end_date=f"{month}-04T00:00:00Z",
                line_item_product_code=code, line_item_usage_type=usage, line_item_operation=op,
                line_item_resource_id=res, line_item_usage_amount="1", line_item_currency_code="USD",
                line_item_unblended_cost=cost, pricing_public_on_demand_cost=cost if typ == "Usage" else "",
                product=json.dumps({"product_name": name}), resource_tags=json.dumps(tags),
            )
            row.update(extras)
            w.writerow(row)


@pytest.fixture()
def built(tmp_path):
    write_delivery(tmp_path / "bucket", ROWS + ALIASED_ROWS)
    # attribution alone: the demo taxonomy without its shared-cost splits (tests/test_split_rules.py has those)
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax.pop("splits", None)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n"
    )
    cfg = load_config(tmp_path / "apportion.yaml")
    src = cfg.sources[0]
    delivery = steps.land(cfg, src, "2026-10")
    stats = steps.build_line_items(cfg, src, delivery)
    alloc = steps.allocate(cfg, src, "2026-10")
    steps.build_warehouse(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    yield cfg, stats, alloc, con
    con.close()


def decided(con, rid: str) -> dict:
    row = con.execute(
        "SELECT a.x_Team, a.x_TeamReason, a.x_Project, a.x_ProjectReason, a.x_Workload, a.x_WorkloadReason, "
        "a.BilledCost, a.EffectiveCost, li.Tags::VARCHAR, li.ChargeCategory "
        "FROM allocations a JOIN line_items li USING (x_SourceName, x_BillingMonth, x_LineId) "
        "WHERE li.x_ProviderLineItemId = ?", [rid]).fetchone()
    keys = ("team", "team_reason", "project", "project_reason", "workload", "workload_reason", "billed", "effective",
            "tags", "charge_category")
    return dict(zip(keys, row))


def test_tag_value_is_trimmed_case_folded_and_aliased(built):
    _, _, _, con = built
    d = decided(con, "tagged")
    assert (d["team"], d["team_reason"]) == ("ml-platform", "tag:team")
    assert (d["project"], d["project_reason"]) == ("llm-serving", "tag:project")
    assert json.loads(d["tags"]) == {"team": "ML Platform ", "project": "llm-serving", "workload": "inference"}
    d = decided(con, "slugged")
    assert (d["team"], d["team_reason"]) == ("ml-platform", "tag:Team")
    assert (d["project"], d["project_reason"]) == ("untagged", "untagged:key-missing")
    # alias variants: `ML_Infra` is slugged to `ml-infra`, an alias of ml-platform; `Production` of prod
    d = decided(con, "aliased")
    assert (d["team"], d["team_reason"]) == ("ml-platform", "tag:team")
    assert json.loads(d["tags"])["team"] == "ML_Infra"  # the line item keeps the value as delivered
    env = con.execute(
        "SELECT DISTINCT a.x_Environment, a.x_EnvironmentReason FROM allocations a JOIN line_items li "
        "USING (x_SourceName, x_BillingMonth, x_LineId) WHERE li.x_ProviderLineItemId LIKE 'aliased%'").fetchall()
    assert env == [("prod", "tag:environment")]


def test_unknown_value_is_flagged_not_accepted(built):
    _, _, _, con = built
    d = decided(con, "unknown")
    assert d["team"] == "untagged"
    assert d["team_reason"] == 'untagged:unknown-value | tag team="growth-hacking" is not an allowed team'
    row = con.execute(
        "SELECT reason_code, created_by, EffectiveCost FROM untagged_spend "
        "WHERE dimension = 'team' AND ResourceId = 'i-3'").fetchone()
    assert row == ("untagged:unknown-value", "IAMUser:ABC:alice", Decimal("2.5"))


def test_finance_pack_names_who_created_untagged_resources(built):
    cfg, _, _, con = built
    con.close()  # the export opens the published file itself
    pack = steps.export_month(cfg, "2026-10")
    with open(pack / "untagged_spend.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    creators = {r["resource_id"]: r.get("created_by", "") for r in rows}
    assert creators["i-3"] == "IAMUser:ABC:alice"  # the aws:createdBy tag of the untagged line
    assert creators["i-4"] == ""  # untagged, no creator tag
    assert {r["created_by"] for r in rows if r["resource_id"] != "i-3"} == {""}


def test_account_mapping_decides_after_a_rejected_tag_and_says_so(built):
    _, _, _, con = built
    d = decided(con, "unknown-in-sandbox")
    assert d["team"] == "research"
    assert d["team_reason"].startswith("account:333333333333 | tag team=\"growth-hacking\" is not an allowed team")
    assert (d["project"], d["project_reason"]) == ("research-sandbox", "rule:sandbox-account")


def test_untagged_and_shared(built):
    _, _, _, con = built
    assert decided(con, "no-tags")["team_reason"] == "untagged:no-tags"
    tax = decided(con, "tax")
    assert (tax["team"], tax["team_reason"], tax["charge_category"]) == ("shared", "shared:Tax/Tax", "Tax")
    # the fee row keeps BilledCost, its unused commitment becomes a FOCUS Usage/Unused line item; both shared
    fees = con.execute(
        "SELECT a.x_Team, a.x_TeamReason, a.BilledCost, a.EffectiveCost, l.ChargeCategory, l.CommitmentDiscountStatus "
        "FROM allocations a JOIN line_items l USING (x_SourceName, x_BillingMonth, x_LineId) "
        "WHERE l.x_ProviderLineItemId = 'sp-fee' ORDER BY a.x_LineId").fetchall()
    assert fees == [("shared", "shared:Purchase/SavingsPlanRecurringFee", Decimal("80"), Decimal("0"), "Purchase", None),
                    ("shared", "shared:Usage/SavingsPlanRecurringFee", Decimal("0"), Decimal("9.90"), "Usage", "Unused")]
    # shared spend never appears as untagged
    assert con.execute("SELECT count(*) FROM untagged_spend WHERE ResourceId IS NULL AND dimension='team'").fetchone()[0] == 0


def test_rules_and_key_priority(built):
    _, _, _, con = built
    d = decided(con, "notebook")
    assert (d["team"], d["team_reason"]) == ("research", "rule:sagemaker-notebooks-are-research")
    d = decided(con, "priority")
    assert (d["team"], d["team_reason"]) == ("research", "tag:team")  # `team` outranks `owner`


def test_amortisation_and_exact_totals(built):
    cfg, stats, alloc, con = built
    assert decided(con, "sp-covered")["effective"] == Decimal("70.10")
    assert decided(con, "sp-negation")["effective"] == Decimal("0")
    expected_billed = sum(Decimal(r[8]) for r in ROWS + ALIASED_ROWS)
    assert stats.billed_cost == expected_billed == alloc.billed_cost
    assert stats.effective_cost == alloc.effective_cost
    li = con.execute("SELECT sum(BilledCost), sum(EffectiveCost) FROM line_items").fetchone()
    al = con.execute("SELECT sum(BilledCost), sum(EffectiveCost) FROM allocations").fetchone()
    assert li == al == (expected_billed, stats.effective_cost)
    assert con.execute("SELECT count(*) FROM allocations WHERE x_AllocationReason IS NULL").fetchone()[0] == 0
    assert steps.warehouse_breaches(cfg) == []


def test_coverage_is_spend_weighted(built):
    _, _, _, con = built
    cov, attributed, untagged, shared = con.execute(
        "SELECT coverage, attributed_cost, untagged_cost, shared_cost FROM allocation_coverage "
        "WHERE dimension = 'team'").fetchone()
    assert shared == Decimal("20.01") + Decimal("9.90")
    assert untagged == Decimal("2.50") + Decimal("0.0000012345")
    assert cov == pytest.approx(float(attributed / (attributed + untagged)), abs=1e-6)


def test_rebuilding_a_month_gives_identical_results(built):
    cfg, stats, _, con = built
    con.close()
    before = duckdb.connect(str(cfg.duckdb_path), read_only=True).execute(
        "SELECT x_LineId, x_Team, x_TeamReason, BilledCost, EffectiveCost FROM allocations ORDER BY 1").fetchall()
    src = cfg.sources[0]
    for _ in range(2):
        steps.build_line_items(cfg, src, steps.land(cfg, src, "2026-10"))
        steps.allocate(cfg, src, "2026-10")
        steps.build_warehouse(cfg)
    after = duckdb.connect(str(cfg.duckdb_path), read_only=True).execute(
        "SELECT x_LineId, x_Team, x_TeamReason, BilledCost, EffectiveCost FROM allocations ORDER BY 1").fetchall()
    assert before == after


def test_two_line_items_with_one_attribution_key_keep_their_own_amounts(built):
    _, _, _, con = built
    keys = con.execute(
        "SELECT DISTINCT SubAccountId, Tags::VARCHAR, ChargeCategory, x_LineItemType, ServiceName, x_ServiceCode, "
        "x_UsageType, x_Operation, ResourceId IS NOT NULL FROM line_items "
        "WHERE x_ProviderLineItemId IN ('aliased', 'aliased-twin')").fetchall()
    assert len(keys) == 1  # one attribution key for both lines
    pieces = con.execute(
        "SELECT li.x_ProviderLineItemId, count(*), sum(a.BilledCost), sum(a.EffectiveCost), min(a.x_Team), "
        "min(a.x_Project) FROM allocations a JOIN line_items li USING (x_SourceName, x_BillingMonth, x_LineId) "
        "WHERE li.x_ProviderLineItemId IN ('aliased', 'aliased-twin') GROUP BY 1 ORDER BY 1").fetchall()
    assert pieces == [("aliased", 1, Decimal("4.75"), Decimal("4.75"), "ml-platform", "recsys"),
                      ("aliased-twin", 1, Decimal("0.125"), Decimal("0.125"), "ml-platform", "recsys")]


def test_pieces_that_tie_on_billed_but_not_effective_cost_raise_exactness_error(built, monkeypatch):
    """The guard fires on a per-line EffectiveCost difference even when BilledCost and the totals tie."""
    import importlib

    cfg, stats, _, _ = built
    module = importlib.import_module("apportion.steps.allocate")
    real = module.sql_text

    def moved_a_cent(name: str) -> str:
        text = real(name)
        if name == "allocation/allocate.sql":
            assert text.count("    li.EffectiveCost,\n") == 1
            # a cent of EffectiveCost moves from one line to another: BilledCost and every total still tie
            text = text.replace("    li.EffectiveCost,\n",
                                "    li.EffectiveCost + case li.x_ProviderLineItemId when 'tagged' then 0.01 "
                                "when 'priority' then -0.01 else 0 end as EffectiveCost,\n")
        return text

    monkeypatch.setattr(module, "sql_text", moved_a_cent)
    final = steps.partition_dir(cfg, steps.ALLOCATIONS, "aws-main", "2026-10")
    published = {p.name: p.read_bytes() for p in final.glob("*.parquet")}
    assert published
    with pytest.raises(steps.ExactnessError, match="aws-main 2026-10: allocation does not tie out") as err:
        steps.allocate(cfg, cfg.sources[0], "2026-10")
    assert "98.33" in str(err.value)  # the line that got the cent is named with its amounts
    assert {p.name: p.read_bytes() for p in final.glob("*.parquet")} == published  # the partition is kept
    assert [p.name for p in final.parent.iterdir() if ".tmp-" in p.name] == []
    # without the moved cent the same month allocates and ties out
    monkeypatch.setattr(module, "sql_text", real)
    assert steps.allocate(cfg, cfg.sources[0], "2026-10").effective_cost == stats.effective_cost
