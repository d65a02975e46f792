"""Shared-cost split rules: every method, with pieces computed by hand, and exactness."""

from __future__ import annotations

import json
import re
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from apportion.models.taxonomy import load_taxonomy
from apportion.split_rules import SplitConflictError
from apportion.splits import split_exact
from tests.test_allocation import ROWS, write_delivery

REPO = Path(__file__).resolve().parent.parent

CREDIT = ("credit", "111111111111", "Credit", "AmazonEC2", "Amazon Elastic Compute Cloud", "", "", "", "-10.00", {}, {})


# ------------------------------------------------------------------ the arithmetic
@pytest.mark.parametrize(
    ("amount", "weights", "unit", "expected"),
    [
        # three-way split of a cent: 1 unit, equal remainders, the first target gets it
        ("0.01", [1, 1, 1], "0.01", ["0.01", "0.00", "0.00"]),
        # 100/3 at 1e-12: 33.333333333333 each, one unit left for the first
        ("100", [1, 1, 1], "0.000000000001", ["33.333333333334", "33.333333333333", "33.333333333333"]),
        # a negative credit splits like its absolute value and keeps its sign
        ("-10", [1, 2], "0.01", ["-3.33", "-6.67"]),
        # 20.01 at 50/30/20 %: 2001 cents -> 1000.5 / 600.3 / 400.2 -> the .5 remainder wins the cent
        ("20.01", [50, 30, 20], "0.01", ["10.01", "6.00", "4.00"]),
        # zero weight gets nothing
        ("5", [0, 1], "0.01", ["0.00", "5.00"]),
        # sub-cent amount split to the cent: the rest goes to the largest weight, nothing is lost
        ("0.0000012345", [1, 2, 3], "0.01", ["0E-10", "0E-10", "0.0000012345"]),
    ],
)
def test_split_exact(amount, weights, unit, expected):
    pieces = split_exact(D(amount), weights, D(unit))
    assert pieces == [D(e) for e in expected]
    assert sum(pieces) == D(amount)


def test_split_exact_refuses_nothing_to_split_by():
    with pytest.raises(ValueError, match="nothing to split by"):
        split_exact(D("1"), [0, 0])
    with pytest.raises(ValueError, match="negative"):
        split_exact(D("1"), [1, -1])


# ------------------------------------------------------------------ rules on a real delivery
SPLITS = [
    {"name": "tax-fixed", "match": {"charge_category": "Tax"}, "method": "fixed", "by": ["team"],
     "shares": {"ml-platform": 50, "research": 30, "search": 20}, "precision": "0.01"},
    {"name": "savings-plan-fee-even", "match": {"line_item_type": "SavingsPlanRecurringFee"}, "method": "even", "by": ["team"],
     "targets": ["ml-platform", "research", "search"], "precision": "0.01"},
    {"name": "credit-by-usage", "match": {"charge_category": "Credit"}, "method": "proportional", "by": ["team"],
     "weights": {"match": {"charge_category": "Usage"}}, "precision": "0.01"},
    {"name": "s3-by-ec2-hours", "match": {"service_code": "AmazonS3"}, "dimensions": {"team": "untagged"},
     "method": "metric", "by": ["team"], "weights": {"match": {"service_code": "AmazonEC2"}, "measure": "ConsumedQuantity"}},
]


def build(tmp_path, splits, rows=ROWS + [CREDIT], extra_dims=None):
    write_delivery(tmp_path / "bucket", rows)
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax["splits"] = splits
    for dim, extra in (extra_dims or {}).items():
        tax["dimensions"][dim].update(extra)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    src = cfg.sources[0]
    steps.build_line_items(cfg, src, steps.land(cfg, src, "2026-10"))
    stats = steps.allocate(cfg, src, "2026-10")
    steps.build_warehouse(cfg)
    return cfg, stats, duckdb.connect(str(cfg.duckdb_path), read_only=True)


def pieces(con, provider_line_id):
    return con.execute(
        "SELECT a.x_Team, a.BilledCost, a.EffectiveCost, a.x_AllocatedRatio, a.x_AllocationRuleId, a.x_TeamReason, "
        "a.x_AllocationMethodDetails::VARCHAR FROM allocations a JOIN line_items l USING (x_SourceName, x_BillingMonth, x_LineId) "
        "WHERE l.x_ProviderLineItemId = ? ORDER BY a.x_LineId, a.x_PieceId", [provider_line_id]).fetchall()


def test_every_method_with_hand_computed_pieces(tmp_path):
    cfg, stats, con = build(tmp_path, SPLITS)
    # fixed: 2001 cents at 50/30/20 -> 1000.5 / 600.3 / 400.2 cents
    tax = pieces(con, "tax")
    assert [(t, b, e) for t, b, e, *_ in tax] == [
        ("ml-platform", D("10.01"), D("10.01")), ("research", D("6.00"), D("6.00")), ("search", D("4.00"), D("4.00"))]
    assert {r[4] for r in tax} == {"tax-fixed"}
    assert tax[0][5].startswith("split:tax-fixed fixed (0.5 of shared:Tax/Tax)")
    # even: the fee row (billed 80.00) -> 2666.67 cents each -> two get the extra cent; its unused
    # commitment is a line item of its own (FOCUS: Usage, Unused; EffectiveCost 9.90) -> 3.30 each
    fee = pieces(con, "sp-fee")
    assert [(t, b, e) for t, b, e, *_ in fee] == [
        ("ml-platform", D("26.67"), D("0")), ("research", D("26.67"), D("0")), ("search", D("26.66"), D("0")),
        ("ml-platform", D("0"), D("3.30")), ("research", D("0"), D("3.30")), ("search", D("0"), D("3.30"))]
    # proportional to usage EffectiveCost by team: ml-platform 98.32 + 1.006 + 70.10 + 0 = 169.426,
    # research 3.25 + 0.05 + 1.00 = 4.30 (untagged excluded). -10.00 = 1000 cents:
    # 975.2478... and 24.7521... -> floors 975 + 24, the spare cent to research (.7521 > .2478)
    credit = pieces(con, "credit")
    assert [(t, b) for t, b, *_ in credit] == [("ml-platform", D("-9.75")), ("research", D("-0.25"))]
    assert '"UsageUnit": "EffectiveCost"' in credit[0][6]
    # metric: EC2 usage amount by team: ml-platform 3 (tagged, slugged, sp-covered; the negation row
    # repeats the covered usage and carries none), research 2, untagged 1 (usage with no owner keeps its
    # share untagged). 0.0000012345 = 1,234,500 units of 1e-12 = 6 x 205,750: exact, no remainder.
    s3 = pieces(con, "no-tags")
    assert [(t, b) for t, b, *_ in s3] == [
        ("ml-platform", D("0.000000617250")), ("research", D("0.000000411500")), ("untagged", D("0.000000205750"))]
    assert [r[3] for r in s3] == [D("0.5"), D("0.333333333333"), D("0.166666666667")]
    # exactness: per line and in total
    li = con.execute("SELECT sum(BilledCost), sum(EffectiveCost) FROM line_items").fetchone()
    al = con.execute("SELECT sum(BilledCost), sum(EffectiveCost) FROM allocations").fetchone()
    assert li == al == (stats.billed_cost, stats.effective_cost)
    assert steps.warehouse_breaches(cfg) == []
    # nothing shared is left for the split charges; split pieces explain themselves
    assert con.execute("SELECT count(*) FROM allocations WHERE x_AllocationRuleId IS NOT NULL "
                       "AND x_AllocationReason NOT LIKE '%split:%'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM allocations WHERE x_Team = 'shared'").fetchone()[0] == 0


def test_partitioned_split_weighs_each_partition_separately(tmp_path):
    rows = ROWS + [("tax-333", "333333333333", "Tax", "AmazonEC2", "Amazon Elastic Compute Cloud", "", "", "", "1.00", {}, {})]
    splits = [{"name": "tax-by-account-usage", "match": {"charge_category": "Tax"}, "method": "proportional",
               "by": ["team"], "partition_by": ["account"], "weights": {"match": {"charge_category": "Usage"}},
               "precision": "0.01"}]
    _, _, con = build(tmp_path, splits, rows)
    # account 333333333333 has only research usage: its tax goes to research alone
    assert [(t, b) for t, b, *_ in pieces(con, "tax-333")] == [("research", D("1.00"))]
    # account 111111111111 has no attributed usage at all: the piece stays shared and says why
    [(team, billed, _, _, rule, reason, _)] = pieces(con, "tax")
    assert (team, billed, rule) == ("shared", D("20.01"), None)
    assert reason.endswith("| split:tax-by-account-usage skipped: nothing to split by")


def test_conflicting_rules_are_rejected(tmp_path):
    splits = [SPLITS[0], {**SPLITS[1], "name": "also-tax", "match": {"charge_category": "T*"}}]
    with pytest.raises(SplitConflictError, match="'tax-fixed' and 'also-tax' both match line item"):
        build(tmp_path, splits)


def test_cycles_and_bad_references_are_rejected_with_lines(tmp_path):
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax["splits"] = [
        {"name": "a", "dimensions": {"team": "search"}, "method": "fixed", "by": ["team"], "shares": {"research": 100}},
        {"name": "b", "dimensions": {"team": "research"}, "method": "fixed", "by": ["team"], "shares": {"search": 100}},
        {"name": "c", "match": {"charge_category": "Tax"}, "method": "fixed", "by": ["team"],
         "shares": {"research": 60, "nobody": 30}},
    ]
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(tax, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_taxonomy(path)
    text = "\n".join(err.value.problems)
    assert "fixed shares must total 100, not 90" in text
    tax["splits"][2]["shares"] = {"research": 70, "nobody": 30}
    path.write_text(yaml.safe_dump(tax, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_taxonomy(path)
    text = "\n".join(err.value.problems)
    assert "split rules form a cycle: a -> b -> a" in text
    assert "split 'c': target 'nobody' is not an allowed team" in text


def test_spread_untagged_is_marked_and_still_listed(tmp_path):
    cfg, _, con = build(tmp_path, [], extra_dims={"team": {"spread_untagged": True}})
    spread = con.execute("SELECT x_Team, BilledCost, x_TeamReason FROM allocations WHERE x_TeamReason LIKE 'spread:%' "
                         "ORDER BY x_LineId, x_PieceId").fetchall()
    assert spread and all(r[2].startswith("spread:spread-untagged-team proportional") for r in spread)
    assert con.execute("SELECT count(*) FROM allocations WHERE x_Team = 'untagged'").fetchone()[0] == 0
    # the spread spend is still visible as unattributed, with its marker
    listed = con.execute("SELECT sum(BilledCost) FROM untagged_spend WHERE dimension = 'team'").fetchone()[0]
    assert listed == sum(r[1] for r in spread)
    assert steps.warehouse_breaches(cfg) == []


def test_virtual_tag_overrides_provider_tags_and_value_classes(tmp_path):
    extra = {
        "team": {"rules": [{"name": "gpu-fleet-belongs-to-ml", "match": {"usage_type": "*p5.48xlarge"},
                            "value": "ml-platform", "override": True}]},
    }
    rows = ROWS + [("p5-research", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud",
                    "USE1-BoxUsage:p5.48xlarge", "RunInstances", "i-9", "5.00", {}, {"user_team": "research",
                                                                                   "user_workload": "training"})]
    tax_extra = {"team": extra["team"]}
    _, _, con = build(tmp_path, [], rows, extra_dims=tax_extra)
    [(team, *_rest, reason, _)] = pieces(con, "p5-research")
    assert (team, reason) == ("ml-platform", "override:gpu-fleet-belongs-to-ml")


def test_value_class_from_rules_then_workload_and_portfolio_view(tmp_path):
    rows = ROWS + [("dev-training", "222222222222", "Usage", "AmazonEC2", "Amazon Elastic Compute Cloud",
                    "USE1-BoxUsage:g5.xlarge", "RunInstances", "i-7", "2.00", {},
                    {"user_team": "research", "user_workload": "training", "user_environment": "dev"})]
    _, _, con = build(tmp_path, [], rows)
    got = dict(con.execute(
        "SELECT l.x_ProviderLineItemId, a.x_ValueClass || ' / ' || a.x_ValueClassReason FROM allocations a "
        "JOIN line_items l USING (x_SourceName, x_BillingMonth, x_LineId)").fetchall())
    assert got["tagged"] == "production / workload:inference"            # workload inference -> production
    assert got["dev-training"] == "experimental / rule:dev-is-experimental"  # the environment rule comes first
    assert got["no-tags"].startswith("background / workload:storage")    # S3 -> workload storage (rule) -> background
    portfolio = con.execute("SELECT value_class, team, effective_cost FROM portfolio "
                            "WHERE value_class = 'experimental' AND team = 'research'").fetchone()
    assert portfolio[2] >= D("2.00")


def test_taxonomy_check_finds_rules_that_can_never_match(tmp_path, capsys):
    from apportion import cli

    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax["dimensions"]["team"]["rules"] = [
        {"name": "all-sagemaker", "match": {"service": "Amazon SageMaker"}, "value": "research"},
        {"name": "sagemaker-notebooks", "match": {"service": "Amazon SageMaker", "usage_type": "*Notebk*"},
         "value": "ml-platform"},
        {"name": "sandbox", "match": {"account": "333*"}, "value": "research"},
    ]
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(tax, sort_keys=False))
    assert cli.main(["taxonomy", "check", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "dimensions.team.rules[1] ('sagemaker-notebooks') can never match: rule 'all-sagemaker'" in err
    assert "dimensions.team.accounts[333333333333] can never apply: rule 'sandbox'" in err
    assert re.search(r"line \d+: dimensions.team.rules\[1\]", err)


def test_taxonomy_diff_shows_coverage_and_team_changes(tmp_path, capsys):
    from apportion import cli

    cfg, _, con = build(tmp_path, [])
    con.close()
    new = yaml.safe_load((tmp_path / "taxonomy.yaml").read_text())
    new["dimensions"]["team"]["accounts"]["555555555555"] = "search"   # the untagged S3 account
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    code = cli.main(["taxonomy", "diff", str(tmp_path / "taxonomy.yaml"), str(tmp_path / "new.yaml"),
                     "--month", "2026-10", "--config", str(cfg.config_path), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    team_cov = next(r for r in result["coverage"] if r["dimension"] == "team")
    assert team_cov["new"] >= team_cov["old"]  # a tiny S3 line: visible in the totals below, not at 6 decimals
    change = {r["team"]: D(str(r["change"])) for r in result["teams"]}
    assert change["search"] == D("0.0000012345") and change["untagged"] == D("-0.0000012345")
    # the published warehouse and lake are untouched by a diff
    assert not list(cfg.warehouse.glob("apportion-taxdiff-*"))


def test_parents_without_weights_stay_in_duckdb_and_are_marked(tmp_path, monkeypatch):
    """A rule's parent pieces whose partition has nothing to split by keep their piece and say so, without coming
    to Python: only the pieces a rule actually splits are fetched (at 50 M rows ~2.5 M skipped pieces were fetched as
    tuples of Decimals and sent back, and the allocation step's peak memory grew with the month)."""
    import importlib

    allocate_module = importlib.import_module("apportion.steps.allocate")  # the module, not steps.allocate
    untagged_s3 = [(f"s3-{i}", "555555555555", "Usage", "AmazonS3", "Amazon Simple Storage Service",
                    "USE1-TimedStorage-ByteHrs", "StandardStorage", f"bucket-{i}", "0.25", {}, {}) for i in range(300)]
    rule = {"name": "s3-by-ec2-hours-per-account", "match": {"service_code": "AmazonS3"},
            "dimensions": {"team": "untagged"}, "partition_by": ["account"], "method": "metric", "by": ["team"],
            "weights": {"match": {"service_code": "AmazonEC2"}, "measure": "ConsumedQuantity"}}
    fetched = []
    real_connect = allocate_module.connect

    class Counting:
        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, *args, **kwargs):
            result = self._con.execute(*args, **kwargs)

            class Result:
                def __getattr__(self, name):
                    return getattr(result, name)

                def fetchall(self):
                    rows = result.fetchall()
                    fetched.append(len(rows))
                    return rows

            return Result() if result is not None else result

    monkeypatch.setattr(allocate_module, "connect", lambda *a, **k: Counting(real_connect(*a, **k)))
    cfg, stats, con = build(tmp_path, [rule], rows=ROWS + untagged_s3)
    # account 555555555555 runs no EC2: its 301 untagged S3 pieces are kept, each marked; nothing else changes
    marked = con.execute("SELECT count(*), sum(BilledCost) FROM allocations WHERE x_TeamReason LIKE "
                         "'%split:s3-by-ec2-hours-per-account skipped: nothing to split by'").fetchone()
    assert marked == (301, D("75.0000012345"))
    assert stats.billed_cost == sum(D(r[8]) for r in ROWS + untagged_s3)
    assert max(fetched) < 300, fetched  # the 301 skipped parents never came to Python (the largest: a DESCRIBE)
