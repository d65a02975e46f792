"""The published warehouse, the finance pack and the CLI, on a small hand-written delivery."""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import cli, steps
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from tests.test_allocation import ROWS, write_delivery

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def project(tmp_path):
    write_delivery(tmp_path / "bucket")
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax.pop("splits", None)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n"
    )
    return tmp_path


def run_cli(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_json_summary_ties_out_and_writes_exports(project, capsys):
    code, out, _ = run_cli(["run", "--config", str(project / "apportion.yaml"), "--month", "2026-10", "--json"], capsys)
    assert code == cli.EXIT_OK
    summary = json.loads(out)
    [month] = summary["months"]
    assert (month["month"], month["success"], month["errors"], month["warehouse_published"]) == (
        "2026-10", True, [], True)
    assert set(month["steps"].values()) == {"succeeded"} and "out_warehouse" in month["steps"]
    [totals] = summary["totals"]
    billed = sum(Decimal(r[8]) for r in ROWS)
    assert Decimal(totals["billed_cost"]) == Decimal(totals["allocated_billed_cost"]) == billed
    assert {r["team"] for r in summary["spend_by_team"]} >= {"ml-platform", "research", "shared", "untagged"}
    assert summary["quarantined_rows"] == 0

    export_dir = project / "data" / "exports" / "2026-10"
    assert sorted(p.name for p in export_dir.iterdir()) == sorted(steps.EXPORT_FILES)
    for name in ("team", "project", "workload"):
        with open(export_dir / f"allocation_by_{name}.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert sum(Decimal(r["billed_cost"]) for r in rows) == billed
        assert sum(Decimal(r["billed_cost_rounded"]) for r in rows) == billed.quantize(Decimal("0.01"))
        # amounts as plain exact text: no 12-decimal trailing zeros, no exponent
        assert all(re.fullmatch(r"-?\d+(\.\d*[1-9])?", r["billed_cost"]) for r in rows)
        assert not any(c.startswith("reporting_") for c in rows[0])  # one currency: no empty columns
    with open(export_dir / "control_totals.csv") as fh:
        [control] = list(csv.DictReader(fh))
    assert control["ties_out"] == "true"
    assert Decimal(control["line_items_billed_cost"]) == Decimal(control["allocated_billed_cost"]) == billed
    # summary-first: the line-level file is Parquet (CSV only when asked)
    assert not (export_dir / "allocation_lines.csv").exists()
    lines = [dict(zip(("charge_period_start", "allocation_reason"), r)) for r in duckdb.connect().execute(
        "SELECT charge_period_start, allocation_reason FROM read_parquet(?)",
        [str(export_dir / "allocation_lines.parquet")]).fetchall()]
    assert len(lines) == len(ROWS) + 1  # the savings-plan fee row also yields its unused-commitment line
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", r["charge_period_start"]) for r in lines)
    assert all(r["allocation_reason"] for r in lines)

    # `apportion export` writes the same pack elsewhere.
    code, out, _ = run_cli(["export", "--config", str(project / "apportion.yaml"), "--month", "2026-10",
                            "--out", str(project / "pack")], capsys)
    assert code == 0
    assert (project / "pack" / "allocation_by_team.csv").read_text() == (export_dir / "allocation_by_team.csv").read_text()


def test_every_table_and_column_is_documented_and_warehouse_doc_queries_run(project, capsys):
    assert cli.main(["run", "--config", str(project / "apportion.yaml"), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()
    con = duckdb.connect(str(project / "data" / "apportion.duckdb"), read_only=True)
    tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables() UNION ALL "
                              "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
    assert set(steps.WAREHOUSE_TABLES) <= set(tables)
    # the lake is not copied: the big three are views over the current Parquet versions
    views = {v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"line_items", "allocations", "quarantined_rows"} <= views
    assert all(tables[t] for t in steps.WAREHOUSE_TABLES)
    undocumented = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE table_name IN ('line_items', 'allocations') "
        "AND (comment IS NULL OR comment = '')").fetchall()
    assert undocumented == []
    page = (REPO / "docs" / "warehouse.md").read_text(encoding="utf-8")
    block = re.search(r"Example queries.*?```sql\n(.*?)```", page, re.S).group(1)
    ran = 0
    for statement in block.split(";"):
        sql = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
        if sql:  # they name last month relative to today; this delivery is 2026-10: they run, the demo test
            con.execute(sql).fetchall()  # (test_finance_pack) checks that they answer
            ran += 1
    assert ran == 3
    by_team = dict(con.execute(
        "select x_Team, sum(EffectiveCost) from allocations where x_BillingMonth = '2026-10' group by all").fetchall())
    assert by_team["shared"] == Decimal("20.01") + Decimal("9.90")


def test_analyst_holding_the_old_file_is_never_disturbed(project, capsys):
    cfg = load_config(project / "apportion.yaml")
    assert cli.main(["run", "--config", str(cfg.config_path), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()
    analyst = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    before = analyst.execute("SELECT count(*), sum(BilledCost) FROM allocations").fetchone()
    # A restated delivery arrives: one more row. The nightly job rebuilds while the analyst is connected.
    write_delivery(project / "bucket", ROWS + [("tagged-restated", "222222222222") + ROWS[0][2:8] + ("1.00",) + ROWS[0][9:]])
    assert cli.main(["run", "--config", str(cfg.config_path), "--month", "2026-10", "--json"]) == 0
    capsys.readouterr()
    assert analyst.execute("SELECT count(*), sum(BilledCost) FROM allocations").fetchone() == before
    analyst.close()
    fresh = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    assert fresh.execute("SELECT count(*), sum(BilledCost) FROM allocations").fetchone() == (
        before[0] + 1, before[1] + Decimal("1.00"))
    assert not list(cfg.warehouse.glob(".apportion.duckdb.building-*"))


def test_exit_codes_failed_month_and_quarantine(project, capsys):
    cfg_path = str(project / "apportion.yaml")
    code, out, err = run_cli(["run", "--config", cfg_path, "--month", "2026-09"], capsys)
    assert code == cli.EXIT_FAILED
    assert "2026-09: FAILED" in err and "no CUR 2.0 data for 2026-09" in err and "FAILED" not in out

    bad = [r if r[0] != "tagged" else r[:8] + ("12,5",) + r[9:] for r in ROWS]
    write_delivery(project / "bucket", bad)
    code, out, _ = run_cli(["run", "--config", cfg_path, "--month", "2026-10", "--json"], capsys)
    assert code == cli.EXIT_QUARANTINE
    assert json.loads(out)["quarantined_rows"] == 1
    con = duckdb.connect(str(project / "data" / "apportion.duckdb"), read_only=True)
    assert con.execute("SELECT x_SourceFile, x_SourceRow, reason FROM quarantined_rows").fetchall() == [
        ("data/BILLING_PERIOD=2026-10/export-00001.csv.gz", 1, "non-numeric line_item_unblended_cost 12,5")]


def test_config_errors_name_line_key_and_problem(tmp_path, capsys):
    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws\n    uri: s3://b/p\n"
        "  - name: Bad Name\n    kind: aws_cur\n    uri: s3://b/p\n    options: {secret_access_key: x}\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "apportion.yaml")
    problems = err.value.problems
    assert any(p.startswith("line 5: sources[0].kind: unknown source kind 'aws' (known: ") and "aws_cur" in p
               for p in problems)
    assert any(p.startswith("line 7: sources[1].name: 'Bad Name' must be lower-case") for p in problems)
    assert any(p.startswith("line 10: sources[1].options: option 'secret_access_key' looks like a credential")
               for p in problems)
    assert "line 11: colour: unknown key" in problems
    code, _, err_out = run_cli(["run", "--config", str(tmp_path / "apportion.yaml")], capsys)
    assert code == cli.EXIT_CONFIG and "line 5" in err_out


def test_taxonomy_check_points_at_offending_lines(tmp_path, capsys):
    bad = tmp_path / "taxonomy.yaml"
    bad.write_text(
        "dimensions:\n"
        "  team:\n"
        "    keys: [team]\n"
        "    allowed: [ml-platform]\n"
        "    aliases: {ml-platform: [ML Platform], research: [rsrch]}\n"
        "    accounts: {123456789012: ml-platform}\n"
        "  project:\n"
        "    rules:\n"
        "      - name: r\n"
        "        match: {servce: x}\n"
        "        value: p\n"
        "  workload: {}\n"
    )
    code, out, err = run_cli(["taxonomy", "check", str(bad)], capsys)
    assert code == cli.EXIT_CONFIG
    assert "line 6: dimensions.team.accounts: account id 123456789012 must be quoted" in err
    assert "line 10: dimensions.project.rules[0].match: unknown match field 'servce'" in err
    code, out, _ = run_cli(["taxonomy", "check", str(REPO / "demo" / "taxonomy.yaml")], capsys)
    assert code == 0 and out.strip().endswith(": ok")
    bad.write_text(bad.read_text().replace("{123456789012: ml-platform}", "{'123456789012': ml-platform}")
                   .replace("servce", "service"))
    code, _, err = run_cli(["taxonomy", "check", str(bad)], capsys)
    assert code == cli.EXIT_CONFIG
    assert "line 2: dimensions.team: alias target 'research' is not in allowed" in err
