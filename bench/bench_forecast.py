"""Backtest of the guardrails' forecast and anomaly detector on generated daily spend with known truth.

    python bench/bench_forecast.py [--months 24] [--seed 7]

Forecast: each month of a weekly-seasonal series (weekends at 30-45 % of weekdays, a slow trend, noise,
occasional one-off heavy days) is forecast on day 7, 14 and 21 with the history before it; the error of the
month-end forecast (|forecast - true month total| / true total) is compared with a straight run-rate
(actual / days elapsed x days in month); the 80 % band's coverage is counted, per band kind (the series' own
track record, or the residual formula when the history is short).

Anomalies: series with planted spikes (1-3 days) and level shifts (labelled anomalies) and series with only a
slow drift (no anomaly); precision and recall of episodes (a detected episode is right when it overlaps a
planted one) for apportion's detector at several min_percent thresholds vs a 7-day mean +- 3 sigma baseline,
grouped into episodes the same way.
"""

from __future__ import annotations

import argparse
import calendar
import random
from datetime import date, timedelta
from decimal import Decimal

from apportion.guardrails.anomalies import baseline_7d, detect
from apportion.guardrails.config import AnomalySettings
from apportion.guardrails.forecast import forecast_period


def series(rng: random.Random, start: date, days: int, heavy: bool = True) -> dict[date, Decimal]:
    base, weekend, trend = rng.uniform(500, 5000), rng.uniform(0.3, 0.45), rng.uniform(-0.002, 0.004)
    out = {}
    for i in range(days):
        d = start + timedelta(days=i)
        level = base * (1 + trend) ** i * (weekend if d.weekday() >= 5 else 1)
        y = level * rng.gauss(1, 0.08) * (rng.uniform(1.5, 2.5) if heavy and rng.random() < 0.02 else 1)
        out[d] = Decimal(str(round(max(y, 0), 2)))
    return out


def forecast_backtest(months: int, seed: int, n_series: int = 20) -> dict:
    rng = random.Random(seed)
    err = {(m, day): [] for m in ("seasonal", "run-rate") for day in (7, 14, 21)}
    covered = {7: 0, 14: 0, 21: 0}
    by_band: dict[tuple[int, str], list[int]] = {}
    total = 0
    for _ in range(n_series):
        start = date(2024, 1, 1)
        s = series(rng, start, 31 * (months + 2))
        for k in range(1, months + 1):     # the first month is history only
            y, m = start.year + (start.month - 1 + k) // 12, (start.month - 1 + k) % 12 + 1
            p0, p1 = date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1]) + timedelta(days=1)
            truth = sum(v for d, v in s.items() if p0 <= d < p1)
            for day in (7, 14, 21):
                as_of = p0 + timedelta(days=day - 1)
                f = forecast_period({d: v for d, v in s.items() if d <= as_of}, p0, p1, as_of)
                err[("seasonal", day)].append(abs(f.expected - truth) / truth)
                err[("run-rate", day)].append(abs(f.run_rate - truth) / truth)
                covered[day] += f.low <= truth <= f.high
                b = by_band.setdefault((day, f.band), [0, 0])
                b[0] += f.low <= truth <= f.high
                b[1] += 1
            total += 1
    return {"n": total, "mape": {k: float(sum(v) / len(v)) for k, v in err.items()},
            "coverage": {d: c / total for d, c in covered.items()},
            "by_band": {k: (c / n, n) for k, (c, n) in sorted(by_band.items())}}


def anomaly_backtest(seed: int, n: int = 300, min_percents: tuple[str, ...] = ("0.2", "0.4", "0.5")) -> dict:
    rng = random.Random(seed)
    detectors = {f"apportion, min_percent {float(p):.0%}": AnomalySettings(min_impact=Decimal(0),
                                                                        min_percent=Decimal(p))
                 for p in min_percents}
    stats = {name: {"tp": 0, "fp": 0, "found": 0, "truth": 0} for name in [*detectors, "7-day mean +- 3 sigma"]}
    for i in range(n):
        start = date(2025, 1, 1)
        s = series(rng, start, 90, heavy=False)  # no unlabelled heavy days: every spike is planted
        kind = ("spike", "shift", "drift")[i % 3]
        planted: list[tuple[date, date]] = []
        t0 = start + timedelta(days=rng.randint(40, 75))
        if kind == "spike":
            length = rng.randint(1, 3)
            for j in range(length):
                s[t0 + timedelta(days=j)] *= Decimal(str(round(rng.uniform(1.8, 3.0), 2)))
            planted.append((t0, t0 + timedelta(days=length - 1)))
        elif kind == "shift":
            factor = Decimal(str(round(rng.uniform(1.6, 2.2), 2)))
            for d in s:
                if d >= t0:
                    s[d] *= factor
            planted.append((t0, t0 + timedelta(days=13)))  # the first two weeks of the new level
        else:
            for j, d in enumerate(sorted(s)):
                s[d] *= Decimal(str(round(1 + 0.006 * j, 4)))  # +0.6 %/day: a trend, not an anomaly
        end = start + timedelta(days=89)
        found = [(name, detect(s, start, end, st)) for name, st in detectors.items()]
        for name, eps in [*found, ("7-day mean +- 3 sigma", baseline_7d(s, start + timedelta(days=14), end))]:
            eps = [e for e in eps if e.first_day >= start + timedelta(days=14)]
            hit = [any(e.first_day <= b and a <= e.last_day for a, b in planted) for e in eps]
            stats[name]["found"] += len(eps)
            stats[name]["tp"] += sum(hit)
            stats[name]["fp"] += len(eps) - sum(hit)
            stats[name]["truth"] += len(planted)
            stats[name]["recalled"] = stats[name].get("recalled", 0) + sum(
                any(e.first_day <= b and a <= e.last_day for e in eps) for a, b in planted)
    return {k: {"precision": v["tp"] / v["found"] if v["found"] else 0.0,
                "recall": v.get("recalled", 0) / v["truth"] if v["truth"] else 0.0, **v} for k, v in stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    fb = forecast_backtest(args.months, args.seed)
    print(f"forecast backtest: {fb['n']} series-months")
    print("| forecast made on | weekday-seasonal MAPE | run-rate MAPE | 80 % band coverage |")
    print("|---|---:|---:|---:|")
    for day in (7, 14, 21):
        print(f"| day {day} | {fb['mape'][('seasonal', day)]:.2%} | {fb['mape'][('run-rate', day)]:.2%} | "
              f"{fb['coverage'][day]:.0%} |")
    print("\n| forecast made on | band from | forecasts | 80 % band coverage |")
    print("|---|---|---:|---:|")
    for (day, band), (cov, n) in fb["by_band"].items():
        print(f"| day {day} | {band} | {n} | {cov:.0%} |")
    ab = anomaly_backtest(args.seed)
    print("\nanomaly backtest: 300 series of 90 days (100 spikes, 100 level shifts, 100 slow drifts); "
          "min_impact 0, sigmas 4")
    print("| detector | episodes found | true | false | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, v in ab.items():
        print(f"| {name} | {v['found']} | {v['tp']} | {v['fp']} | {v['precision']:.0%} | {v['recall']:.0%} |")


if __name__ == "__main__":
    main()
