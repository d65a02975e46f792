"""Budget status per budget and period: actual, period-end forecast with its band, thresholds crossed.

Spend is the ledger's EffectiveCost (the invoice's dollars, amortised), in the reporting currency when
one is configured (x_ReportingEffectiveCost), else the lines billed in the budget's currency. Usage lines are
forecast; one-off charges (tax, purchases, credits, refunds) count in actual as they are booked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from apportion.guardrails.config import LEDGER_SCOPES, Budget, GuardrailsFile
from apportion.guardrails.forecast import Forecast, forecast_period
from apportion.models.config import ApportionConfig
from apportion.models.focus import dimension_column

SEVERITY_RANK = {"ok": 0, "info": 1, "warn": 2, "critical": 3}
LEDGER_COLUMNS = {"provider": "a.ProviderName", "service": "a.ServiceName", "model": "li.x_ModelId",
                  "source": "a.x_SourceName"}


def period_of(d: date, period: str) -> tuple[str, date, date]:
    """(label, start, exclusive end) of the month or quarter holding d."""
    if period == "quarter":
        q = (d.month - 1) // 3
        start = date(d.year, 3 * q + 1, 1)
        label = f"{d.year}-Q{q + 1}"
    else:
        start = date(d.year, d.month, 1)
        label = f"{d.year}-{d.month:02d}"
    m = start.month + (3 if period == "quarter" else 1)
    end = date(start.year + (m - 1) // 12, (m - 1) % 12 + 1, 1)
    return label, start, end


def ledger_as_of(con) -> date | None:
    """The latest charge day with money in the ledger: "today" for the budgets and anomalies."""
    return con.execute("SELECT max(CAST(ChargePeriodStart AS DATE)) FROM allocations WHERE EffectiveCost <> 0").fetchone()[0]


def scope_filter(b: Budget | dict, dims: list[str]) -> tuple[str, list, bool]:
    """SQL condition, its parameters (tag values are data: never pasted), and whether line_items is joined."""
    scope = b.scope if isinstance(b, Budget) else b
    conds, params, join = [], [], False
    for key, raw in scope.items():
        values = [raw] if isinstance(raw, str) else list(raw)
        if key in LEDGER_SCOPES:
            col = LEDGER_COLUMNS[key]
            join |= key == "model"
            conds.append("(" + " OR ".join(f"{col} GLOB ?" for _ in values) + ")")
            params += values
        elif key in dims:
            conds.append(f"list_contains(?, a.{dimension_column(key)})")
            params.append(values)
    return (" AND ".join(conds) or "true"), params, join


@dataclass
class BudgetPeriod:
    budget: Budget
    period: str
    start: date
    end: date
    as_of: date
    forecast: Forecast
    crossed: list[dict]
    daily_actual: list[tuple[date, Decimal]]

    @property
    def is_open(self) -> bool:
        return self.as_of < self.end - timedelta(days=1)

    @property
    def status(self) -> str:
        return max((c["severity"] for c in self.crossed), key=SEVERITY_RANK.get, default="ok")


def evaluate(con, cfg: ApportionConfig, g: GuardrailsFile, dims: list[str]) -> list[BudgetPeriod]:
    as_of = ledger_as_of(con)
    if as_of is None:
        return []
    out = []
    for b in g.budgets:
        cond, params, join = scope_filter(b, dims)
        usage, other = daily_spend(con, cfg, cond, params, join, b.currency)
        days = sorted(set(usage) | set(other))
        if not days:
            continue
        first = max(days[0], b.effective.from_ or days[0])
        last = min(as_of, (b.effective.until - timedelta(days=1)) if b.effective.until else as_of)
        d = first
        while d <= last:
            label, start, end = period_of(d, b.period)
            lo = max(start, b.effective.from_ or start)
            hi = min(end, b.effective.until or end)
            u = {k: v for k, v in usage.items() if k <= as_of and (k < start or lo <= k < hi)}
            extra = sum((v for k, v in other.items() if lo <= k < hi and k <= as_of), Decimal(0))
            fc = forecast_period(u, start, end, as_of, extra_actual=extra)
            crossed = []
            for t in b.thresholds:
                limit = (b.amount * t.at).quantize(Decimal("0.01"))
                value = fc.actual if t.of == "actual" else fc.expected
                if t.of == "forecast" and fc.method == "closed":
                    continue  # a closed period has no forecast to warn about
                if value >= limit:
                    crossed.append({"of": t.of, "at": t.at, "severity": t.severity, "limit": limit, "value": value})
            cum, daily_actual = Decimal(0), []
            for k in range((min(as_of, end - timedelta(days=1)) - start).days + 1):
                day = start + timedelta(days=k)
                cum += usage.get(day, Decimal(0)) + other.get(day, Decimal(0)) if lo <= day < hi else Decimal(0)
                daily_actual.append((day, cum.quantize(Decimal("0.01"))))
            out.append(BudgetPeriod(b, label, start, end, as_of, fc, crossed, daily_actual))
            d = end
    return out


def daily_spend(con, cfg: ApportionConfig, cond: str, params: list, join: bool, currency: str
                ) -> tuple[dict[date, Decimal], dict[date, Decimal]]:
    """(usage spend per day, other spend per day: tax, purchases, credits, adjustments) in the scope."""
    if cfg.reporting_currency:
        cost, cur, extra = "a.x_ReportingEffectiveCost", "true", []
    else:
        cost, cur, extra = "a.EffectiveCost", "a.BillingCurrency = ?", [currency]
    src = "allocations AS a" + (" LEFT JOIN line_items AS li USING (x_SourceName, x_BillingMonth, x_LineId)"
                                if join else "")
    rows = con.execute(f"SELECT CAST(a.ChargePeriodStart AS DATE), a.ChargeCategory = 'Usage', sum({cost}) "
                       f"FROM {src} WHERE {cond} AND {cur} GROUP BY ALL", [*params, *extra]).fetchall()
    usage: dict[date, Decimal] = defaultdict(Decimal)
    other: dict[date, Decimal] = defaultdict(Decimal)
    for d, is_usage, v in rows:
        (usage if is_usage else other)[d] += Decimal(v or 0)
    return dict(usage), dict(other)
