"""Issue 10, the last growth with history: a nightly run of one month re-renders that month's report page and the
index only (the other pages stay as earlier runs wrote them; the month list is the shared months.js), and
savings recomputes that month's recommendations only, reading none of the other months' partitions.

Generated CUR 2.0 months (400 rows each) go through the real steps; the tests count files rewritten (bytes and
mtimes) and partitions read, never time.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from apportion import report as report_mod
from apportion import savings, steps
from apportion.demo.generators import aws_cur as demo
from apportion.models.config import load_config
from apportion.models.taxonomy import load_taxonomy
from tests.test_report_browser import browser, open_report  # noqa: F401  (the Chromium fixture)

REPO = Path(__file__).resolve().parent.parent
MONTHS = ["2026-08", "2026-09", "2026-10"]


def _month(cfg, tax, month):
    src = cfg.source("aws-main")
    steps.land(cfg, src, month)
    steps.build_line_items(cfg, src, steps.current_delivery(cfg, src, month))
    steps.allocate(cfg, src, month, tax)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two months built and reported; the third month comes in the test."""
    root = tmp_path_factory.mktemp("report-history")
    demo.main([str(root / "bucket"), "--months", *MONTHS, "--rows", "400"])
    (root / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (root / "apportion.yaml").write_text(yaml.safe_dump({
        "warehouse": "data", "taxonomy": "taxonomy.yaml",
        "sources": [{"name": "aws-main", "kind": "aws_cur", "uri": str(root / "bucket" / "cur" / "apportion-demo")}],
        "savings": {"min_saving": "0"}}, sort_keys=False))
    cfg = load_config(root / "apportion.yaml")
    tax = load_taxonomy(cfg.taxonomy)
    for m in MONTHS[:2]:
        _month(cfg, tax, m)
    steps.build_warehouse(cfg, tax)
    return cfg, tax


def _files(cfg) -> dict[str, tuple[int, bytes]]:
    folder = report_mod.report_path(cfg).parent
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def _rewritten(before: dict, after: dict) -> set[str]:
    return {name for name, stat in after.items() if before.get(name) != stat}


def _recommendations(cfg) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    try:
        rows = con.execute("SELECT * EXCLUDE (evidence), CAST(evidence AS VARCHAR) FROM recommendations "
                           "ORDER BY ALL").fetchall()
        skipped = con.execute("SELECT * FROM savings_skipped ORDER BY ALL").fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple]] = {}
    for r in rows:
        out.setdefault(r[2], []).append(("rec", *r))
    for r in skipped:
        out.setdefault(r[1], []).append(("skip", *r))
    return out


def _spy_savings(monkeypatch) -> list[tuple[list[str], dict[str, list[str]]]]:
    calls = []
    real = savings.input_files

    def spy(con, months):
        files = real(con, months)
        calls.append((list(months), files))
        return files

    monkeypatch.setattr(savings, "input_files", spy)
    return calls


def test_a_run_of_one_month_rewrites_its_page_and_the_index_only(project, browser, monkeypatch):  # noqa: F811
    cfg, tax = project
    report_mod.write_report(cfg)
    first = _files(cfg)
    assert set(first) == {"index.html", "months.js", "month-2026-08.html", "month-2026-09.html"}

    # nothing changed: the month pages stay as written, the index and the month list are rewritten
    report_mod.write_report(cfg)
    again = _files(cfg)
    assert _rewritten(first, again) <= {"index.html", "months.js"}
    assert again["month-2026-08.html"] == first["month-2026-08.html"]

    # a new month: its page is added, the older pages are left alone
    _month(cfg, tax, "2026-10")
    steps.build_warehouse(cfg, tax)
    report_mod.write_report(cfg)
    third = _files(cfg)
    assert _rewritten(again, third) == {"index.html", "months.js", "month-2026-10.html"}

    # the nightly run of the open month again: that page and the index only
    calls = _spy_savings(monkeypatch)
    before_recs = _recommendations(cfg)
    _month(cfg, tax, "2026-10")
    steps.build_warehouse(cfg, tax)
    report_mod.write_report(cfg)
    fourth = _files(cfg)
    assert _rewritten(third, fourth) == {"index.html", "months.js", "month-2026-10.html"}
    # savings (same build): only 2026-10 recomputed, from 2026-10's partitions only; other months' rows as they were
    assert [months for months, _ in calls] == [["2026-10"]]
    read = [p for fs in calls[0][1].values() for p in fs]
    assert read and all("x_BillingMonth=2026-10" in p for p in read)
    assert calls[0][1]["allocations"] and all("/allocations/" in p for p in calls[0][1]["allocations"])
    after_recs = _recommendations(cfg)
    assert set(after_recs) >= {"2026-08", "2026-09"}  # findings or skips: something to keep in each month
    for m in ("2026-08", "2026-09"):
        assert after_recs[m] == before_recs[m]

    # `--month M` re-renders M's page; `--all` every page
    report_mod.write_report(cfg, "2026-08")
    fifth = _files(cfg)
    assert _rewritten(fourth, fifth) == {"index.html", "months.js", "month-2026-08.html"}
    report_mod.write_report(cfg, all_pages=True)
    sixth = _files(cfg)
    assert _rewritten(fifth, sixth) == set(sixth)

    # an edited taxonomy (likewise budgets, token policies) may change what any page shows: all are rewritten
    cfg.taxonomy.write_text(cfg.taxonomy.read_text() + "\n# edited\n")
    report_mod.write_report(cfg)
    assert _rewritten(sixth, _files(cfg)) == set(sixth)

    # the shared month list: every month, newest first; an older page lists the newer months through it
    js = (report_mod.report_path(cfg).parent / "months.js").read_text()
    listed = json.loads(js[js.index("["):js.rindex("]") + 1])
    assert [m["month"] for m in listed] == ["2026-10", "2026-09", "2026-08"]
    page, errors, external = open_report(browser, report_mod.report_path(cfg).parent / "month-2026-08.html")
    try:
        picker = page.locator("[data-testid=month-picker]")
        assert picker.locator("strong").inner_text().startswith("2026-08")
        assert [a.get_attribute("data-month") for a in picker.locator("a").all()] == ["2026-10", "2026-09"]
        # the page is the month's snapshot: its trend stops at its own month
        assert page.evaluate("() => document.getElementById('chart-coverage-trend').data[0].x") == ["2026-08"]
        assert errors == [] and external == []
    finally:
        page.close()


def test_savings_without_changes_reads_no_partition(project, monkeypatch):
    cfg, tax = project
    steps.build_warehouse(cfg, tax)
    calls = _spy_savings(monkeypatch)
    before = _recommendations(cfg)
    steps.build_warehouse(cfg, tax)
    assert calls == [([], {"line_items": [], "allocations": [], "gpu_usage": []})]
    assert _recommendations(cfg) == before
