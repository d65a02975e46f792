"""The finance pack ties out to the invoice; Parquet twins; documented column names; analyst views.

Runs on the demo bill (fixture `outputs_demo_project` in conftest.py: `apportion run --all` on a
deterministic CUR 2.0 export with split rules, value classes, tokens and GPU instances).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from apportion import steps
from apportion.models.config import load_config

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


def documented_columns() -> dict[str, list[str]]:
    """file name -> columns, from the "Files and columns" table of docs/exports.md."""
    page = (REPO / "docs" / "exports.md").read_text(encoding="utf-8")
    section = page.split("\n## Files and columns\n", 1)[1].split("\n## ", 1)[0]
    files: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        columns = [c.strip(" `") for c in cells[1].split(",")]
        for name in re.findall(r"`([^`]+\.csv)`", cells[0]):
            if "<dimension>" in name:
                for d in ("team", "project", "workload", "value_class"):
                    files[name.replace("<dimension>", d)] = [d if c == "<dimension>" else c for c in columns]
            else:
                files[name] = columns
    return files


def test_every_file_has_its_parquet_twin_and_documented_columns(pack):
    cfg, months = pack
    documented = documented_columns()
    assert sorted(documented) == sorted(f for f in steps.EXPORT_FILES if f.endswith(".csv"))
    con = duckdb.connect()
    for month in months:
        folder = cfg.exports / month
        assert sorted(p.name for p in folder.iterdir()) == sorted(steps.EXPORT_FILES)
        for name, columns in documented.items():
            csv_path, pq_path = folder / name, (folder / name).with_suffix(".parquet")
            with open(csv_path, newline="") as fh:
                assert next(csv.reader(fh)) == columns, name
            types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{pq_path}')").fetchall()}
            assert list(types) == columns, name
            for col, typ in types.items():
                if col.endswith("_cost"):
                    assert typ == "DECIMAL(38,12)", (name, col, typ)  # exact money, never float
            # Same rows, value for value (CSV text = Parquet value cast to text).
            as_text = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns)
            diff = con.execute(
                f"(SELECT * FROM read_csv('{csv_path}', header = true, all_varchar = true) "
                f"EXCEPT ALL SELECT {as_text} FROM read_parquet('{pq_path}')) UNION ALL "
                f"(SELECT {as_text} FROM read_parquet('{pq_path}') "
                f"EXCEPT ALL SELECT * FROM read_csv('{csv_path}', header = true, all_varchar = true))").fetchall()
            assert diff == [], (name, diff[:3])
            assert len(read_csv(csv_path)) == con.execute(f"SELECT count(*) FROM read_parquet('{pq_path}')").fetchone()[0]


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
        assert {r["invoice_id"] for r in control} == set(invoice)
        for row in control:
            assert row["provider"] == "AWS" and row["billing_currency"] == "USD"
            assert Decimal(row["line_items_billed_cost"]) == invoice[row["invoice_id"]]
            assert Decimal(row["allocated_billed_cost"]) == invoice[row["invoice_id"]]
            assert row["ties_out"] == "true"
        total = sum(invoice.values())
        for name in ("team", "project", "workload", "value_class"):
            rows = read_csv(cfg.exports / month / f"allocation_by_{name}.csv")
            assert sum(Decimal(r["billed_cost"]) for r in rows) == total, name
        lines = read_csv(cfg.exports / month / "allocation_lines.csv")
        assert sum(Decimal(r["billed_cost"]) for r in lines) == total
        assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", r["charge_period_start"]) for r in lines)


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

    block = re.search(r"Analyst queries.*?```sql\n(.*?)```", page, re.S).group(1)
    month = months[0]
    ran = 0
    for statement in block.split(";"):
        sql = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
        if sql:
            assert con.execute(sql.replace("2026-10", month)).fetchall(), sql
            ran += 1
    assert ran >= 5
    # monthly_spend is allocations by month x provider x team x project x workload: same totals.
    assert con.execute("SELECT sum(BilledCost) FROM monthly_spend WHERE x_BillingMonth = ?", [month]).fetchone() == \
        con.execute("SELECT sum(BilledCost) FROM line_items WHERE x_BillingMonth = ?", [month]).fetchone()
