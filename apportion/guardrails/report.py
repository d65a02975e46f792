"""The report's guardrails panels (issue 11 point 6): a budget burn-down per budget with its forecast band, and
an anomaly timeline. Read from the warehouse tables budget_status, budget_burndown and the anomalies view.

Every value from data is escaped (budget names, series, team and service names are data); chart div ids are
numbered, never built from data. Money is shown to the cent from the DECIMAL columns; the charts plot the same
figures (plotly needs numbers, the tooltips show them to the cent).
"""

from __future__ import annotations

from datetime import date, timedelta

SEVERITY_COLOURS = {"critical": "#dc2626", "warn": "#f59e0b", "info": "#2563eb", "ok": "#10b981"}


def _has(con, name: str) -> bool:
    tables = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0]
    views = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [name]).fetchone()[0]
    return tables + views > 0


def _month_bounds(month: str) -> tuple[date, date]:
    y, m = int(month[:4]), int(month[5:7])
    return date(y, m, 1), date(y + (m == 12), m % 12 + 1, 1)


def budget_periods(con, month: str) -> list[dict]:
    """budget_status rows of the periods that contain the month (a month budget's month, a quarter's quarter)."""
    start, _ = _month_bounds(month)
    cur = con.execute("""
        SELECT budget, period, period_start, period_end, as_of, is_open, currency, amount, actual, actual_ratio,
               forecast, forecast_low, forecast_high, forecast_ratio, run_rate, forecast_method, status
        FROM budget_status WHERE period_start <= ? AND ? < period_end ORDER BY budget, period_start""", [start, start])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def burndown(con, budget: str, period: str) -> list[tuple]:
    """(day, kind, cumulative, low, high, amount) of one budget period, in day order, actual before forecast."""
    return con.execute("""
        SELECT day, kind, cumulative, low, high, amount FROM budget_burndown
        WHERE budget = ? AND period = ? ORDER BY day, kind""", [budget, period]).fetchall()


def burndown_figure(budget: str, period: str, rows: list[tuple], currency: str):
    """Cumulative actual (solid), forecast path (dashed) inside its 80 % band, and the budget line."""
    import plotly.graph_objects as go

    from apportion.report import esc

    actual = [r for r in rows if r[1] == "actual"]
    forecast = [r for r in rows if r[1] == "forecast"]
    fig = go.Figure()
    money = "%{y:,.2f} " + esc(currency)
    if forecast:
        # the band: upper edge, then the lower edge filled up to it
        fig.add_trace(go.Scatter(x=[r[0] for r in forecast], y=[float(r[4]) for r in forecast], name="forecast high",
                                 mode="lines", line=dict(width=0), showlegend=False,
                                 hovertemplate="%{x}: " + money + "<extra>80 % band, high</extra>"))
        fig.add_trace(go.Scatter(x=[r[0] for r in forecast], y=[float(r[3]) for r in forecast],
                                 name="80 % forecast band", mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor="rgba(37, 99, 235, 0.18)",
                                 hovertemplate="%{x}: " + money + "<extra>80 % band, low</extra>"))
    fig.add_trace(go.Scatter(x=[r[0] for r in actual], y=[float(r[2]) for r in actual], name="actual",
                             mode="lines+markers", line=dict(color="#111827", width=2), marker=dict(size=4),
                             hovertemplate="%{x}: " + money + "<extra>actual to date</extra>"))
    if forecast:
        # the forecast path starts where the actual line ends
        xs = ([actual[-1][0]] if actual else []) + [r[0] for r in forecast]
        ys = ([float(actual[-1][2])] if actual else []) + [float(r[2]) for r in forecast]
        fig.add_trace(go.Scatter(x=xs, y=ys, name="forecast", mode="lines",
                                 line=dict(color="#2563eb", width=2, dash="dash"),
                                 hovertemplate="%{x}: " + money + "<extra>forecast</extra>"))
    if rows:
        days = [r[0] for r in rows]
        fig.add_trace(go.Scatter(x=[min(days), max(days)], y=[float(rows[0][5])] * 2, name="budget", mode="lines",
                                 line=dict(color="#dc2626", width=1.5, dash="dot"),
                                 hovertemplate="budget " + money + "<extra></extra>"))
    fig.update_layout(title_text=esc(f"{budget} · {period}: cumulative spend against the budget"))
    fig.update_yaxes(title_text=f"cumulative EffectiveCost ({currency})", tickformat=",.0f", rangemode="tozero")
    fig.update_xaxes(type="date")
    return fig


def anomaly_rows(con, month: str) -> list[dict]:
    """Anomaly episodes that started before the end of the month (the timeline runs up to the report month)."""
    _, end = _month_bounds(month)
    cur = con.execute("""
        SELECT anomaly_id, series_kind, series, first_day, last_day, days, currency, expected, actual, impact,
               impact_ratio, provisional, dismissed
        FROM anomalies WHERE first_day < ? ORDER BY first_day, series, anomaly_id""", [end])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def timeline_figure(rows: list[dict]):
    """One horizontal segment per episode (first to last day) on its series' row; colour = its state."""
    import plotly.graph_objects as go

    from apportion.report import esc

    fig = go.Figure()
    shown: set[str] = set()
    for r in rows:
        state = "dismissed" if r["dismissed"] else "provisional" if r["provisional"] else "anomaly"
        colour = {"dismissed": "#9ca3af", "provisional": "#f59e0b", "anomaly": "#dc2626"}[state]
        label = esc(f"{r['series_kind']}: {r['series']}")  # plotly reads tick labels as pseudo-HTML
        fig.add_trace(go.Scatter(
            x=[r["first_day"], r["last_day"] + timedelta(days=1)], y=[label, label], mode="lines+markers",
            name=state, legendgroup=state, showlegend=state not in shown,
            line=dict(color=colour, width=10), marker=dict(size=6, color=colour),
            hovertemplate=(label + "<br>" + esc(f"{r['first_day']} – {r['last_day']} ({r['days']} days)")
                           + "<br>impact " + esc(f"{r['impact']:,} {r['currency']}") + "<extra>" + state
                           + "</extra>")))
        shown.add(state)
    fig.update_layout(title_text="Spend anomalies: one bar per episode, first to last day")
    fig.update_yaxes(type="category", autorange="reversed", automargin=True)
    fig.update_xaxes(type="date")
    return fig


def panel(con, month: str | None) -> list[str]:
    """HTML parts of the budgets, anomalies and token policies section for the month (escaped)."""
    return _budget_anomaly_parts(con, month) + policy_parts(con, month)


def policy_rows(con, month: str) -> list[dict]:
    """token_policy_violations of the month, summed per policy, rule, team, API key and model."""
    cur = con.execute("""
        SELECT policy, rule, team, api_key, model, any_value(limit_value) AS limit_value, sum(requests) AS requests,
               sum(tokens_over) AS tokens_over, sum(cost) AS cost, sum(excess_cost) AS excess_cost,
               any_value(allowed_model) AS allowed_model, sum(allowed_model_cost) AS allowed_model_cost,
               any_value(currency) AS currency
        FROM token_policy_violations WHERE month = ? GROUP BY ALL
        ORDER BY excess_cost DESC, policy, rule, team, api_key, model""", [month])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def policy_figure(rows: list[dict]):
    """The cost of the excess per policy and rule (bars), hover: requests and tokens over."""
    import plotly.graph_objects as go

    from apportion.report import esc

    sums: dict[tuple[str, str], list] = {}
    for r in rows:
        s = sums.setdefault((r["policy"], r["rule"]), [0, 0, 0])
        s[0] += r["excess_cost"] or 0
        s[1] += r["requests"]
        s[2] += r["tokens_over"]
    keys = sorted(sums, key=lambda k: -sums[k][0])
    labels = [esc(f"{p} · {rule}") for p, rule in keys]
    fig = go.Figure(go.Bar(
        x=[float(sums[k][0]) for k in keys], y=labels, orientation="h", marker_color="#f59e0b",
        customdata=[[f"{sums[k][0]:,.2f}", f"{sums[k][1]:,}", f"{sums[k][2]:,}"] for k in keys],
        hovertemplate="%{y}<br>excess %{customdata[0]} USD<br>%{customdata[1]} requests, %{customdata[2]} tokens "
                      "over<extra></extra>"))
    fig.update_layout(title_text="Token policies: the cost of the excess per policy and rule (USD)")
    fig.update_yaxes(type="category", autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="USD", rangemode="tozero")
    return fig


def policy_parts(con, month: str | None) -> list[str]:
    from apportion.report import chart, money, note, table

    if not (month and _has(con, "token_policy_violations")):
        return []
    rows = policy_rows(con, month)
    parts = ["<h3>Token policies</h3>"]
    if not rows:
        return parts + [note("No token policy violation this month.", "no-token-policy-violations")]
    parts.append(chart(policy_figure(rows), "token-policies", height=max(260, 110 + 40 * len(
        {(r["policy"], r["rule"]) for r in rows}))))
    parts.append(table(
        ["policy", "rule", "limit", "team", "API key", "model", "requests", "tokens over", "cost", "cost of the excess",
         "on the allowed model"],
        [[r["policy"], r["rule"], r["limit_value"], r["team"] or "-", r["api_key"] or "-", r["model"],
          f"{r['requests']:,}", f"{r['tokens_over']:,}", money(r["cost"], r["currency"]),
          money(r["excess_cost"], r["currency"]),
          (money(r["allowed_model_cost"], r["currency"]) + f" ({r['allowed_model']})")
          if r["allowed_model_cost"] is not None else "-"] for r in rows],
        numeric={6, 7, 8, 9, 10}, testid="token-policy-violations"))
    return parts


def _budget_anomaly_parts(con, month: str | None) -> list[str]:
    from apportion.report import chart, esc, money, note, table

    parts: list[str] = []
    has_budgets = _has(con, "budget_status") and _has(con, "budget_burndown")
    periods = budget_periods(con, month) if has_budgets and month else []
    if not periods:
        parts.append(note("No budgets for this month (set `budgets:` in apportion.yaml, docs/guardrails.md).",
                          "no-budget-data"))
    else:
        parts.append("<h3>Budgets</h3>")
        parts.append(table(
            ["budget", "period", "as of", "budget", "actual", "forecast", "80 % band", "run-rate", "status"],
            [[p["budget"], p["period"], p["as_of"], money(p["amount"], p["currency"]),
              money(p["actual"], p["currency"]),
              money(p["forecast"], p["currency"]) + ("" if p["is_open"] else " (closed)"),
              f"{money(p['forecast_low'], p['currency'])} – {money(p['forecast_high'], p['currency'])}",
              money(p["run_rate"], p["currency"]), p["status"]] for p in periods],
            numeric={3, 4, 5, 6, 7}, testid="budget-status"))
        for i, p in enumerate(periods, start=1):
            rows = burndown(con, p["budget"], p["period"])
            if not rows:
                continue
            fig = burndown_figure(p["budget"], p["period"], rows, p["currency"])
            parts.append(f'<div data-testid="burndown" data-budget="{esc(p["budget"])}" data-period="{esc(p["period"])}"'
                         f' data-status="{esc(p["status"])}" data-amount="{esc(p["amount"])}"'
                         f' data-actual="{esc(p["actual"])}" data-forecast="{esc(p["forecast"])}">'
                         + chart(fig, f"burndown-{i}") + "</div>")
    if not (month and _has(con, "anomalies")):
        parts.append(note("No anomaly table in this warehouse.", "no-anomaly-data"))
        return parts
    rows = anomaly_rows(con, month)
    parts.append("<h3>Anomalies</h3>")
    if not rows:
        parts.append(note("No spend anomaly up to this month.", "no-anomalies"))
        return parts
    parts.append(chart(timeline_figure(rows), "anomaly-timeline", height=max(300, 120 + 36 * len(
        {(r["series_kind"], r["series"]) for r in rows}))))
    start, _ = _month_bounds(month)
    in_month = [r for r in rows if r["last_day"] >= start]
    parts.append(table(
        ["first day", "last day", "series", "expected", "actual", "impact", "state"],
        [[r["first_day"], r["last_day"], f"{r['series_kind']}: {r['series']}", money(r["expected"], r["currency"]),
          money(r["actual"], r["currency"]), money(r["impact"], r["currency"]),
          "dismissed" if r["dismissed"] else "provisional" if r["provisional"] else "open"] for r in in_month],
        numeric={3, 4, 5}, testid="anomalies"))
    return parts


def section(con, month: str | None, currency: str):
    """The panels as a report Section (apportion/report.py assembles the sections)."""
    from apportion.report import Section

    return Section("Budgets and anomalies", "budgets", panel(con, month))
