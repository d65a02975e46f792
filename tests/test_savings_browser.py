"""The report's savings panel in a real headless Chromium (same fixtures as tests/test_report_browser.py):
savings by kind and team and the top findings equal the warehouse's recommendations; data is escaped."""

from __future__ import annotations

from decimal import Decimal

import duckdb

from apportion import report
from tests.test_report_browser import browser, open_report  # noqa: F401  (the module-scoped browser fixture)
from tests.test_savings import LLM_SAVINGS, MONTH, llm_rows, project, run_all, write_csv
from tests.test_savings import PRICES as LLM_PRICES

EVIL = "<img src=x onerror=alert(1)>"


def test_savings_panel_in_chromium(tmp_path, browser):  # noqa: F811
    rows = llm_rows()
    for r in rows:  # the API key alias is data: it must show as text
        r["metadata"] = r["metadata"].replace('"search-prod"', '"' + EVIL.replace('"', '\\"') + '"')
    write_csv(tmp_path / "litellm" / "spend-2026-10.csv", rows)
    config = project(tmp_path, [{"name": "gw", "kind": "litellm", "uri": "litellm",
                                 "options": {"price_overrides": LLM_PRICES}}], LLM_SAVINGS)
    cfg, recs, _ = run_all(config)
    path = report.write_report(cfg, MONTH)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    [(total,)] = con.execute("SELECT sum(estimated_monthly_saving) FROM recommendations WHERE x_BillingMonth = ?",
                             [MONTH]).fetchall()
    con.close()
    assert total == Decimal("2.35")  # 1.06 + 0.88 + 0.41 (tests/test_savings.py computes each by hand)
    page, errors, external = open_report(browser, path)
    try:
        assert errors == [] and external == []
        shown = page.get_attribute('[data-testid="savings-total"]', "data-value")
        assert Decimal(shown) == total
        kinds = page.eval_on_selector_all('[data-testid="savings-by-kind"] tbody tr',
                                          "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        assert sorted((k, t, s) for k, t, _, s in kinds) == [
            ("prompt_caching", "search", "0.41 USD"), ("shorter_prompts", "search", "0.88 USD"),
            ("smaller_model", "search", "1.06 USD")]
        top = page.eval_on_selector_all('[data-testid="savings-top"] tbody tr',
                                        "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        assert [r[0] for r in top] == ["smaller_model", "shorter_prompts", "prompt_caching"]
        assert top[0][2] == EVIL and top[0][4] == "gpt-4o-mini"   # shown as text, never as markup
        assert page.locator('[data-testid="savings-top"] img').count() == 0
        assert page.locator("#savings h2").inner_text() == "Savings"
    finally:
        page.close()
