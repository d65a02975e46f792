"""The HTML report: one static, self-contained page for people who would rather look at a chart.

Written by the nightly job to `<warehouse>/report/index.html` and by `apportion report`. It reads
only the published warehouse (read-only, so it never sees a half-built file) and the month's export
folder (for the links). Charts are plotly figures; plotly.js is inlined once, so the page works
offline (no CDN, no fonts or scripts fetched). Key figures are exact decimals from the warehouse,
shown as text with `data-testid` / `data-value` attributes so a test can compare them.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from apportion.models.config import ApportionConfig
from apportion.models.focus import dimension_column
from apportion.sql import sql_text

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
           "#f97316", "#64748b", "#14b8a6", "#a855f7"]
# Fixed colours for the two buckets people look for first.
BUCKET_COLOURS = {"untagged": "#9ca3af", "shared": "#d1d5db"}


class ReportError(Exception):
    """The report cannot be written (no warehouse, unknown month)."""


@dataclass
class Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)


def report_path(cfg: ApportionConfig) -> Path:
    return cfg.warehouse / "report" / "index.html"


def month_page(month: str) -> str:
    """File name of a month's page next to index.html (one page per month, see write_report)."""
    return f"month-{month}.html"


def write_report(cfg: ApportionConfig, month: str | None = None, out: Path | None = None,
                 all_pages: bool = False) -> Path:
    """Render the report and write it atomically.

    Default (no `out`): `<warehouse>/report/index.html` opens on the latest COMPLETE month (an open month is
    never the first thing a reader sees; `month` picks another), and every month has its own page
    `month-YYYY-MM.html` next to it. One static page per month rather than a picker inside one page: each
    page stays self-contained and offline, shows one month's figures only, and a link to a month can be
    shared. A month's page is a snapshot: its trends run up to its own month, and it is rewritten only when
    what it shows changed (its mark: the lake versions of the months up to it, their state, its finance pack;
    issue 10), or for `month`, or every page with `all_pages`. So a nightly run of the open months renders
    their pages and the index only, whatever the history. The month list lives in `months.js` (rewritten on
    every run), which every page loads: an older page's picker still lists newer months.
    With `out`, only that one page is written (for `month`, default as above).
    """
    if not cfg.duckdb_path.exists():
        raise ReportError(f"no warehouse at {cfg.duckdb_path}; run `apportion run` first")
    default_out = out is None
    out = Path(out) if out else report_path(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    from apportion.db import open_published

    con = open_published(cfg)
    seen: dict = {}  # a month's token and GPU economics, looked up once for the index and its own page
    try:
        con.execute("SET TimeZone = 'UTC'")
        pages = {out: render(con, cfg, month, out.parent, month_links=default_out, seen=seen)}
        if default_out:
            all_months = months_in(con)
            marks = page_marks(con, cfg, all_months)
            for m in all_months:
                path = out.parent / month_page(m)
                if all_pages or m == month or page_mark(path) != marks[m]:
                    pages[path] = render(con, cfg, m, out.parent, month_links=True, upto=m, mark=marks[m],
                                         seen=seen)
            pages[out.parent / MONTHS_JS] = months_js(con, all_months)
    finally:
        con.close()
    for path, page in pages.items():
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    return out


MONTHS_JS = "months.js"
_MARK = re.compile(r'<meta name="apportion-page" content="([0-9a-f]+)">')


def page_mark(path: Path) -> str | None:
    """The mark a page was written with (in its first bytes, before plotly.js), None when there is no page."""
    try:
        with path.open("rb") as fh:
            head = fh.read(2048).decode("utf-8", "replace")
    except OSError:
        return None
    found = _MARK.search(head)
    return found.group(1) if found else None


def page_marks(con, cfg: ApportionConfig, all_months: list[str]) -> dict[str, str]:
    """month -> a hash of what its page shows: the lake files (versioned partitions and summaries) of every month
    up to it and those months' state (complete or to date), its finance pack, the config, taxonomy, budgets and
    token-policy files, the month closes and this module's code. A page whose mark is unchanged is left as an earlier run wrote it."""
    by_month: dict[str, list[str]] = {}
    shared: list[str] = []
    if "lake_files" in relations(con):
        for (p,) in con.execute("SELECT path FROM lake_files ORDER BY path").fetchall():
            m = re.search(r"x_BillingMonth=([^/\\]+)", p)
            (by_month.setdefault(m.group(1), []) if m else shared).append(p)
    base = hashlib.sha1(Path(__file__).read_bytes())
    for extra in (getattr(cfg, "config_path", None), cfg.taxonomy, cfg.budgets, cfg.token_policies,
                  cfg.warehouse / "closed" / "closes.jsonl"):
        if extra is not None and Path(extra).is_file():
            base.update(Path(extra).read_bytes())
    base.update("\0".join(shared).encode())
    marks, running = {}, base
    for m in all_months:
        running = running.copy()
        running.update(f"\0{m}\0{month_state(con, m)}\0{(cfg.exports / m).is_dir()}\0".encode()
                       + "\0".join(by_month.get(m, [])).encode())
        page = running.copy()
        folder = cfg.exports / m
        if folder.is_dir():
            page.update("".join(f"{p.name}:{p.stat().st_size};" for p in sorted(folder.iterdir())).encode())
        marks[m] = page.hexdigest()
    return marks


def months_js(con, all_months: list[str]) -> str:
    """The month list every page loads (`<script src="months.js">`), newest first: data as JSON, never markup."""
    items = [{"month": m, "label": month_label(con, m), "page": month_page(m)} for m in reversed(all_months)]
    return "window.apportionMonths = " + json.dumps(items) + ";\n"


# ------------------------------------------------------------------------------------------ data
def months_in(con) -> list[str]:
    src = "ledger_totals WHERE line_items > 0" if "ledger_totals" in relations(con) else "line_items"  # summaries
    return [r[0] for r in con.execute(f"SELECT DISTINCT x_BillingMonth FROM {src} ORDER BY 1").fetchall()]


def month_state(con, month: str, today: date | None = None) -> tuple[bool, int, int]:
    """(complete, days covered, days in month). A month is open while the clock is inside it or no billed
    line reaches its last day (the bills run to the latest ChargePeriodEnd of any invoice line)."""
    start = date(int(month[:4]), int(month[5:7]), 1)
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    days = (end - start).days
    last = con.execute(  # ledger_totals: the per source x month summary (steps/summaries.py), no scan of the lake
        "SELECT max(CAST(last_charge_end AS TIMESTAMP)) FROM ledger_totals WHERE x_BillingMonth = ?"
        if "ledger_totals" in relations(con) else
        "SELECT max(CAST(ChargePeriodEnd AS TIMESTAMP)) FROM line_items WHERE x_BillingMonth = ? "
        "AND coalesce(x_CostBasis, 'invoice') = 'invoice' AND ChargePeriodEnd IS NOT NULL", [month]).fetchone()[0]
    today = today or datetime.now(timezone.utc).date()
    covered = days if last is None else max(0, min(days, (last.date() - start).days + (1 if last.time() != time(0) else 0)))
    complete = today >= end and (last is None or covered >= days)
    return complete, covered if not complete else days, days


def default_month(con, all_months: list[str]) -> str | None:
    """The latest complete month; the latest month when none is complete yet."""
    for m in reversed(all_months):
        if month_state(con, m)[0]:
            return m
    return all_months[-1] if all_months else None


def month_label(con, month: str) -> str:
    complete, covered, days = month_state(con, month)
    return month if complete else f"{month} (month to date, {covered} of {days} days)"


def key_figures(con, month: str) -> list[dict]:
    """Per billing currency: total billed (line items), total allocated (allocations), EffectiveCost."""
    rows = con.execute(
        """
        WITH li AS (SELECT BillingCurrency AS currency, count(*) AS line_items, sum(BilledCost) AS billed
                    FROM line_items WHERE x_BillingMonth = $m GROUP BY ALL),
             al AS (SELECT BillingCurrency AS currency, sum(BilledCost) AS allocated, sum(EffectiveCost) AS effective
                    FROM allocations WHERE x_BillingMonth = $m GROUP BY ALL)
        SELECT currency, coalesce(line_items, 0), billed, allocated, effective
        FROM li FULL OUTER JOIN al USING (currency)
        ORDER BY abs(coalesce(billed, allocated)) DESC, currency
        """,
        {"m": month},
    ).fetchall()
    return [dict(zip(("currency", "line_items", "billed", "allocated", "effective"), r)) for r in rows]


def coverage(con, month: str | None, dimension: str) -> float | None:
    """Spend-weighted share attributed for one dimension, all sources: the allocation_coverage formula."""
    col = '"' + dimension_column(dimension).replace('"', '') + '"'
    where = "WHERE x_BillingMonth = $m" if month else ""
    if "spread_abs_cost" in columns_of(con, "allocation_coverage"):  # the summary: spread counts as attributed here
        row = con.execute(
            f"""SELECT round(sum(attributed_abs_cost + spread_abs_cost)
                       / nullif(sum(attributed_abs_cost + untagged_abs_cost + spread_abs_cost), 0), 6)
                FROM allocation_coverage WHERE dimension = $d {where.replace('WHERE', 'AND')}""",
            {"d": dimension, **({"m": month} if month else {})}).fetchone()
        return None if row[0] is None else float(row[0])
    row = con.execute(
        f"""SELECT round(coalesce(sum(abs(EffectiveCost)) FILTER (WHERE {col} NOT IN ('untagged', 'shared')), 0)
                   / nullif(sum(abs(EffectiveCost)) FILTER (WHERE {col} <> 'shared'), 0), 6)
            FROM allocations {where}""",
        {"m": month} if month else {},
    ).fetchone()
    return None if row[0] is None else float(row[0])


def coverage_trend(con) -> dict[tuple[str, str], float] | None:
    """(month, dimension) -> coverage() of every month, in one query over allocation_coverage (None: an older file)."""
    if "spread_abs_cost" not in columns_of(con, "allocation_coverage"):
        return None
    rows = con.execute("SELECT x_BillingMonth, dimension, round(sum(attributed_abs_cost + spread_abs_cost) / "
                       "nullif(sum(attributed_abs_cost + untagged_abs_cost + spread_abs_cost), 0), 6) "
                       "FROM allocation_coverage GROUP BY ALL").fetchall()
    return {(m, d): float(v or 0) for m, d, v in rows}


def dimensions(con) -> list[str]:
    dims = [r[0] for r in con.execute("SELECT DISTINCT dimension FROM allocation_coverage ORDER BY 1").fetchall()]
    core = [d for d in ("team", "project", "workload") if d in dims]
    return core + [d for d in dims if d not in core]


def columns_of(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'", [table]).fetchall()}


def relations(con) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "UNION SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal").fetchall()}


def _optional(cols: set[str], name: str) -> str:
    return f'"{name}"' if name in cols else "NULL"


def _rows(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _has(con, relation: str, needed: set[str]) -> bool:
    return relation in relations(con) and needed <= columns_of(con, relation)


LLM_UE_COLUMNS = {"x_BillingMonth", "provider", "usage_source", "billing_currency", "team", "model", "tokens",
                  "priced_cost", "invoiced_cost"}
GPU_UE_COLUMNS = {"x_BillingMonth", "x_Team", "x_GpuModel", "BillingCurrency", "gpu_hours", "priced_cost",
                  "utilization"}


def _once(seen: dict, kind: str, month: str, compute) -> list[dict]:
    """`compute()` once per (kind, month) in `seen`: each look-up scans the month's line items (seconds at millions of
    rows), and the index shows the same month as its own page."""
    if (kind, month) not in seen:
        seen[(kind, month)] = compute()
    return [dict(r) for r in seen[(kind, month)]]


def token_economics(con, month: str) -> list[dict]:
    """Tokens and cost per provider x model x team (x basis) for the month.

    Providers with usage logs: the warehouse's `llm_unit_economics` table when it exists (one usage
    source per provider, never summed: the one attributing the most tokens to teams; cost = its share of
    the invoice, else priced).
    Other providers (e.g. Bedrock on the CUR): the invoice lines themselves (report_tokens.sql).
    """
    cols = columns_of(con, "line_items")
    sql = sql_text("report/tokens.sql").format(
        x_model_id=_optional(cols, "x_ModelId"), x_tokens=_optional(cols, "x_Tokens"),
        x_llm_provider=_optional(cols, "x_LlmProvider"))
    con.execute("SET VARIABLE report_month = ?", [month])
    derived = _rows(con.execute(sql))
    if not _has(con, "llm_unit_economics", LLM_UE_COLUMNS):
        return derived
    table = _rows(con.execute(
        """WITH m AS (SELECT * FROM llm_unit_economics WHERE x_BillingMonth = ?),
                src AS (SELECT provider, usage_source FROM m GROUP BY provider, usage_source
                        QUALIFY row_number() OVER (PARTITION BY provider ORDER BY
                            coalesce(sum(tokens) FILTER (WHERE team NOT IN ('untagged', 'shared')), 0) DESC,
                            sum(tokens) DESC, usage_source) = 1)
           SELECT provider, model, team,
                  CASE WHEN count(invoiced_cost) = count(*) THEN 'invoice share of ' ELSE 'priced, ' END
                      || any_value(usage_source) AS basis,
                  billing_currency AS currency, sum(CAST(tokens AS DOUBLE)) AS tokens,
                  sum(CAST(coalesce(invoiced_cost, priced_cost) AS DOUBLE)) AS cost
           FROM m JOIN src USING (provider, usage_source)
           GROUP BY provider, model, team, billing_currency ORDER BY tokens DESC""", [month]))
    # a bill that states its tokens (Bedrock in the CUR, Azure OpenAI, Vertex AI decoded) is the answer for its
    # provider; usage tables answer for the others (OpenAI, Anthropic: invoices without token counts)
    billed = {r["provider"] for r in derived if r["basis"] == "invoice"}
    table = [r for r in table if r["provider"] not in billed]
    covered = {r["provider"] for r in table} | billed
    return sorted(table + [r for r in derived if r["provider"] in billed or r["provider"] not in covered],
                  key=lambda r: -(r["tokens"] or 0))


def gpu_economics(con, month: str) -> list[dict]:
    """GPU-hours and cost per team x GPU model x basis for the month.

    Billed GPU instances (cloud bills) come from the invoice lines (report_gpu_hours.sql); measured
    GPU-hours (schedulers, clusters) from the warehouse's `gpu_unit_economics` table when it exists.
    """
    cols = columns_of(con, "line_items")
    sql = sql_text("report/gpu_hours.sql").format(
        x_gpu_model=_optional(cols, "x_GpuModel"), x_gpu_utilization=_optional(cols, "x_GpuUtilization"))
    con.execute("SET VARIABLE report_month = ?", [month])
    derived = _rows(con.execute(sql))
    if not _has(con, "gpu_unit_economics", GPU_UE_COLUMNS):
        return derived
    table = _rows(con.execute(
        """SELECT x_Team AS team, x_GpuModel AS gpu_model, 'usage' AS basis, BillingCurrency AS currency,
                  sum(CAST(gpu_hours AS DOUBLE)) AS gpu_hours, sum(CAST(priced_cost AS DOUBLE)) AS cost,
                  sum(CAST(gpu_hours AS DOUBLE) * CAST(utilization AS DOUBLE)) FILTER (WHERE utilization IS NOT NULL)
                    / nullif(sum(CAST(gpu_hours AS DOUBLE)) FILTER (WHERE utilization IS NOT NULL), 0) AS utilization
           FROM gpu_unit_economics WHERE x_BillingMonth = ? GROUP BY ALL ORDER BY gpu_hours DESC""", [month]))
    return _one_gpu_name([r for r in derived if r["basis"] != "usage"] + table)


def _one_gpu_name(rows: list[dict]) -> list[dict]:
    """One name per GPU (models/reference/gpu_models.csv: h100, NVIDIA H100 80GB HBM3, p5.48xlarge ->
    h100-80gb), rows of the same team x GPU x basis merged. Billed dollars (basis invoice) and rate-card
    dollars (basis usage) stay in separate keys, `billed` and `priced`: never one column."""
    from apportion.models.gpu_rates import canonical_gpu_model

    out: dict[tuple, dict] = {}
    for r in rows:
        name = canonical_gpu_model(r["gpu_model"]) or r["gpu_model"]
        key = (r["team"], name, r["basis"], r["currency"])
        acc = out.setdefault(key, {"team": r["team"], "gpu_model": name, "basis": r["basis"], "currency": r["currency"],
                                   "gpu_hours": 0.0, "cost": None, "_util": 0.0, "_util_h": 0.0})
        acc["gpu_hours"] += r["gpu_hours"] or 0.0
        if r["cost"] is not None:
            acc["cost"] = (acc["cost"] or 0.0) + r["cost"]
        if r.get("utilization") is not None:
            acc["_util"] += (r["gpu_hours"] or 0.0) * r["utilization"]
            acc["_util_h"] += r["gpu_hours"] or 0.0
    result = []
    for acc in out.values():
        acc["utilization"] = acc.pop("_util") / acc["_util_h"] if acc["_util_h"] else None
        acc.pop("_util_h")
        acc["billed"] = acc["cost"] if acc["basis"] == "invoice" else None
        acc["priced"] = acc["cost"] if acc["basis"] != "invoice" else None
        result.append(acc)
    return sorted(result, key=lambda r: -r["gpu_hours"])


def idle_jobs(con, month: str) -> list[dict]:
    """The top GPU jobs by idle cost, from the warehouse's `gpu_top_idle_jobs` view when it exists."""
    if not _has(con, "gpu_top_idle_jobs", {"x_BillingMonth", "x_JobId", "x_Team", "gpu_hours", "utilization",
                                           "idle_cost", "BillingCurrency"}):
        return []
    return _rows(con.execute(
        """SELECT x_Cluster AS cluster, x_JobId AS job, x_Team AS team, x_GpuModel AS gpu_model,
                  CAST(gpu_hours AS DOUBLE) AS gpu_hours, CAST(utilization AS DOUBLE) AS utilization,
                  CAST(idle_cost AS DOUBLE) AS idle_cost, BillingCurrency AS currency
           FROM gpu_top_idle_jobs WHERE x_BillingMonth = ? ORDER BY idle_cost DESC NULLS LAST LIMIT 10""", [month]))


# ------------------------------------------------------------------------------------------ formatting
def money(value, currency: str) -> str:
    if value is None:
        return "–"
    q = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return f"{q:,} {currency}"


def amount(value) -> str:
    """A display amount; a missing cost (a source without a rate card) is 'not priced', never a crash."""
    return "not priced" if value is None else f"{value:,.2f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), testid: str = "") -> str:
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    tid = f' data-testid="{esc(testid)}"' if testid else ""
    # a wide table scrolls inside its own box, never the page
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def note(text: str, testid: str = "") -> str:
    tid = f' data-testid="{esc(testid)}"' if testid else ""
    return f'<p class="note"{tid}>{esc(text)}</p>'


def colours(values: list[str]) -> dict[str, str]:
    out, i = {}, 0
    for v in values:
        if v in BUCKET_COLOURS:
            out[v] = BUCKET_COLOURS[v]
        else:
            out[v] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


@functools.cache
def _white_template() -> dict:
    """plotly_white as JSON, once per process: set by name on each figure, plotly re-validated and deep-copied the
    whole template for every chart (~40 % of a small month's report)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def chart(fig, name: str, height: int = 360) -> str:
    """A plotly figure as a div (plotly.js is inlined once in <head>)."""
    import plotly.io as pio

    fig.update_layout(
        height=height, margin=dict(l=60, r=20, t=44, b=50),
        font=dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12),
        # legend under the plot: the chart keeps its width on a 390 px phone
        legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0, title_text=""),
        autosize=True,
        title=dict(x=0, xanchor="left", y=0.98, yanchor="top", font=dict(size=14)),
    )
    spec = fig.to_plotly_json()
    spec["layout"]["template"] = _white_template()
    div = pio.to_html(spec, validate=False, full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                      config=PLOTLY_CONFIG, default_height=f"{height}px", default_width="100%")
    return f'<div class="chart" data-testid="chart-{esc(name)}">{div}</div>'


def _stacked_bar(rows: list[tuple], title: str, money_label: str, name: str, horizontal: bool = False):
    """rows: (x, series, value) -> stacked bar chart div."""
    import plotly.graph_objects as go

    xs = list(dict.fromkeys(r[0] for r in rows))
    totals: dict[str, float] = {}
    for _, s, v in rows:
        totals[s] = totals.get(s, 0.0) + abs(float(v or 0))
    series = sorted(totals, key=lambda s: (s in BUCKET_COLOURS, -totals[s]))
    cmap = colours(series)
    fig = go.Figure()
    for s in series:
        vals = {r[0]: float(r[2] or 0) for r in rows if r[1] == s}
        ys = [vals.get(x, 0.0) for x in xs]
        if horizontal:
            fig.add_trace(go.Bar(y=xs, x=ys, name=str(s), orientation="h", marker_color=cmap[s],
                                 hovertemplate="%{y}: %{x:,.2f}<extra>" + esc(s) + "</extra>"))
        else:
            fig.add_trace(go.Bar(x=xs, y=ys, name=str(s), marker_color=cmap[s],
                                 hovertemplate="%{x}: %{y:,.2f}<extra>" + esc(s) + "</extra>"))
    fig.update_layout(barmode="relative", title_text=title)
    if horizontal:
        fig.update_xaxes(title_text=money_label, tickformat=",.0f")
        fig.update_yaxes(type="category", autorange="reversed")
    else:
        fig.update_yaxes(title_text=money_label, tickformat=",.0f")
        fig.update_xaxes(type="category")
    return fig


# ------------------------------------------------------------------------------------------ sections
def render(con, cfg: ApportionConfig, month: str | None, out_dir: Path, month_links: bool = False,
           upto: str | None = None, mark: str = "", seen: dict | None = None) -> str:
    """One page. `upto`: a month's snapshot page, whose trends stop at that month (the index shows them all)."""
    import plotly.offline

    all_months = months_in(con)
    if month is None:
        month = default_month(con, all_months)
    elif month not in all_months:
        raise ReportError(f"month {month} is not in the warehouse (it has: {', '.join(all_months) or 'none'})")
    known = all_months
    if upto is not None:
        all_months = [m for m in all_months if m <= upto]
    sections: list[Section] = []
    figures = key_figures(con, month) if month else []
    currency = figures[0]["currency"] if figures else "USD"
    if month:
        sections.append(_spend_section(con, all_months, currency))
        sections.append(_untagged_section(con, month, all_months, currency))
        sections.append(_ai_section(con, month, currency, {} if seen is None else seen))
        sections.append(_portfolio_section(con, all_months, currency))
        sections.append(__import__("apportion.guardrails.report").guardrails.report.section(con, month, currency))  # issue 11
        sections.append(__import__("apportion.savings.report").savings.report.section(con, month, currency))
        sections.append(__import__("apportion.close.report").close.report.section(con, month, currency))  # issue 17
        sections.append(_links_section(cfg, month, all_months, out_dir))
    sections = [s for s in sections if s is not None]
    header = _header(cfg, con, month, all_months, figures)
    label = month_label(con, month) if month else ""
    picker = _month_nav(con, month, known) if month_links else ""
    nav = " · ".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>\n' + "\n".join(s.parts) + "</section>" for s in sections
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{f'<meta name="apportion-page" content="{esc(mark)}">' if mark else ''}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>apportion report{' – ' + esc(label) if month else ''}</title>
<style>{CSS}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header>
<h1 data-testid="report-month" data-month="{esc(month)}">AI and cloud spend{' – ' + esc(label) if month else ''}</h1>
{picker}
<p class="meta">Generated {esc(generated)} from <code>{esc(cfg.duckdb_path)}</code>.
Months in the warehouse{' when this page was written' if upto else ''}: {esc(', '.join(known) or 'none')}.</p>
{header}
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<script>
// Fit every chart to its card once the layout is final (and on resize).
window.addEventListener("load", function () {{
  document.querySelectorAll(".plotly-graph-div").forEach(function (d) {{ Plotly.Plots.resize(d); }});
}});
</script>
<footer>apportion · every dollar apportioned, to the cent · amounts in billing currency; charts show {esc(currency)}</footer>
</body>
</html>
"""


def _month_nav(con, month: str, all_months: list[str]) -> str:
    """Links to every month's page (one page per month); the open month says month to date."""
    items = []
    for m in reversed(all_months):
        text = esc(month_label(con, m))
        if m == month:
            items.append(f'<strong aria-current="page">{text}</strong>')
        else:
            items.append(f'<a href="{esc(month_page(m))}" data-month="{esc(m)}">{text}</a>')
    # the static links are the months known when the page was written; months.js (rewritten on every run) has the
    # current list, so an older page also lists the newer months (labels are data: textContent, never markup)
    return (f'<p class="months" data-testid="month-picker" data-current="{esc(month)}">Months: {" · ".join(items)}</p>'
            f'<script src="{MONTHS_JS}"></script>' + MONTH_NAV_JS)


MONTH_NAV_JS = """<script>
(function () {
  var list = window.apportionMonths, p = document.querySelector("[data-testid=month-picker]");
  if (!list || !p) return;
  var current = p.getAttribute("data-current");
  p.textContent = "Months: ";
  list.forEach(function (m, i) {
    if (i) p.appendChild(document.createTextNode(" \u00b7 "));
    var e;
    if (m.month === current) { e = document.createElement("strong"); e.setAttribute("aria-current", "page"); }
    else { e = document.createElement("a"); e.href = m.page; e.setAttribute("data-month", m.month); }
    e.textContent = m.label;
    p.appendChild(e);
  });
})();
</script>"""


def _header(cfg, con, month, all_months, figures) -> str:
    if not month:
        return note("The warehouse has no billing months yet: run `apportion run` first.", "no-data")
    cards = []
    complete, covered, days = month_state(con, month)
    mtd = "" if complete else f"; month to date: {covered} of {days} days"
    for f in figures:
        cur = esc(f["currency"])
        cards.append(
            f'<div class="card"><div class="label">Total billed ({cur})</div>'
            f'<div class="figure" data-testid="total-billed" data-currency="{cur}" data-value="{esc(f["billed"])}">'
            f'{esc(money(f["billed"], f["currency"]))}</div>'
            f'<div class="sub">{f["line_items"]:,} line items, as invoiced{mtd}</div></div>'
        )
        ties = f["billed"] == f["allocated"]
        cards.append(
            f'<div class="card"><div class="label">Total allocated ({cur})</div>'
            f'<div class="figure" data-testid="total-allocated" data-currency="{cur}" data-value="{esc(f["allocated"])}">'
            f'{esc(money(f["allocated"], f["currency"]))}</div>'
            f'<div class="sub {"ok" if ties else "bad"}" data-testid="ties-out" data-currency="{cur}">'
            f'{"ties out to the invoice exactly" if ties else "DOES NOT tie out"}</div></div>'
        )
    cov = coverage(con, month, "team")
    cards.append(
        f'<div class="card"><div class="label">Team coverage</div>'
        f'<div class="figure" data-testid="coverage" data-dimension="team" data-value="{esc(cov)}">{esc(percent(cov))}</div>'
        f'<div class="sub">spend-weighted, attributed / (attributed + untagged)</div></div>'
    )
    quarantined = con.execute("SELECT count(*) FROM quarantined_rows WHERE x_BillingMonth = ?", [month]).fetchone()[0]
    cards.append(
        f'<div class="card"><div class="label">Quarantined rows</div>'
        f'<div class="figure" data-testid="quarantined-rows" data-value="{quarantined}">{quarantined:,}</div>'
        f'<div class="sub">{"none" if not quarantined else "see the quarantined_rows table"}</div></div>'
    )
    return f'<div class="cards">{"".join(cards)}</div>'


def _spend_section(con, all_months, currency) -> Section:
    s = Section("Spend by team and provider", "spend")
    spend = "monthly_spend" if "monthly_spend" in relations(con) else "allocations"  # a summary (issue 10)
    last = all_months[-1]  # a month's page is its snapshot: months up to its own (issue 10)
    team = con.execute(
        f"SELECT x_BillingMonth, x_Team, sum(EffectiveCost) FROM {spend} WHERE BillingCurrency = ? "
        "AND x_BillingMonth <= ? GROUP BY ALL ORDER BY 1, 2", [currency, last]).fetchall()
    # billed money only: a usage-basis provider (an on-premises cluster priced at its rate card) bills $0 and
    # is not listed at $0; its priced cost is named below, labelled as priced
    by = spend if "ProviderName" in columns_of(con, spend) else "allocations"
    provider = con.execute(
        f"SELECT x_BillingMonth, ProviderName, sum(EffectiveCost) FROM {by} WHERE BillingCurrency = $1 "
        f"AND x_BillingMonth <= $2 GROUP BY ALL HAVING ProviderName IN (SELECT ProviderName FROM {by} "
        "WHERE BillingCurrency = $1 AND x_BillingMonth <= $2 GROUP BY ALL HAVING sum(abs(EffectiveCost)) <> 0) "
        "ORDER BY 1, 2", [currency, last]).fetchall()
    priced = con.execute(
        "SELECT ProviderName, sum(x_PricedCost) FROM line_items WHERE x_CostBasis = 'usage' AND BillingCurrency = $1 "
        f"AND x_BillingMonth <= $2 AND x_LlmProvider IS NULL GROUP BY ALL HAVING ProviderName NOT IN (SELECT "
        f"ProviderName FROM {by} WHERE BillingCurrency = $1 AND x_BillingMonth <= $2 GROUP BY ALL "
        "HAVING sum(abs(EffectiveCost)) <> 0) ORDER BY 1",
        [currency, last]).fetchall() if "x_PricedCost" in columns_of(con, "line_items") else []
    label = f"EffectiveCost ({currency})"
    s.parts.append('<div class="grid">')
    s.parts.append(chart(_stacked_bar(team, "By team, per month (EffectiveCost)", label, "team"), "spend-by-team"))
    s.parts.append(chart(_stacked_bar(provider, "By provider, per month (EffectiveCost)", label, "provider"),
                         "spend-by-provider"))
    s.parts.append("</div>")
    if priced:
        s.parts.append(note("Not on any bill, so not in the provider chart: " + "; ".join(
            f"{p} priced at its rate card {amount(v)} {currency} over all months (usage, not billed)"
            if v is not None else f"{p}: usage without a rate card (not priced)" for p, v in priced) + ".",
            "priced-providers"))
    others = con.execute(f"SELECT DISTINCT BillingCurrency FROM {by} WHERE BillingCurrency <> ? AND x_BillingMonth <= ?",
                         [currency, last]).fetchall()
    if others:
        s.parts.append(note(f"Charts show {currency}; spend in {', '.join(r[0] for r in others)} is in the "
                            "key figures, the warehouse and the finance CSVs."))
    s.parts.append(note("'shared' is spend no resource can own (tax, support, credits, commitment fees) until a "
                        "split rule spreads it; 'untagged' is spend nothing attributed (see below)."))
    return s


def _untagged_section(con, month, all_months, currency) -> Section:
    import plotly.graph_objects as go

    s = Section("Untagged spend and coverage", "untagged")
    dims = dimensions(con)
    untagged = con.execute(
        "SELECT x_BillingMonth, dimension, sum(untagged_cost) FROM allocation_coverage WHERE BillingCurrency = ? "
        "AND x_BillingMonth <= ? GROUP BY ALL ORDER BY 1, 2", [currency, all_months[-1]]).fetchall()
    fig = go.Figure()
    cmap = colours(dims)
    for d in dims:
        vals = {m: float(v or 0) for m, dd, v in untagged if dd == d}
        fig.add_trace(go.Bar(x=all_months, y=[vals.get(m, 0.0) for m in all_months], name=d, marker_color=cmap[d]))
    fig.update_layout(barmode="group", title_text=f"Untagged spend per dimension (EffectiveCost, {currency})")
    fig.update_yaxes(tickformat=",.0f")
    fig.update_xaxes(type="category")
    trend = go.Figure()
    by_month = coverage_trend(con)  # one query over the summary, not one per month and dimension
    for d in dims:
        trend.add_trace(go.Scatter(x=all_months, y=[((by_month.get((m, d)) if by_month is not None else
                                                      coverage(con, m, d)) or 0) * 100 for m in all_months],
                                   name=d, mode="lines+markers", line=dict(color=cmap[d], width=3)))
    trend.update_layout(title_text="Coverage per dimension (spend-weighted %)")
    trend.update_yaxes(range=[0, 100], ticksuffix=" %")
    trend.update_xaxes(type="category")
    s.parts.append('<div class="grid">')
    s.parts.append(chart(fig, "untagged-by-dimension"))
    s.parts.append(chart(trend, "coverage-trend"))
    s.parts.append("</div>")
    cov_rows = [[d, percent(coverage(con, month, d))] for d in dims]
    s.parts.append(f"<h3>Coverage in {esc(month)}</h3>" + table(["dimension", "coverage"], cov_rows, {1}, "coverage-table"))

    owners = con.execute(
        """SELECT SubAccountId, any_value(SubAccountName), sum(EffectiveCost) FROM untagged_spend
           WHERE x_BillingMonth = ? AND dimension = 'team' AND BillingCurrency = ?
           GROUP BY 1 HAVING round(sum(EffectiveCost), 2) <> 0 ORDER BY 3 DESC LIMIT 10""", [month, currency]).fetchall()
    if owners:
        import plotly.graph_objects as go

        labels = [f"{name or '?'} ({acct})" if acct else "(no account)" for acct, name, _ in owners]
        bar = go.Figure(go.Bar(y=labels, x=[float(v) for _, _, v in owners], orientation="h", marker_color="#9ca3af",
                               hovertemplate="%{y}: %{x:,.2f}<extra></extra>"))
        bar.update_layout(title_text=f"Untagged team spend by account, {month} ({currency})")
        bar.update_yaxes(autorange="reversed", automargin=True)
        bar.update_xaxes(tickformat=",.0f")
        s.parts.append(chart(bar, "untagged-by-account", height=max(260, 40 + 34 * len(owners))))
    # One row per owner: account, resource and who created it; the reasons (one per split piece) are listed
    top = con.execute(
        """SELECT SubAccountId, any_value(SubAccountName), string_agg(DISTINCT ServiceName, ', ' ORDER BY ServiceName),
                  ResourceId, created_by, string_agg(DISTINCT reason_code, ', ' ORDER BY reason_code), BillingCurrency,
                  sum(line_items), sum(EffectiveCost)
           FROM untagged_spend WHERE x_BillingMonth = ? AND dimension = 'team'
           GROUP BY SubAccountId, ResourceId, created_by, BillingCurrency
           HAVING round(sum(EffectiveCost), 2) <> 0 ORDER BY 9 DESC LIMIT 15""", [month]).fetchall()
    s.parts.append(f"<h3>Top untagged owners, {esc(month)} (team dimension)</h3>")
    s.parts.append(note("One row per account, resource and creator (the aws:createdBy tag where the bill has it); "
                        "'–' when the bill does not say who created the resource."))
    if top:
        s.parts.append(table(
            ["account", "account name", "service", "resource", "created by", "reason", "line items", "EffectiveCost"],
            [[a, n, svc, r or "", cb or "–", reason, f"{li:,}", money(v, cur)] for a, n, svc, r, cb, reason, cur, li, v in top],
            {6, 7}, "top-untagged"))
    else:
        s.parts.append(note("Nothing is untagged for the team dimension this month."))
    return s


def _ai_section(con, month, currency, seen: dict) -> Section:
    import plotly.graph_objects as go

    s = Section("AI unit economics", "ai")
    tokens = [r for r in _once(seen, "tokens", month, lambda: token_economics(con, month)) if r["currency"] == currency]
    if tokens:
        models: dict[str, list[float]] = {}
        for r in tokens:
            acc = models.setdefault(r["model"], [0.0, 0.0])
            acc[0] += r["tokens"] or 0
            acc[1] += r["cost"] or 0
        names = sorted(models, key=lambda m: -models[m][0])
        # one bar per model on a log scale: billions of tokens of one model never flatten the others
        # (the split per team is in the table below)
        fig = go.Figure(go.Bar(
            y=names, x=[models[m][0] for m in names], orientation="h",
            marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(names))],
            hovertemplate="%{y}: %{x:,.0f} tokens<extra></extra>"))
        fig.update_layout(title_text=f"Tokens by model, {month} (log scale)")
        fig.update_xaxes(type="log", title_text="tokens (log scale)")
        fig.update_yaxes(type="category", autorange="reversed", automargin=True)
        per_m = go.Figure(go.Bar(
            x=names, y=[models[m][1] / models[m][0] * 1e6 if models[m][0] else 0 for m in names],
            marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(names))],
            hovertemplate="%{x}: %{y:,.2f} " + currency + " per 1M tokens<extra></extra>"))
        per_m.update_layout(title_text=f"Cost per 1M tokens by model, {month} ({currency}, all token types)")
        per_m.update_yaxes(tickformat=",.2f")
        s.parts.append('<div class="grid">')
        s.parts.append(chart(fig, "tokens-by-model-team", height=max(320, 60 + 48 * len(names))))
        s.parts.append(chart(per_m, "cost-per-mtok"))
        s.parts.append("</div>")
        s.parts.append(table(
            ["provider", "model", "team", "basis", "tokens", f"cost ({currency})", f"{currency} / 1M tokens"],
            [[r["provider"], r["model"], r["team"], r["basis"], f"{(r['tokens'] or 0):,.0f}", amount(r["cost"]),
              f"{r['cost'] / r['tokens'] * 1e6:,.4f}" if r["tokens"] and r["cost"] is not None else "–"] for r in tokens],
            {4, 5, 6}, "token-economics"))
        s.parts.append(note("Tokens are counted once per provider: from the invoice lines when the bill states model "
                            "and tokens (Bedrock in the CUR, Azure OpenAI, Vertex AI; EffectiveCost), otherwise from one "
                            "usage source (logs, usage APIs) with its share of the invoice. Cost per 1M tokens mixes "
                            "input, output and cache tokens as billed."))
        s.parts.append(_reconciliation(con, month))
    else:
        s.parts.append(note(f"No token usage in the warehouse for {month}: add an LLM source (Bedrock in the CUR, "
                            "OpenAI, Anthropic, LiteLLM) to see tokens and cost per 1M tokens.", "no-token-data"))
    gpus = [r for r in _once(seen, "gpus", month, lambda: gpu_economics(con, month)) if r["currency"] == currency]
    if gpus:
        bases = sorted({r["basis"] for r in gpus})
        rows = [(f"{r['team']}" + (f" ({r['basis']})" if len(bases) > 1 else ""), r["gpu_model"], r["gpu_hours"])
                for r in gpus]
        fig = _stacked_bar(rows, f"GPU-hours by team and GPU, {month}", "GPU-hours", "gpu", horizontal=True)
        fig.update_xaxes(title_text="GPU-hours", tickformat=",.0f")
        teams = list(dict.fromkeys(r[0] for r in rows))
        s.parts.append('<div class="grid">')
        s.parts.append(chart(fig, "gpu-hours-by-team", height=max(320, 60 + 48 * len(teams))))
        util = [r for r in gpus if r["utilization"] is not None]
        if util:
            agg: dict[str, list[float]] = {}
            for r in util:
                a = agg.setdefault(r["team"], [0.0, 0.0])
                a[0] += r["gpu_hours"] * r["utilization"]
                a[1] += r["gpu_hours"]
            names = sorted(agg, key=lambda t: -agg[t][1])
            ufig = go.Figure(go.Bar(x=names, y=[agg[t][0] / agg[t][1] * 100 if agg[t][1] else 0 for t in names],
                                    marker_color="#10b981", hovertemplate="%{x}: %{y:.1f} %<extra></extra>"))
            ufig.update_layout(title_text=f"GPU utilisation by team, {month} (GPU-hour weighted)")
            ufig.update_yaxes(range=[0, 100], ticksuffix=" %")
            s.parts.append(chart(ufig, "gpu-utilisation"))
        s.parts.append("</div>")
        if not util:
            s.parts.append(note("No GPU utilisation measured in the warehouse (x_GpuUtilization): add a "
                                "gpu_metrics / DCGM source to see utilisation.", "no-gpu-utilisation"))
        def per_hour(r):
            c = r["billed"] if r["basis"] == "invoice" else r["priced"]
            return f"{c / r['gpu_hours']:,.2f}" if r["gpu_hours"] and c is not None else "–"

        s.parts.append(table(
            ["team", "GPU", "basis", "GPU-hours", f"billed cost ({currency})", f"priced cost, rate card ({currency})",
             f"{currency} / GPU-hour", "utilisation"],
            [[r["team"], r["gpu_model"], r["basis"], f"{r['gpu_hours']:,.1f}",
              amount(r["billed"]) if r["basis"] == "invoice" else "–",
              amount(r["priced"]) if r["basis"] != "invoice" else "–", per_hour(r), percent(r["utilization"])]
             for r in gpus],
            {3, 4, 5, 6, 7}, "gpu-economics"))
        s.parts.append(note("Basis 'invoice' = GPU instances on a cloud bill (instance-hours x GPUs): billed cost, "
                            "money on an invoice. 'usage' = GPU-hours measured by schedulers and clusters: priced "
                            "cost at the rate card, a notional figure that is not billed ('not priced' when the "
                            "source has no rate card). The two columns are never added up. One name per GPU "
                            "(models/reference/gpu_models.csv)."))
        idle = idle_jobs(con, month)
        if idle:
            s.parts.append(f"<h3>Top jobs by idle GPU cost, {esc(month)}</h3>" + table(
                ["cluster", "job", "team", "GPU", "GPU-hours", "utilisation", "idle cost"],
                [[r["cluster"], r["job"], r["team"], r["gpu_model"], f"{r['gpu_hours']:,.1f}",
                  percent(r["utilization"]), f"{amount(r['idle_cost'])} {r['currency']}"] for r in idle],
                {4, 5, 6}, "gpu-idle-jobs"))
    else:
        s.parts.append(note(f"No GPU-hours in the warehouse for {month}: add GPU instances to a cloud source or a "
                            "Slurm / Kubernetes source.", "no-gpu-data"))
    return s


def _reconciliation(con, month: str) -> str:
    """llm_reconciliation for the month: status, invoice, priced usage and the residual between them."""
    if not _has(con, "llm_reconciliation", {"x_BillingMonth", "provider", "usage_source", "invoice_cost",
                                            "priced_usage_cost", "residual_cost", "status"}):
        return ""
    rows = _rows(con.execute(
        "SELECT provider, usage_source, billing_currency AS currency, invoice_cost, priced_usage_cost, residual_cost, "
        "residual_share, status FROM llm_reconciliation WHERE x_BillingMonth = ? ORDER BY provider, usage_source "
        "NULLS FIRST", [month]))
    if not rows:
        return ""
    return (f"<h3>LLM invoices against priced usage, {esc(month)}</h3>" + table(
        ["provider", "usage source", "invoice", "priced usage", "residual", "residual share", "status"],
        [[r["provider"], r["usage_source"] or "–", money(r["invoice_cost"], r["currency"]),
          money(r["priced_usage_cost"], r["currency"]), money(r["residual_cost"], r["currency"]),
          percent(r["residual_share"]), r["status"]] for r in rows],
        {2, 3, 4, 5}, "llm-reconciliation")
        + note("residual = invoice - priced usage. exact: 0; within tolerance: within the configured share of the "
               "invoice (reconciliation_tolerance); under / over: priced usage explains less / more than the "
               "invoice; usage missing / invoice missing: one side has nothing."))


def _portfolio_section(con, all_months, currency) -> Section | None:
    if "x_ValueClass" not in columns_of(con, "allocations"):
        return None
    s = Section("Portfolio by value class", "portfolio")
    spend = "monthly_spend" if "x_ValueClass" in columns_of(con, "monthly_spend") else "allocations"  # a summary
    rows = con.execute(
        f"SELECT x_BillingMonth, coalesce(x_ValueClass, 'unclassified'), sum(EffectiveCost) FROM {spend} "
        "WHERE BillingCurrency = ? AND x_BillingMonth <= ? GROUP BY ALL ORDER BY 1, 2",
        [currency, all_months[-1]]).fetchall()
    s.parts.append(chart(_stacked_bar(rows, "Spend by value class, per month (EffectiveCost)",
                                      f"EffectiveCost ({currency})", "value-class"), "spend-by-value-class"))
    return s


def _links_section(cfg, month, all_months, out_dir: Path) -> Section:
    s = Section("Finance pack", "files")
    folder = cfg.exports / month
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in (".csv", ".parquet"))
        items = "".join(
            f'<li><a href="{esc(_href(p, out_dir))}">{esc(p.name)}</a> <span class="size">'
            f'{p.stat().st_size / 1024:,.0f} KiB</span></li>' for p in files)
        s.parts.append(f'<p>The {esc(month)} pack in <code>{esc(folder)}</code> (CSV and Parquet, same columns):</p>'
                       f'<ul class="files" data-testid="export-links">{items}</ul>')
    else:
        s.parts.append(note(f"No finance pack for {month} yet: `apportion export --month {month} --out DIR` "
                            "or the nightly job writes it.", "no-exports"))
    others = [m for m in all_months if m != month and (cfg.exports / m).is_dir()]
    if others:
        links = ", ".join(
            f'<a href="{esc(_href(cfg.exports / m / "control_totals.csv", out_dir))}">{esc(m)}</a>' for m in others)
        s.parts.append(f"<p>Control totals of other months: {links}.</p>")
    return s


def _href(target: Path, out_dir: Path) -> str:
    """A link that works when the report and the exports are moved together (relative), else file://."""
    try:
        rel = os.path.relpath(target, out_dir)
    except ValueError:
        return target.resolve().as_uri()
    return rel.replace(os.sep, "/")


CSS = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header, main, footer { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 28px 0 12px; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.meta, .note, footer, .size { color: var(--muted); font-size: 13px; }
code { font-size: 12px; }
nav { margin: 14px 0 0; font-size: 14px; }
nav a, a { color: #1d4ed8; text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 12px; margin-top: 14px; }
.card { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.card .label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card .figure { font-size: 24px; font-weight: 600; margin: 4px 0; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 12px; color: var(--muted); }
.card .sub.ok { color: #047857; } .card .sub.bad { color: #b91c1c; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 480px), 1fr)); gap: 12px; }
.scroll { overflow-x: auto; max-width: 100%; margin-bottom: 8px; }
.scroll table { margin-bottom: 0; }
.months { font-size: 14px; margin: 10px 0 0; }
code, .meta { overflow-wrap: anywhere; }
@media (max-width: 600px) { header, main, footer { padding: 0 10px; } ul.files { columns: 1; } }
.grid > * { min-width: 0; }
.chart { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 6px; margin-bottom: 12px; }
table { border-collapse: collapse; width: 100%; background: white; font-size: 13px; margin-bottom: 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td { max-width: 420px; overflow-wrap: anywhere; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
ul.files { columns: 2; font-size: 14px; }
ul.files a { overflow-wrap: anywhere; word-break: break-all; }
footer { padding: 24px; }
"""
