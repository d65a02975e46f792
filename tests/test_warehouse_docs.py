"""Issue 15: one place for the warehouse's descriptions (models/warehouse_docs.py) feeds COMMENT ON and the docs;
one SQL file per warehouse table, no DDL inside the warehouse step."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from apportion.models.warehouse_docs import COLUMN_DOCS, TABLE_DOCS
from apportion.steps import summaries

REPO = Path(__file__).resolve().parent.parent
# tables the guardrails, savings and close modules build and describe themselves
OTHER_MODULES = {"budget_status", "budget_burndown", "anomaly_episodes", "anomalies", "anomaly_history",
                 "token_policy_violations", "token_policy_checked", "alerts", "recommendations", "savings_skipped", "savings_inputs",
                 "closed_months",
                 "restatements", "restatement_tie_out"}


def documented_tables() -> set[str]:
    text = (REPO / "docs" / "warehouse.md").read_text()
    section = text.split("## Tables", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)`", section, flags=re.M))


def test_every_described_table_is_in_the_docs_and_the_other_way_round():
    listed = documented_tables()
    assert set(TABLE_DOCS) <= listed, set(TABLE_DOCS) - listed
    assert listed - OTHER_MODULES <= set(TABLE_DOCS), listed - OTHER_MODULES - set(TABLE_DOCS)
    assert set(COLUMN_DOCS) <= set(TABLE_DOCS)


def test_each_summary_and_view_has_its_own_sql_file_and_the_step_holds_no_ddl():
    have = {p.stem for p in (REPO / "sql" / "warehouse").glob("*.sql")}
    assert {*summaries.PER_SOURCE, *summaries.PER_MONTH, "portfolio", "gpu_top_idle_jobs", "deliveries",
            "lake_files"} <= have
    for name in ("warehouse.py", "summaries.py"):
        code = (REPO / "apportion" / "steps" / name).read_text()
        assert not re.search(r"CREATE (OR REPLACE )?TABLE \w+ AS SELECT \w", code, flags=re.I), name
        assert "COMMENT ON VIEW portfolio" not in code
    assert not (REPO / "sql" / "outputs").exists()


def test_the_published_comments_are_the_described_ones(outputs_demo_project):
    from apportion.models.config import load_config

    cfg = load_config(outputs_demo_project[0])
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        comments = dict(con.execute(
            "SELECT table_name, comment FROM duckdb_tables() UNION ALL "
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
        columns = {(t, c): d for t, c, d in con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal").fetchall()}
    finally:
        con.close()
    built = set(TABLE_DOCS) & set(comments)
    assert {"ledger_totals", "monthly_spend", "untagged_spend", "allocation_coverage", "portfolio",
            "llm_unit_economics", "gpu_usage"} <= built
    assert {t: comments[t] for t in built} == {t: TABLE_DOCS[t] for t in built}
    checked = 0
    for table, docs in COLUMN_DOCS.items():
        if table == "allocations" or table not in built:
            continue
        for col, doc in docs.items():
            if (table, col) in columns:
                assert columns[(table, col)] == doc, (table, col)
                checked += 1
    assert checked >= 60
