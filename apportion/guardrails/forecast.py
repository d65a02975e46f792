"""Period-end forecast from daily spend: a level times weekday factors, with a prediction interval.

Small and exact on purpose (Decimal, no floats for money): the series are short (weeks), weekly-seasonal and
many (one per budget), so a seasonal-level model estimated from the last 4 weeks beats a straight run-rate
(bench/bench_forecast.py measures it) without a forecasting library's install (statsforecast pulls in numba
and JIT-compiles on first use). See docs/guardrails.md.

- weekday factor f_w = mean spend on weekday w / mean spend, over the history window (>= 2 of each weekday;
  otherwise every factor is 1);
- level = mean of y / f_w over the last `level_days` days;
- expected remaining = level x the sum of f_w over the days left; forecast = actual to date + that;
- interval (nominal 80 %): from the series' own track record when it has one: the same forecast made on every
  3rd day of the last year that has the h days after it in the history (h = the days left now, up to 120 past
  forecasts), and the 5th and 95th percentiles of actual / forecast over those h days, applied to the forecast of
  the days left (a rolling-origin backtest on the series itself: trends, level changes and heavy days widen it as
  they happened; the windows overlap, so their 10th-90th percentiles under-cover: 72-77 % in the backtest, 82-84 %
  with 5th-95th). With fewer than 14 past forecasts (a short history), the residual formula: variance of the
  remaining sum = h sigma^2 + h^2 sigma^2 / n (noise of the days left plus the uncertainty of the level),
  z = 1.2816, widened x 2 (it ignores trend and level changes: 50-75 % coverage unwidened, 77-88 % widened).
  bench/bench_forecast.py measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext

Z80 = Decimal("1.2816")
Z80_COVERAGE = Decimal("0.8")
CENT = Decimal("0.01")
MAX_ORIGINS = 120      # past forecasts in the track record ...
ORIGIN_STEP = 3        # ... every 3rd day: up to a year back (adjacent origins' errors are nearly the same)
MIN_ORIGINS = 14
TAIL = Decimal("0.05")  # 5th-95th percentiles: overlapping windows make the track record's spread look narrower
RESIDUAL_WIDEN = Decimal(2)  # the residual formula misses trend and level changes: x 2 (bench/RESULTS.md)


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
    band: str = "residuals"  # "track record" (percentiles of the series' own past errors) | "residuals"


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


def _fit(daily: dict[date, Decimal], first: date, as_of: date, history: int, level_days: int):
    """(window, weekday factors, level) of the model fitted on the days up to as_of."""
    start = max(first, as_of - timedelta(days=history - 1))
    window = [(start + timedelta(days=i), daily.get(start + timedelta(days=i), Decimal(0)))
              for i in range((as_of - start).days + 1)] if start <= as_of else []
    if not window:
        return window, {w: Decimal(1) for w in range(7)}, Decimal(0)
    f = weekday_factors(window)
    recent = window[-level_days:]
    level = sum((y / f[d.weekday()] if f[d.weekday()] else y for d, y in recent), Decimal(0)) / len(recent)
    return window, f, level


def track_record(daily: dict[date, Decimal], first: date, as_of: date, h: int, history: int,
                 level_days: int) -> list[Decimal]:
    """actual / forecast of the h days after each of the last MAX_ORIGINS days that have them (and a full
    history before them): the series' own errors at this horizon."""
    out = []
    origin = as_of - timedelta(days=h)
    while len(out) < MAX_ORIGINS and (origin - first).days + 1 >= history:
        _, f, level = _fit(daily, first, origin, history, level_days)
        days = [origin + timedelta(days=i) for i in range(1, h + 1)]
        predicted = sum((level * f[d.weekday()] for d in days), Decimal(0))
        if predicted > 0:
            out.append(sum((daily.get(d, Decimal(0)) for d in days), Decimal(0)) / predicted)
        origin -= timedelta(days=ORIGIN_STEP)
    return out


def _percentile(values: list[Decimal], q: Decimal) -> Decimal:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


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
    with localcontext() as ctx:
        ctx.prec = 28
        window, f, level = _fit(daily, first, as_of, history, level_days)
        if not window:
            a = _q(actual)
            return Forecast(a, a, a, a, _q(run_rate), elapsed, days_in_period, 0, "no-history")
        method = "weekday-seasonal" if any(v != 1 for v in f.values()) else "level"
        n = len(window)
        resid = [y - level * f[d.weekday()] for d, y in window]
        mean_r = sum(resid, Decimal(0)) / n
        var = sum(((r - mean_r) ** 2 for r in resid), Decimal(0)) / max(1, n - 1)
        per_day = [(d, level * f[d.weekday()]) for d in remaining]
        rest = sum((v for _, v in per_day), Decimal(0))
        h = Decimal(len(remaining))
        spread = z * (var * h + var * h * h / n).sqrt()
        expected = actual + rest
        # the band's half-widths below and above the rest, as multiples of the residual formula's
        down = up = RESIDUAL_WIDEN
        band = "residuals"
        record = track_record(daily, first, as_of, len(remaining), history, level_days) if rest > 0 else []
        if len(record) >= MIN_ORIGINS and spread > 0:
            tail = TAIL
            down = max(Decimal(0), rest * (1 - _percentile(record, tail))) / spread
            up = max(Decimal(0), rest * (_percentile(record, 1 - tail) - 1)) / spread
            band = "track record"
        path, cum = [], actual
        for k, (d, v) in enumerate(per_day, start=1):
            cum += v
            s_k = z * (var * k + var * k * k / n).sqrt()
            path.append((d, _q(cum), _q(max(actual, cum - down * s_k)), _q(cum + up * s_k)))
        low = max(actual, expected - down * spread)
        high = expected + up * spread
    return Forecast(_q(actual), _q(expected), _q(low), _q(high), _q(run_rate), elapsed, days_in_period, n, method,
                    tuple(path), band)
