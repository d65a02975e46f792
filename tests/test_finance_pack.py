"""The finance pack ties out to the invoice; Parquet twins; documented column names; analyst views.

Runs on the demo bill (fixture `outputs_demo_project` in conftest.py: `apportion run --all` on a
deterministic CUR 2.0 export with split rules, value classes, tokens and GPU instances).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pytest

from apportion import steps
from apportion.models.config import load_config
from apportion.steps.exports import export_files

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pack(outputs_demo_project):
    cfg_path, summary = outputs_demo_project
    cfg = load_config(cfg_path)
    months = [m["month"] for m in summary["months"]]
    return cfg, months


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def documented_columns(dimensions: list[str]) -> dict[str, list[str]]:
    """file name -> columns, from the "Files and columns" table of docs/exports.md."""
    page = (REPO / "docs" / "exports.md").read_text(encoding="utf-8")
    section = page.split("\n## Files and columns\n", 1)[1].split("\n## ", 1)[0]
    files: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        columns = []
        for c in (c.strip(" `") for c in cells[1].split(",")):
            columns += [f"untagged_{d}" for d in dimensions] if c == "untagged_<dimension>" else [c]
        for name in re.findall(r"`([^`]+\.(?:csv|parquet))`", cells[0]):
            if "<dimension>" in name:
                for d in ("team", "project", "workload", "value_class"):
                    files[name.replace("<dimension>", d)] = [d if c == "<dimension>" else c for c in columns]
            else:
                files[name] = columns
    return files


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(c in it for c in part)


DIMENSIONS = ["project", "team", "workload", "environment", "value_class"]  # demo/taxonomy.yaml, allocations order
PLAIN_DECIMAL = re.compile(r"-?\d+(\.\d*[1-9])?")  # exact text: no trailing zeros, no exponent


def test_every_file_has_its_parquet_twin_and_documented_columns(pack):
    cfg, months = pack
    documented = documented_columns(DIMENSIONS)
    summaries = sorted(f for f in steps.EXPORT_FILES if f.endswith(".csv"))
    assert sorted(f for f in documented if f.endswith(".csv")) == summaries
    assert "allocation_lines.parquet" in documented and "allocation_lines.parquet" in steps.EXPORT_FILES
    con = duckdb.connect()
    for month in months:
        folder = cfg.exports / month
        # summary-first: summaries as CSV + Parquet twin, the line-level file only as Parquet
        assert sorted(p.name for p in folder.iterdir()) == sorted(steps.EXPORT_FILES)
        for name in summaries:
            csv_path, pq_path = folder / name, (folder / name).with_suffix(".parquet")
            with open(csv_path, newline="") as fh:
                header = next(csv.reader(fh))
            # the documented order; empty columns left out (no reporting currency in the demo)
            assert is_subsequence(header, documented[name]), (name, header)
            assert not any(c.startswith("reporting_") for c in header), (name, header)
            types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{pq_path}')").fetchall()}
            assert list(types) == header, name
            rows = read_csv(csv_path)
            twin = [dict(zip(types, r)) for r in con.execute(f"SELECT * FROM read_parquet('{pq_path}')").fetchall()]
            assert len(rows) == len(twin), name
            for row, typed in zip(rows, twin):
                for col, typ in types.items():
                    if col.endswith("_rounded"):
                        assert typ == "DECIMAL(38,2)" and re.fullmatch(r"-?\d+\.\d\d", row[col]), (name, col)
                        assert Decimal(row[col]) == typed[col]
                    elif col.endswith("_cost"):
                        assert typ == "DECIMAL(38,12)", (name, col, typ)  # exact money, never float
                        if row[col] != "":
                            # plain exact text, without trailing zeros, equal to the typed twin
                            assert PLAIN_DECIMAL.fullmatch(row[col]), (name, col, row[col])
                            assert Decimal(row[col]) == typed[col]
            for col in header:  # no column is empty on every row
                assert not rows or any(r[col] != "" for r in rows), (name, col)
        lines_cols = [r[0] for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{folder / 'allocation_lines.parquet'}')").fetchall()]
        assert is_subsequence(lines_cols, documented["allocation_lines.parquet"]) and "reporting_billed_cost" not in lines_cols


def test_control_totals_equal_the_invoice_in_the_raw_files(pack):
    """Independent of the pipeline: sum the provider's own files (as landed) per invoice."""
    cfg, months = pack
    con = duckdb.connect()
    for month in months:
        month_dir = cfg.raw / "aws-main" / month
        current = (month_dir / "CURRENT").read_text().strip()
        files = sorted(str(p) for p in (month_dir / current / "data").rglob("*.parquet"))
        assert files
        invoice = {
            (inv or ""): total for inv, total in con.execute(
                # the amount as the provider wrote it (shortest decimal text of the stored double)
                "SELECT bill_invoice_id, sum(CAST(CAST(line_item_unblended_cost AS VARCHAR) AS DECIMAL(38,12))) "
                "FROM read_parquet(?) GROUP BY 1", [files]).fetchall()
        }
        control = read_csv(cfg.exports / month / "control_totals.csv")
        # invoice_id is left out when no line has one yet (an open month before its invoice)
        assert {r.get("invoice_id", "") for r in control} == set(invoice)
        for row in control:
            assert row["provider"] == "AWS" and row["billing_currency"] == "USD"
            assert Decimal(row["line_items_billed_cost"]) == invoice[row.get("invoice_id", "")]
            assert Decimal(row["allocated_billed_cost"]) == invoice[row.get("invoice_id", "")]
            # the invoice in cents, rounded by hand (half away from zero)
            assert Decimal(row["billed_cost_rounded"]) == invoice[row.get("invoice_id", "")].quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP)
            assert row["ties_out"] == "true"
        total = sum(invoice.values())
        for name in ("team", "project", "workload", "value_class", "source_and_team"):
            rows = read_csv(cfg.exports / month / f"allocation_by_{name}.csv")
            assert sum(Decimal(r["billed_cost"]) for r in rows) == total, name
        lines = cfg.exports / month / "allocation_lines.parquet"
        assert con.execute("SELECT sum(billed_cost) FROM read_parquet(?)", [str(lines)]).fetchone()[0] == total
        assert con.execute("SELECT count(*) FROM read_parquet(?) WHERE NOT regexp_full_match(charge_period_start, "
                           "'\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z')", [str(lines)]).fetchone()[0] == 0


def test_cents_columns_tie_out_per_source_invoice_and_month(pack):
    """Every *_rounded column sums, per source and month, to the invoices rounded to cents; each rounded
    amount is within a cent of the exact one (largest remainder, not independent rounding)."""
    cfg, months = pack
    cent = Decimal("0.01")
    for month in months:
        control = read_csv(cfg.exports / month / "control_totals.csv")
        want = defaultdict(Decimal)
        for r in control:
            exact = Decimal(r["allocated_effective_cost"])
            assert Decimal(r["effective_cost_rounded"]) == exact.quantize(cent, rounding=ROUND_HALF_UP)
            want[r["source"]] += Decimal(r["billed_cost_rounded"])
        for name in ("team", "project", "workload", "value_class", "source_and_team"):
            rows = read_csv(cfg.exports / month / f"allocation_by_{name}.csv")
            for r in rows:
                # a row sums cells of at most every invoice, each within a cent of exact
                assert abs(Decimal(r["billed_cost_rounded"]) - Decimal(r["billed_cost"])) < cent * len(control), (name, r)
            if "source" in rows[0]:
                got = defaultdict(Decimal)
                for r in rows:
                    got[r["source"]] += Decimal(r["billed_cost_rounded"])
                assert got == want, name
            assert sum(Decimal(r["billed_cost_rounded"]) for r in rows) == sum(want.values()), name
            assert sum(Decimal(r["effective_cost_rounded"]) for r in rows) == sum(
                Decimal(r["effective_cost_rounded"]) for r in control), name


def test_untagged_spend_once_per_dollar_and_team_totals_across_sources(pack):
    cfg, months = pack
    wh = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    for month in months:
        rows = read_csv(cfg.exports / month / "untagged_spend.csv")
        assert rows and all(not (Decimal(r["billed_cost"]) == 0 and Decimal(r["effective_cost"]) == 0) for r in rows)
        assert all(any(r[f"untagged_{d}"] == "true" for d in DIMENSIONS) for r in rows)
        # once per dollar: the rows add up to the pieces untagged in at least one dimension, counted once
        any_untagged = " OR ".join(f"{c} = 'untagged'" for c in ("x_Project", "x_Team", "x_Workload",
                                                                   "x_Environment", "x_ValueClass"))
        once = wh.execute(f"SELECT sum(EffectiveCost), sum(BilledCost) FROM allocations WHERE x_BillingMonth = ? "
                          f"AND ({any_untagged})", [month]).fetchone()
        assert (sum(Decimal(r["effective_cost"]) for r in rows), sum(Decimal(r["billed_cost"]) for r in rows)) == once
        # the team column: its rows are the month's untagged team spend (coverage table), once
        team = sum(Decimal(r["effective_cost"]) for r in rows if r["untagged_team"] == "true")
        assert team == wh.execute("SELECT sum(untagged_cost) FROM allocation_coverage WHERE x_BillingMonth = ? "
                                  "AND dimension = 'team'", [month]).fetchone()[0]
        assert "team: untagged:" in next(r["reason"] for r in rows if r["untagged_team"] == "true")
        # allocation_by_team is a team total across sources: one row per currency and team
        by_team = read_csv(cfg.exports / month / "allocation_by_team.csv")
        assert "source" not in by_team[0]
        assert len({(r["billing_currency"], r["team"]) for r in by_team}) == len(by_team)
        per_source = defaultdict(Decimal)
        for r in read_csv(cfg.exports / month / "allocation_by_source_and_team.csv"):
            per_source[r["team"]] += Decimal(r["effective_cost"])
        assert {r["team"]: Decimal(r["effective_cost"]) for r in by_team} == dict(per_source)
    wh.close()


def test_export_refuses_a_month_that_is_not_built_and_writes_csv_lines_when_asked(pack, tmp_path, capsys):
    from apportion import cli

    cfg, months = pack
    code = cli.main(["export", "--config", str(cfg.config_path), "--month", "2019-03", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and not (tmp_path / "x").exists()
    assert "month 2019-03 is not in the warehouse" in err and ", ".join(months) in err
    code = cli.main(["report", "--config", str(cfg.config_path), "--month", "2019-03", "--out", str(tmp_path / "r.html")])
    assert code == cli.EXIT_FAILED and "2019-03 is not in the warehouse" in capsys.readouterr().err
    code = cli.main(["export", "--config", str(cfg.config_path), "--month", months[0], "--out", str(tmp_path / "p"),
                     "--lines", "csv"])
    capsys.readouterr()
    assert code == cli.EXIT_OK
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(export_files("csv"))
    con = duckdb.connect()
    lines = con.execute("SELECT sum(CAST(billed_cost AS DECIMAL(38,12))), count(*) FROM read_csv(?, all_varchar = true)",
                        [str(tmp_path / "p" / "allocation_lines.csv.gz")]).fetchone()
    assert lines == con.execute("SELECT sum(billed_cost), count(*) FROM read_parquet(?)",
                                [str(cfg.exports / months[0] / "allocation_lines.parquet")]).fetchone()
    with gzip.open(tmp_path / "p" / "allocation_lines.csv.gz", "rt") as fh:
        assert all(PLAIN_DECIMAL.fullmatch(r["billed_cost"]) for r in csv.DictReader(fh))


def test_value_classes_and_shared_cost_splits(pack):
    cfg, months = pack
    month = months[0]
    classes = {r["value_class"] for r in read_csv(cfg.exports / month / "allocation_by_value_class.csv")}
    assert {"production", "experimental", "background"} <= classes
    splits = read_csv(cfg.exports / month / "shared_cost_splits.csv")
    assert splits, "the demo taxonomy splits tax, support and commitment fees"
    pieces = defaultdict(list)
    for r in splits:
        assert r["rule_id"] and json.loads(r["method_details"])
        pieces[(r["source"], r["line_id"])].append(r)
    for rows in pieces.values():
        # The pieces of a split line sum exactly to the line, and say which rule made them.
        assert sum(Decimal(r["billed_cost"]) for r in rows) == Decimal(rows[0]["line_billed_cost"])
        assert sum(Decimal(r["effective_cost"]) for r in rows) == Decimal(rows[0]["line_effective_cost"])
        assert len({r["rule_id"] for r in rows}) == 1
    assert {r["rule_id"] for r in splits} >= {"tax-follows-usage", "support-plan-shares"}


def test_every_table_and_view_is_documented_and_analyst_queries_run(pack):
    cfg, months = pack
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    relations = con.execute(
        "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
        "UNION ALL SELECT view_name, comment FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal").fetchall()
    names = {n for n, _ in relations}
    assert set(steps.WAREHOUSE_TABLES) | {"monthly_spend"} <= names
    assert [n for n, c in relations if not c] == []
    undocumented = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' AND NOT internal "
        "AND (comment IS NULL OR comment = '')").fetchall()
    assert undocumented == []
    # Every table and view is in the "Tables" table of docs/warehouse.md.
    page = (REPO / "docs" / "warehouse.md").read_text(encoding="utf-8")
    tables = page.split("\n## Tables\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", tables, re.M))
    assert names <= listed, names - listed

    month = months[0]
    # monthly_spend is allocations by month x provider x team x project x workload: same totals.
    assert con.execute("SELECT sum(BilledCost) FROM monthly_spend WHERE x_BillingMonth = ?", [month]).fetchone() == \
        con.execute("SELECT sum(BilledCost) FROM line_items WHERE x_BillingMonth = ?", [month]).fetchone()


def test_every_docs_and_readme_query_runs_on_the_demo(pack):
    """Every SQL block of docs/warehouse.md and README.md, as written, returns rows on the demo warehouse."""
    cfg, months = pack
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    ran = 0
    for doc in (REPO / "docs" / "warehouse.md", REPO / "README.md"):
        for block in re.findall(r"```sql\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for statement in block.split(";"):
                sql = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
                if sql:  # as written: the demo holds last month, which the docs' relative month names
                    assert con.execute(sql).fetchall(), (doc.name, sql)
                    ran += 1
    assert ran >= 11  # 3 examples + 7 analyst queries in docs/warehouse.md, 1 in the README
