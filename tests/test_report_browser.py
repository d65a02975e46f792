"""The HTML report, opened in a real headless Chromium (Debian's `chromium`) driven by Playwright.

No console errors, no network requests (the page is self-contained), every chart rendered, and the key
figures on the page equal the warehouse's. A screenshot goes to test-artifacts/report.png.
With CI=true a missing browser fails the test instead of skipping it (.ci/run installs chromium).
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlparse

import duckdb
import pytest

from apportion import cli, report, steps
from apportion.models.config import load_config
from tests.test_allocation import write_delivery

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"


def _missing(what: str):
    message = f"{what} (.ci/run installs Debian's chromium; pip installs playwright from pyproject.toml)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _missing(f"no browser at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_report(browser, path: Path, width: int = 1400):
    """Open a report file; return (page, console errors, requests that tried to leave the file)."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    errors: list[str] = []
    external: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, external


def test_report_in_chromium_shows_the_warehouse_figures(outputs_demo_project, browser):
    cfg_path, summary = outputs_demo_project
    cfg = load_config(cfg_path)
    path = report.report_path(cfg)
    assert summary["report"] == str(path)  # written by the nightly job (asset out_report)

    page, errors, external = open_report(browser, path)
    try:
        # Every chart is drawn: plotly replaced each div's content with SVG holding real marks.
        page.wait_for_function(
            "() => [...document.querySelectorAll('.chart .plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
            timeout=20_000)
        charts = page.eval_on_selector_all(
            ".chart", """els => els.map(e => ({
                id: e.dataset.testid,
                svgs: e.querySelectorAll('svg.main-svg').length,
                marks: e.querySelectorAll('.trace .point path, .trace path.js-line, .trace .points path').length,
                width: e.querySelector('.plotly-graph-div').getBoundingClientRect().width,
                card: e.getBoundingClientRect().width }))""")
        ids = {c["id"] for c in charts}
        assert {"chart-spend-by-team", "chart-spend-by-provider", "chart-untagged-by-dimension",
                "chart-coverage-trend", "chart-untagged-by-account", "chart-tokens-by-model-team",
                "chart-cost-per-mtok", "chart-gpu-hours-by-team"} <= ids
        for c in charts:
            assert c["svgs"] >= 1 and c["marks"] >= 1, c
            assert c["width"] <= c["card"] + 1, f"{c['id']} overflows its card"

        # Key figures equal the warehouse's, exactly (data-value) and as shown (text).
        con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
        # the report opens on the latest complete month (its last day billed), not a month to date
        ends = con.execute("SELECT x_BillingMonth, max(CAST(ChargePeriodEnd AS TIMESTAMP)) FROM line_items "
                           "GROUP BY 1 ORDER BY 1").fetchall()
        complete = [m for m, end in ends if end.strftime("%Y-%m") > m]
        month = complete[-1] if complete else ends[-1][0]
        assert page.title() == f"apportion report – {month}"
        billed = con.execute("SELECT BillingCurrency, sum(BilledCost) FROM line_items WHERE x_BillingMonth = ? "
                             "GROUP BY ALL", [month]).fetchall()
        allocated = dict(con.execute("SELECT BillingCurrency, sum(BilledCost) FROM allocations "
                                     "WHERE x_BillingMonth = ? GROUP BY ALL", [month]).fetchall())
        [(coverage,)] = con.execute("SELECT coverage FROM allocation_coverage WHERE x_BillingMonth = ? "
                                    "AND dimension = 'team'", [month]).fetchall()  # one source
        con.close()
        shown_billed = page.locator("[data-testid=total-billed]")
        assert shown_billed.count() == len(billed) == 1
        [(currency, total)] = billed
        assert shown_billed.get_attribute("data-currency") == currency
        assert Decimal(shown_billed.get_attribute("data-value")) == total
        assert shown_billed.inner_text() == f"{total.quantize(Decimal('0.01')):,} {currency}"
        shown_alloc = page.locator("[data-testid=total-allocated]")
        assert Decimal(shown_alloc.get_attribute("data-value")) == allocated[currency] == total
        assert page.locator("[data-testid=ties-out]").inner_text() == "ties out to the invoice exactly"
        shown_cov = page.locator("[data-testid=coverage]")
        assert float(shown_cov.get_attribute("data-value")) == pytest.approx(coverage, abs=1e-9)
        assert shown_cov.inner_text() == f"{coverage * 100:.1f} %"

        # AI unit economics from the demo bill: Bedrock tokens and GPU instance-hours.
        token_rows = page.locator("[data-testid=token-economics] tbody tr")
        assert token_rows.count() >= 2
        assert "claude-sonnet-4-6" in page.locator("[data-testid=token-economics]").inner_text()  # decoded from the CUR
        assert page.locator("[data-testid=gpu-economics] tbody tr").count() >= 2

        # Links to the month's finance pack resolve to the files next to the report.
        hrefs = page.eval_on_selector_all("[data-testid=export-links] a", "els => els.map(a => a.href)")
        names = {Path(unquote(urlparse(h).path)).name for h in hrefs}
        assert {"control_totals.csv", "control_totals.parquet", "allocation_by_team.csv"} <= names
        assert all(Path(unquote(urlparse(h).path)).is_file() for h in hrefs)

        assert errors == []
        assert external == []  # self-contained: no CDN, no fonts, nothing fetched
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert (ARTIFACTS / "report.png").stat().st_size > 50_000
    finally:
        page.close()


def test_report_command_month_out_and_errors(outputs_demo_project, browser, tmp_path, capsys):
    cfg_path, summary = outputs_demo_project
    first = summary["months"][0]["month"]
    out = tmp_path / "elsewhere" / "r.html"
    assert cli.main(["report", "--config", str(cfg_path), "--month", first, "--out", str(out)]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == str(out)
    page, errors, external = open_report(browser, out, width=900)  # narrow window: charts still fit
    try:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.chart .plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
            timeout=20_000)
        assert page.locator("h1").inner_text().endswith(first)
        assert errors == [] and external == []
    finally:
        page.close()

    code = cli.main(["report", "--config", str(cfg_path), "--month", "1999-01"])
    assert code == cli.EXIT_FAILED and "month 1999-01 is not in the warehouse" in capsys.readouterr().err
    code = cli.main(["report", "--config", str(cfg_path), "--month", "2026-13"])
    assert code == cli.EXIT_CONFIG


def test_report_without_ai_data_says_so(tmp_path, request, capsys):
    """A bill with no tokens and no GPUs: the AI panels are replaced by a note, not an empty chart."""
    write_delivery(tmp_path / "bucket")
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    cfg = str(tmp_path / "apportion.yaml")
    assert cli.main(["report", "--config", cfg]) == cli.EXIT_FAILED
    assert "no warehouse" in capsys.readouterr().err
    # The ledger steps directly (not the Dagster job: Playwright's event loop is already running in this module).
    config = load_config(cfg)
    source = config.sources[0]
    steps.build_line_items(config, source, steps.land(config, source, "2026-10"))
    steps.allocate(config, source, "2026-10")
    steps.build_warehouse(config)
    steps.export_month(config, "2026-10")
    assert cli.main(["report", "--config", cfg]) == cli.EXIT_OK
    path = tmp_path / "data" / "report" / "index.html"
    assert capsys.readouterr().out.strip() == str(path)
    page, errors, external = open_report(request.getfixturevalue("browser"), path)
    try:
        assert page.locator("[data-testid=no-token-data]").count() == 1
        assert page.locator("[data-testid=no-gpu-data]").count() == 1
        assert page.locator("[data-testid=chart-spend-by-team] svg.main-svg").count() >= 1
        assert errors == [] and external == []
    finally:
        page.close()


def test_html_tables_escape_data():
    html = report.table(["resource"], [["<img src=x onerror=alert(1)>"]])
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_report_prefers_the_warehouse_unit_economics_tables(outputs_demo_project, tmp_path):
    """With llm_unit_economics / gpu_unit_economics / gpu_top_idle_jobs in the warehouse (LLM and GPU sources),
    the AI panel reads them: usage providers from the table (one usage source each, never summed), Bedrock
    from the bill, measured GPU-hours with utilisation, the top idle jobs."""
    cfg_path, summary = outputs_demo_project
    cfg = load_config(cfg_path)
    copy = tmp_path / "apportion.duckdb"
    shutil.copy(cfg.duckdb_path, copy)
    month = summary["months"][-1]["month"]
    con = duckdb.connect(str(copy))
    con.execute(
        "CREATE OR REPLACE TABLE llm_unit_economics AS SELECT * FROM (VALUES "
        "(?, 'openai', 'gateway', 'USD', 'search', 'chatbot', 'inference', 'gpt-4o', 2000000.0, 30.0, 45.0),"
        "(?, 'openai', 'usage-api', 'USD', 'search', 'chatbot', 'inference', 'gpt-4o', 1000000.0, 15.0, 22.0)) "
        "AS t(x_BillingMonth, provider, usage_source, billing_currency, team, project, workload, model, tokens, "
        "priced_cost, invoiced_cost)", [month, month])
    con.execute(
        "CREATE OR REPLACE TABLE gpu_unit_economics AS SELECT * FROM (VALUES "
        "(?, 'research', 'training', 'h100', 'USD', 1000.0, 2500.0, 0.5),"
        "(?, 'research', 'inference', 'h100', 'USD', 500.0, 1250.0, 0.8)) "
        "AS t(x_BillingMonth, x_Team, x_Workload, x_GpuModel, BillingCurrency, gpu_hours, priced_cost, utilization)",
        [month, month])
    con.execute(  # a view cannot take parameters; month is 'YYYY-MM' from our own run
        f"CREATE OR REPLACE VIEW gpu_top_idle_jobs AS SELECT * FROM (VALUES "
        f"('{month}', 'onprem', 'job-4711', 'research', 'h100', 'USD', 1000.0, 0.25, 1875.0)) "
        "AS t(x_BillingMonth, x_Cluster, x_JobId, x_Team, x_GpuModel, BillingCurrency, gpu_hours, utilization, idle_cost)")
    tokens = report.token_economics(con, month)
    openai = [r for r in tokens if r["provider"] == "openai"]
    assert openai == [{"provider": "openai", "model": "gpt-4o", "team": "search", "basis": "invoice share of gateway",
                       "currency": "USD", "tokens": 2000000.0, "cost": 45.0}]
    assert {r["model"] for r in tokens if r["provider"] == "aws"} == {"nova-pro", "claude-sonnet-4-6"}
    gpus = report.gpu_economics(con, month)
    [measured] = [r for r in gpus if r["basis"] == "usage"]
    assert (measured["team"], measured["gpu_model"], measured["gpu_hours"], measured["cost"]) == (
        "research", "h100-80gb", 1500.0, 3750.0)  # one GPU vocabulary: h100 is the H100 80GB
    assert measured["utilization"] == pytest.approx(0.6)
    assert any(r["basis"] == "invoice" for r in gpus)  # the cloud GPU instances of the bill stay, apart
    page = report.render(con, cfg, month, tmp_path)
    con.close()
    assert 'data-testid="chart-gpu-utilisation"' in page and 'data-testid="gpu-idle-jobs"' in page
    assert "job-4711" in page and "invoice share of gateway" in page


def test_report_opens_on_a_complete_month_fits_phone_and_desktop_and_shows_owners(outputs_demo_project, browser):
    """Issue 14 points 1 and 9: the index opens on the latest complete month (an open month says month to
    date), every month has its page, no horizontal overflow at 390 px and 1,400 px, the top untagged owners
    are one row per owner with who created it, and no $0 account is charted; figures equal DuckDB's."""
    cfg_path, _ = outputs_demo_project
    cfg = load_config(cfg_path)
    path = report.report_path(cfg)
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    months = [r[0] for r in con.execute("SELECT DISTINCT x_BillingMonth FROM line_items ORDER BY 1").fetchall()]
    # by hand: a month is complete when its last day is billed (ChargePeriodEnd reaches the next month)
    ends = dict(con.execute("SELECT x_BillingMonth, max(CAST(ChargePeriodEnd AS TIMESTAMP)) FROM line_items "
                            "GROUP BY 1").fetchall())
    complete = [m for m in months if ends[m].strftime("%Y-%m") > m]
    expected = complete[-1] if complete else months[-1]
    owners = con.execute(
        "SELECT SubAccountId, ResourceId, created_by, sum(EffectiveCost) FROM untagged_spend WHERE x_BillingMonth = ? "
        "AND dimension = 'team' GROUP BY 1, 2, 3 HAVING round(sum(EffectiveCost), 2) <> 0 ORDER BY 4 DESC LIMIT 15",
        [expected]).fetchall()
    billed = con.execute("SELECT sum(BilledCost) FROM line_items WHERE x_BillingMonth = ?", [expected]).fetchone()[0]
    con.close()
    for m in months:
        assert (path.parent / report.month_page(m)).is_file()
    for width in (390, 1400):
        page, errors, external = open_report(browser, path, width=width)
        try:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.chart .plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
                timeout=20_000)
            assert page.locator("[data-testid=report-month]").get_attribute("data-month") == expected
            assert Decimal(page.locator("[data-testid=total-billed]").get_attribute("data-value")) == billed
            # the page never scrolls sideways; a wide table scrolls inside its own box
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate("""() => [...document.querySelectorAll('.chart, .scroll, .card')]
                .every(e => e.getBoundingClientRect().right <= document.documentElement.clientWidth + 1)""")
            rows = page.locator("[data-testid=top-untagged] tbody tr")
            assert rows.count() == len(owners)
            keys = [tuple(rows.nth(i).locator("td").nth(j).inner_text() for j in (0, 3)) for i in range(rows.count())]
            assert len(set(keys)) == len(keys)  # owners, not split pieces
            shown_created = {rows.nth(i).locator("td").nth(4).inner_text() for i in range(rows.count())}
            assert {o[2] for o in owners if o[2]} <= shown_created  # "created by" wherever the bill has it
            labels = page.evaluate("() => document.getElementById('chart-untagged-by-account').data[0].x")
            assert all(abs(v) >= 0.005 for v in labels)  # no $0 account
            assert page.evaluate("() => document.getElementById('chart-tokens-by-model-team').layout.xaxis.type") == "log"
            if expected != months[-1]:
                picker = page.locator("[data-testid=month-picker]").inner_text()
                assert f"{months[-1]} (month to date," in picker
            assert errors == [] and external == []
        finally:
            page.close()


def test_budget_burndown_and_anomaly_timeline_are_drawn_with_the_warehouse_figures(outputs_demo_project, browser,
                                                                                   tmp_path):
    """Issue 11 point 6: the demo's budgets (demo/guardrails/budgets.yaml) as a burn-down chart per budget with
    its forecast band, and an anomaly timeline; every plotted figure equals DuckDB's budget_burndown."""
    cfg_path, _ = outputs_demo_project
    root = tmp_path / "project"
    shutil.copytree(cfg_path.parent, root)  # a copy: the shared demo project stays as it is
    text = (root / "apportion.yaml").read_text()
    (root / "apportion.yaml").write_text(text + f"budgets: {REPO / 'demo' / 'guardrails' / 'budgets.yaml'}\n")
    cfg = load_config(root / "apportion.yaml")
    steps.build_warehouse(cfg)
    # the CUR-only demo has no spend anomaly: plant two episodes by hand, one with markup in its series name
    con = duckdb.connect(str(cfg.duckdb_path))
    con.executemany("INSERT INTO anomaly_episodes VALUES (?, ?, ?, '[]', ?, ?, ?, 'USD', ?, ?, ?, ?, ?, '[]')", [
        ("a-1", "team x service", "research / <img src=x onerror=alert(1)>", "2026-11-10", "2026-11-12", 3,
         Decimal("3000.00"), Decimal("9000.00"), Decimal("6000.00"), Decimal("2.0000"), False),
        ("a-2", "source", "aws-main", "2026-11-29", "2026-11-30", 2, Decimal("1000.00"), Decimal("1500.00"),
         Decimal("500.00"), Decimal("0.5000"), True)])
    con.close()
    out = tmp_path / "report.html"
    assert cli.main(["report", "--config", str(root / "apportion.yaml"), "--out", str(out)]) == cli.EXIT_OK

    page, errors, external = open_report(browser, out)
    try:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.chart .plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
            timeout=20_000)
        month = page.locator("[data-testid=report-month]").get_attribute("data-month")
        con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
        periods = con.execute(
            "SELECT budget, period, amount, actual, forecast, status FROM budget_status "
            "WHERE period_start <= CAST(? || '-01' AS DATE) AND CAST(? || '-01' AS DATE) < period_end ORDER BY budget",
            [month, month]).fetchall()
        burn = {(b, p): con.execute("SELECT day, kind, cumulative, low, high FROM budget_burndown WHERE budget = ? "
                                    "AND period = ? ORDER BY day, kind", [b, p]).fetchall() for b, p, *_ in periods}
        anomalies = con.execute("SELECT series_kind || ': ' || series, first_day, last_day, impact, provisional "
                                "FROM anomalies WHERE first_day < CAST(? || '-01' AS DATE) + INTERVAL 1 MONTH "
                                "ORDER BY first_day", [month]).fetchall()
        con.close()
        # the demo's three budgets: two monthly (closed for a complete month), one quarterly (still open: forecast)
        assert {b for b, *_ in periods} == {"research-monthly", "ml-platform-monthly", "all-spend-quarter"}
        charts = page.locator("[data-testid=burndown]")
        assert charts.count() == len(periods)
        for i, (budget, period, amount, actual, forecast, status) in enumerate(periods):
            box = charts.nth(i)
            assert (box.get_attribute("data-budget"), box.get_attribute("data-period")) == (budget, period)
            assert Decimal(box.get_attribute("data-amount")) == amount
            assert Decimal(box.get_attribute("data-actual")) == actual
            assert Decimal(box.get_attribute("data-forecast")) == forecast
            assert box.get_attribute("data-status") == status
            assert box.locator("svg.main-svg").count() >= 1 and box.locator(".trace path.js-line").count() >= 2
            traces = page.evaluate(f"""() => document.getElementById('chart-burndown-{i + 1}').data.map(
                t => ({{name: t.name, x: t.x.map(String), y: t.y}}))""")
            by = {t["name"]: t for t in traces}
            rows = burn[(budget, period)]

            def plotted(name, column, kind, rows=rows, by=by):
                return ([Decimal(str(y)).quantize(Decimal("0.01")) for y in by[name]["y"]],
                        [r[column] for r in rows if r[1] == kind])

            got, want = plotted("actual", 2, "actual")
            assert got == want and want[-1] == actual  # the actual line ends at budget_status.actual
            assert by["actual"]["x"][-1].startswith(str([r[0] for r in rows if r[1] == "actual"][-1]))
            assert [Decimal(str(y)) for y in by["budget"]["y"]] == [amount, amount]
            if any(r[1] == "forecast" for r in rows):
                for name, column in (("forecast high", 4), ("80 % forecast band", 3)):
                    got, want = plotted(name, column, "forecast")
                    assert got == want
                got, want = plotted("forecast", 2, "forecast")
                assert got[1:] == want and got[-1] == forecast  # the path ends at the period-end forecast
        shown = page.locator("[data-testid=budget-status] tbody tr")
        assert shown.count() == len(periods)
        assert shown.nth(0).locator("td").nth(0).inner_text() == periods[0][0]
        assert month == "2026-11" and len(anomalies) == 2
        # the anomaly timeline: one segment per episode, first day to the day after the last, on its series' row
        segments = page.evaluate("""() => document.getElementById('chart-anomaly-timeline').data.map(
            t => ({x: t.x.map(v => String(v).slice(0, 10)), name: t.name}))""")
        assert [(t["x"], t["name"]) for t in segments] == [
            (["2026-11-10", "2026-11-13"], "anomaly"), (["2026-11-29", "2026-12-01"], "provisional")]
        ticks = page.eval_on_selector_all("[data-testid=chart-anomaly-timeline] .ytick text",
                                          "els => els.map(e => e.textContent)")
        assert sorted(ticks) == sorted(a[0] for a in anomalies)  # the markup shown as text
        assert page.locator("img").count() == 0  # never rendered as markup
        table_rows = page.locator("[data-testid=anomalies] tbody tr")
        assert table_rows.count() == 2
        assert table_rows.nth(0).locator("td").nth(5).inner_text() == "6,000.00 USD"
        assert table_rows.nth(1).locator("td").nth(6).inner_text() == "provisional"
        assert errors == [] and external == []
    finally:
        page.close()
