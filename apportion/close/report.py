"""The report's "Month close" section: closed months (when, by whom) and the restatement deltas since each
close, per source, reason and team. Every value from data (team, project, workload, detail) is escaped."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from apportion.html_parts import esc as _esc
from apportion.html_parts import table as _table


def _money(v) -> str:
    return f"{Decimal(v).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):+,}"


def panel(con) -> str | None:
    """HTML (escaped) of the closed months and their deltas; None when no month is closed."""
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'closed_months'").fetchone()[0]
    if not has:
        return None
    closed = con.execute("SELECT billing_month, strftime(closed_at AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M UTC'), "
                         "closed_by FROM closed_months ORDER BY 1").fetchall()
    if not closed:
        return None
    ties = con.execute("SELECT billing_month, source, billing_currency, closed_billed_cost, delta_billed_cost, "
                       "current_billed_cost, ties_out FROM restatement_tie_out ORDER BY 1, 2, 3").fetchall()
    deltas = con.execute("SELECT billing_month, source, billing_currency, reason, detail, team, project, workload, "
                         "lines, delta_billed_cost, delta_effective_cost FROM restatements "
                         "ORDER BY 1, 2, 3, abs(delta_effective_cost) DESC, reason, team LIMIT 50").fetchall()
    parts = ["<p>Closed months are frozen as finance received them (<code>apportion close</code>); what providers "
             "restated since is shown as deltas against the close, never as silent changes.</p>",
             "<p>" + " ".join(f'<span class="closed-month" data-testid="closed-month" data-month="{_esc(m)}">'
                              f"{_esc(m)}: closed {_esc(at)} by {_esc(by or '-')}</span>" for m, at, by in closed)
             + "</p>",
             "<h3>Closed total + Σ deltas = current (BilledCost, per source)</h3>",
             _table(["month", "source", "currency", "closed", "Σ deltas", "current", "ties out"],
                    [[m, s, c, f"{cb:,.2f}", _money(db), f"{ab:,.2f}", "yes" if t else "NO"]
                     for m, s, c, cb, db, ab, t in ties], "restatement-tie-out", {3, 4, 5})]
    if deltas:
        parts += ["<h3>Deltas since close</h3>",
                  _table(["month", "source", "reason", "detail", "team", "project", "workload", "lines",
                          "Δ billed", "Δ effective"],
                         [[m, s, r, d, t, p, w, n, f"{_money(db)} {c}", f"{_money(de)} {c}"]
                          for m, s, c, r, d, t, p, w, n, db, de in deltas], "restatements", {7, 8, 9})]
    else:
        parts.append('<p class="note" data-testid="no-restatements">No restatement since close.</p>')
    return "\n".join(parts)


def section(con, month: str | None, currency: str):
    """The panel as a report Section (apportion/report.py assembles the sections); None when nothing is closed."""
    from apportion.report import Section

    html_ = panel(con)
    return Section("Month close", "month-close", [html_]) if html_ else None
