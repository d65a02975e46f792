"""The report's savings panel: savings by kind and team, and the top findings. Every value from data is
escaped (team names, model names and key aliases are data)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from apportion.html_parts import esc as _esc
from apportion.html_parts import table as _table


def _money(v, ccy: str) -> str:
    return f"{Decimal(v).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,} {ccy}"


def panel(con, month: str | None) -> str:
    """HTML of the savings panel for the month (escaped)."""
    has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'recommendations'").fetchone()[0]
    if not has or month is None:
        return '<p class="note" data-testid="no-savings">No savings recommendations in this warehouse.</p>'
    by_kind = con.execute("""
        SELECT kind, coalesce(team, 'all teams') AS team, currency, count(*) AS n, sum(estimated_monthly_saving) AS s
        FROM recommendations WHERE x_BillingMonth = ? GROUP BY ALL ORDER BY s DESC, kind, team""", [month]).fetchall()
    if not by_kind:
        return '<p class="note" data-testid="no-savings">No savings recommendations for this month.</p>'
    total = con.execute("SELECT currency, sum(estimated_monthly_saving) FROM recommendations WHERE x_BillingMonth = ? "
                        "GROUP BY 1 ORDER BY 2 DESC", [month]).fetchall()
    top = con.execute("""
        SELECT kind, team, project, workload, scope_id, current, suggested, estimated_monthly_saving, currency,
               confidence, formula
        FROM recommendations WHERE x_BillingMonth = ?
        ORDER BY estimated_monthly_saving DESC, finding_id LIMIT 10""", [month]).fetchall()
    skipped = con.execute("SELECT count(*) FROM savings_skipped WHERE x_BillingMonth = ? OR x_BillingMonth IS NULL",
                          [month]).fetchone()[0]
    totals = ", ".join(
        f'<span data-testid="savings-total" data-currency="{_esc(c)}" data-value="{_esc(s)}">{_esc(_money(s, c))}</span>'
        for c, s in total)
    parts = [f"<p>Estimated monthly savings: {totals} from {sum(r[3] for r in by_kind)} findings. Each estimate is "
             "computed from the evidence in the <code>recommendations</code> table "
             "(<code>apportion savings --json</code>).</p>",
             "<h3>By kind and team</h3>",
             _table(["kind", "team", "findings", "estimated saving"],
                    [[k, t, n, _money(s, c)] for k, t, c, n, s in by_kind], "savings-by-kind", {2, 3}),
             "<h3>Top findings</h3>",
             _table(["kind", "team / project / workload", "scope", "now", "suggested", "saving", "confidence", "how"],
                    [[k, "/".join(x or "–" for x in (t, p, w)), sc, cur, sug, _money(s, c), conf, f]
                     for k, t, p, w, sc, cur, sug, s, c, conf, f in top], "savings-top", {5})]
    if skipped:
        parts.append(f'<p class="note" data-testid="savings-skipped">{skipped} scopes skipped for missing prices, '
                     "unknown models or missing utilisation (table <code>savings_skipped</code>).</p>")
    return "\n".join(parts)


def section(con, month: str | None, currency: str):
    """The panel as a report Section (apportion/report.py assembles the sections)."""
    from apportion.report import Section

    return Section("Savings", "savings", [panel(con, month)])
