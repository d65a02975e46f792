"""Period-end forecast from daily spend: a level times weekday factors, with a prediction interval.

Small and exact on purpose (Decimal, no floats for money): the series are short (weeks), weekly-seasonal and
many (one per budget), so a seasonal-level model estimated from the last 4 weeks beats a straight run-rate
(bench/bench_forecast.py measures it) without a forecasting library's install (statsforecast pulls in numba
and JIT-compiles on first use). See docs/guardrails.md.

- weekday factor f_w = mean spend on weekday w / mean spend, over the history window (>= 2 of each weekday;
  otherwise every factor is 1);
- level = mean of y / f_w over the last `level_days` days;
- expected remaining = level x the sum of f_w over the days left; forecast = actual to date + that;
- interval: residual sigma of y - level x f_w over the window; variance of the remaining sum
  = h sigma^2 + h^2 sigma^2 / n (noise of the days left plus the uncertainty of the level), z = 1.2816 (80 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext

Z80 = Decimal("1.2816")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Forecast:
    actual: Decimal          # spend in the period up to and including as_of
    expected: Decimal        # period-end forecast
    low: Decimal
    high: Decimal
    run_rate: Decimal        # straight run-rate: actual / days elapsed x days in period
    days_elapsed: int
    days_in_period: int
    history_days: int        # days of history the model used
    method: str              # "weekday-seasonal" | "level" (too little history for weekday factors) | "closed"
    # each remaining day: (day, cumulative expected, cumulative low, cumulative high) from actual to date
    path: tuple[tuple[date, Decimal, Decimal, Decimal], ...] = ()


def _q(x: Decimal) -> Decimal:
    return x.quantize(CENT)


def weekday_factors(days: list[tuple[date, Decimal]]) -> dict[int, Decimal]:
    """Spend on each weekday relative to the mean (1 for all when a weekday has fewer than 2 days)."""
    by: dict[int, list[Decimal]] = {w: [] for w in range(7)}
    for d, y in days:
        by[d.weekday()].append(y)
    total = sum((y for _, y in days), Decimal(0))
    if any(len(v) < 2 for v in by.values()) or total <= 0:
        return {w: Decimal(1) for w in range(7)}
    mean = total / len(days)
    return {w: (sum(v, Decimal(0)) / len(v)) / mean for w, v in by.items()}


def forecast_period(daily: dict[date, Decimal], period_start: date, period_end: date, as_of: date,
                    extra_actual: Decimal = Decimal(0), history: int = 28, level_days: int = 14,
                    z: Decimal = Z80) -> Forecast:
    """Forecast the spend of [period_start, period_end) seen at `as_of` (inclusive).

    `daily` is the forecastable (usage) spend per day, any range of days; days without a value count as 0
    from the first day present. `extra_actual` is spend in the period that is not forecast (one-off fees
    already booked: tax, purchases, credits): it is added to actual and to the forecast as it is.
    """
    days_in_period = (period_end - period_start).days
    as_of = min(as_of, period_end - timedelta(days=1))
    elapsed = max(0, (as_of - period_start).days + 1)
    actual = sum((y for d, y in daily.items() if period_start <= d <= as_of), Decimal(0)) + extra_actual
    run_rate = actual / elapsed * days_in_period if elapsed else Decimal(0)
    remaining = [as_of + timedelta(days=i) for i in range(1, days_in_period - elapsed + 1)]
    if not remaining:
        a = _q(actual)
        return Forecast(a, a, a, a, _q(run_rate), elapsed, days_in_period, 0, "closed")
    first = min(daily) if daily else as_of
    start = max(first, as_of - timedelta(days=history - 1))
    window = [(start + timedelta(days=i), daily.get(start + timedelta(days=i), Decimal(0)))
              for i in range((as_of - start).days + 1)] if start <= as_of else []
    with localcontext() as ctx:
        ctx.prec = 28
        if not window:
            a = _q(actual)
            return Forecast(a, a, a, a, _q(run_rate), elapsed, days_in_period, 0, "no-history")
        f = weekday_factors(window)
        method = "weekday-seasonal" if any(v != 1 for v in f.values()) else "level"
        recent = window[-level_days:]
        level = sum((y / f[d.weekday()] if f[d.weekday()] else y for d, y in recent), Decimal(0)) / len(recent)
        n = len(window)
        resid = [y - level * f[d.weekday()] for d, y in window]
        mean_r = sum(resid, Decimal(0)) / n
        var = sum(((r - mean_r) ** 2 for r in resid), Decimal(0)) / max(1, n - 1)
        per_day = [(d, level * f[d.weekday()]) for d in remaining]
        rest = sum((v for _, v in per_day), Decimal(0))
        h = Decimal(len(remaining))
        spread = z * (var * h + var * h * h / n).sqrt()
        expected = actual + rest
        path, cum = [], actual
        for k, (d, v) in enumerate(per_day, start=1):
            cum += v
            s_k = z * (var * k + var * k * k / n).sqrt()
            path.append((d, _q(cum), _q(max(actual, cum - s_k)), _q(cum + s_k)))
        low = max(actual, expected - spread)
        high = expected + spread
    return Forecast(_q(actual), _q(expected), _q(low), _q(high), _q(run_rate), elapsed, days_in_period, n, method,
                    tuple(path))
