"""Issue 10: the month's summaries are computed once, when their inputs change; the warehouse only stitches them.

Three generated CUR 2.0 months (400 rows each) go through the steps; the tests count which partitions the
summaries read (not time) and recompute the aggregates by hand, in Python, from the allocation pieces.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import steps
from apportion.demo.generators import aws_cur as demo
from apportion.lake import SUMMARY_TABLES, current_version, partition_root
from apportion.models.config import load_config
from apportion.models.taxonomy import load_taxonomy
from apportion.steps import summaries

REPO = Path(__file__).resolve().parent.parent
MONTHS = ["2026-08", "2026-09", "2026-10"]


def _month(cfg, tax, month, summarise=True):
    src = cfg.source("aws-main")
    steps.land(cfg, src, month)
    steps.build_line_items(cfg, src, steps.current_delivery(cfg, src, month))
    steps.allocate(cfg, src, month, tax)
    if summarise:
        summaries.summarise(cfg, "aws-main", month)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("summaries")
    demo.main([str(root / "bucket"), "--months", *MONTHS, "--rows", "400"])
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    (root / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (root / "apportion.yaml").write_text("warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n"
                                         f"    kind: aws_cur\n    uri: {root / 'bucket' / 'cur' / 'apportion-demo'}\n")
    cfg = load_config(root / "apportion.yaml")
    tax = load_taxonomy(cfg.taxonomy)
    for m in MONTHS:
        _month(cfg, tax, m)
    steps.build_warehouse(cfg, tax)
    return cfg, tax


def _versions(cfg) -> dict[tuple[str, str, str], str]:
    out = {}
    for table in SUMMARY_TABLES:
        for root in sorted((cfg.lake / table).glob("x_SourceName=*/x_BillingMonth=*")):
            v = current_version(root)
            if v is not None:
                out[(table, root.parent.name, root.name)] = v.name
    return out


def _spy(monkeypatch):
    """Record every summary computed and every input file a summary reads."""
    calls, read = [], []
    for name in ("summarise", "summarise_month"):
        real = getattr(summaries, name)

        def spy(*a, _real=real, _name=name, **k):
            calls.append((_name, a[1], a[2]) if _name == "summarise" else (_name, a[1]))
            return _real(*a, **k)

        monkeypatch.setattr(summaries, name, spy)
    real_views = summaries.lake_views

    def views(con, li, al, q, temp=True):
        if temp:  # a summary's own views (the published file's are built over every current file)
            read.extend(p for p in (*li, *al, *q))
        return real_views(con, li, al, q, temp)

    monkeypatch.setattr(summaries, "lake_views", views)
    return calls, read


def test_a_nightly_run_of_the_open_month_summarises_only_that_month(lake, monkeypatch):
    cfg, tax = lake
    before = _versions(cfg)
    assert {(t, m) for t, _, m in before} >= {(t, f"x_BillingMonth={m}") for t in SUMMARY_TABLES for m in MONTHS
                                               if t not in summaries.PER_MONTH.values()}
    calls, read = _spy(monkeypatch)
    steps.build_warehouse(cfg, tax)  # nothing changed: no summary is recomputed, none read a partition
    assert (calls, read) == ([], [])
    assert _versions(cfg) == before

    _month(cfg, tax, "2026-10", summarise=False)  # the open month rebuilt (its summaries now stale)
    steps.build_warehouse(cfg, tax)
    assert calls == [("summarise", "aws-main", "2026-10"), ("summarise_month", "2026-10")]
    assert read and {summaries._source_month(p)[1] for p in read} == {"2026-10"}
    after = _versions(cfg)
    changed = {(t, m) for k, v in after.items() for t, _, m in [k] if before.get(k) != v}
    assert {m for _, m in changed} == {"x_BillingMonth=2026-10"}
    assert {t for t, _ in changed} == set(SUMMARY_TABLES)  # every summary of the month, per source and per month


def _pieces(cfg):
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        return con.execute("SELECT x_BillingMonth, x_SourceName, BillingCurrency, ProviderName, x_Team, x_TeamReason, "
                           "BilledCost, EffectiveCost, ListCost FROM allocations").fetchall()
    finally:
        con.close()


def test_the_summaries_equal_sums_of_the_pieces_by_hand(lake):
    cfg, _ = lake
    pieces = _pieces(cfg)
    assert len({p[0] for p in pieces}) == 3 and len(pieces) >= 1200
    spend = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0)])
    cov = defaultdict(lambda: defaultdict(Decimal))
    for month, source, cur, provider, team, reason, billed, effective, listed in pieces:
        s = spend[(month, source, cur, provider, team)]
        s[0] += 1
        s[1] += billed
        s[2] += effective
        s[3] += listed or 0
        status = ("untagged" if team == "untagged" else "shared" if team == "shared"
                  else "spread" if (reason or "").startswith("spread:") else "attributed")
        c = cov[(month, source, cur)]
        c[status] += effective
        c[status + "_abs"] += abs(effective)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        got = {tuple(r[:5]): list(r[5:]) for r in con.execute(
            "SELECT x_BillingMonth, x_SourceName, BillingCurrency, ProviderName, x_Team, sum(pieces), sum(BilledCost), "
            "sum(EffectiveCost), sum(ListCost) FROM monthly_spend GROUP BY ALL").fetchall()}
        coverage = {tuple(r[:3]): r[3:] for r in con.execute(
            "SELECT x_BillingMonth, x_SourceName, BillingCurrency, attributed_cost, untagged_cost, shared_cost, "
            "spread_cost, coverage FROM allocation_coverage WHERE dimension = 'team'").fetchall()}
        totals = {(r[0], r[1]): r[2:] for r in con.execute(
            "SELECT x_BillingMonth, x_SourceName, line_items_billed_cost, allocated_billed_cost, "
            "allocated_effective_cost, pieces, line_items FROM ledger_totals").fetchall()}
        li = {(r[0], r[1]): r[2:] for r in con.execute(
            "SELECT x_BillingMonth, x_SourceName, sum(BilledCost), count(*) FROM line_items GROUP BY ALL").fetchall()}
        kinds = dict(con.execute("SELECT table_name, 'table' FROM duckdb_tables() UNION ALL "
                                 "SELECT view_name, 'view' FROM duckdb_views() WHERE NOT internal").fetchall())
    finally:
        con.close()
    assert got == {k: [v[0], v[1], v[2], v[3]] for k, v in spend.items()}
    for key, c in cov.items():
        attributed, untagged, shared, spread, ratio = coverage[key]
        assert (attributed, untagged, shared, spread) == (c["attributed"], c["untagged"], c["shared"], c["spread"])
        by_hand = c["attributed_abs"] / (c["attributed_abs"] + c["untagged_abs"] + c["spread_abs"])
        assert ratio == pytest.approx(float(round(by_hand, 6)), abs=1e-9)
    for (month, source), (li_billed, al_billed, al_effective, n_pieces, n_lines) in totals.items():
        assert li_billed == al_billed == li[(month, source)][0]
        assert n_lines == li[(month, source)][1]
        assert n_pieces == sum(v[0] for k, v in spend.items() if k[:2] == (month, source))
        assert al_effective == sum(v[2] for k, v in spend.items() if k[:2] == (month, source))
    # small summaries are tables in the file, the large ones (one row per resource / GPU piece) views over the lake
    assert (kinds["ledger_totals"], kinds["monthly_spend"], kinds["allocation_coverage"]) == ("table",) * 3
    assert (kinds["untagged_spend"], kinds["allocations"], kinds["line_items"]) == ("view",) * 3


def test_a_lake_from_before_summaries_is_summarised_at_the_next_build(lake, monkeypatch):
    cfg, tax = lake
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    q = "SELECT * FROM untagged_spend ORDER BY ALL"
    before = con.execute(q).fetchall()
    con.close()
    import shutil

    for table in SUMMARY_TABLES:
        shutil.rmtree(cfg.lake / table)
    calls, _ = _spy(monkeypatch)
    steps.build_warehouse(cfg, tax)
    assert sorted(calls) == sorted([("summarise", "aws-main", m) for m in MONTHS] +
                                   [("summarise_month", m) for m in MONTHS])
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        assert con.execute(q).fetchall() == before and before
    finally:
        con.close()


def test_a_month_whose_line_items_were_rebuilt_without_allocation_is_not_published(lake):
    cfg, tax = lake
    published = cfg.duckdb_path.stat().st_mtime_ns
    src = cfg.source("aws-main")
    # the line items of 2026-09 rebuilt, then a one-row change to them: the allocation no longer ties out
    steps.build_line_items(cfg, src, steps.current_delivery(cfg, src, "2026-09"))
    root = partition_root(cfg.lake, steps.LINE_ITEMS, "aws-main", "2026-09")
    [f] = sorted(current_version(root).glob("*.parquet"))[:1]
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * REPLACE (CASE WHEN x_LineId = 1 THEN BilledCost + 1 ELSE BilledCost END AS BilledCost) "
                f"FROM read_parquet('{f}')) TO '{f}.new' (FORMAT parquet)")
    con.close()
    Path(f"{f}.new").replace(f)
    with pytest.raises(steps.WarehouseNotPublished, match="aws-main 2026-09: line items billed"):
        steps.build_warehouse(cfg, tax)
    assert cfg.duckdb_path.stat().st_mtime_ns == published
    _month(cfg, tax, "2026-09", summarise=False)
    steps.build_warehouse(cfg, tax)  # rebuilt: published again


def test_a_warehouse_over_an_empty_lake_has_the_lake_views_with_no_rows(tmp_path):
    """Every source failed on a first run: the published file still answers (its line_items view once failed to
    bind: it selected FOCUS columns from a relation that had none)."""
    from apportion.models.focus import LINE_ITEM_COLUMNS

    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text("warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
                                             "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    steps.build_warehouse(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        assert [r[0] for r in con.execute("DESCRIBE line_items").fetchall()] == [c.name for c in LINE_ITEM_COLUMNS]
        for view in ("line_items", "allocations", "quarantined_rows"):
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
        assert "reason" in {r[0] for r in con.execute("DESCRIBE quarantined_rows").fetchall()}
    finally:
        con.close()
