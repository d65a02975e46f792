"""Spend anomalies: daily usage spend per (team x service), (team x model) and per source against a
seasonal baseline; a run of consecutive days above the band is ONE anomaly.

Fees are excluded (only ChargeCategory = 'Usage': no tax, credits, commitment purchases, refunds or
adjustments). Baseline for day t (from the previous `baseline_days`): weekday factors (each weekday's median
ratio to the week centred on it) times a level (the median of the last 7 deseasonalised days); a day counts when
it is `sigmas` (4) robust sigmas above it (sigma: 1.4826 x the MAD of the baseline's own errors over the window,
at least 5 % of expected); a new episode must also start above every day of the last week (deseasonalised), so a
run that began before the judged days is not taken for a new jump. Weekday factors need 4 weeks of history (3
ratios of each weekday) and must predict the window better than none; otherwise the level alone is used. An
episode is kept only when both its impact (actual - expected) and its impact as a share of expected pass
`min_impact` and `min_percent` (bench/bench_forecast.py measures the choice). Episodes ending in the last
`provisional_days` of a feed are provisional (shown, not alarmed). Days with less history than `min_history_days` are not judged: the
anomaly_history table says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from statistics import median

import duckdb
import pyarrow as pa

from apportion.db import lit
from apportion.guardrails.config import AnomalySettings, GuardrailsFile
from apportion.models.config import ApportionConfig
from apportion.models.taxonomy import Taxonomy
from apportion.sql import sql_text

CENT = Decimal("0.01")
MAD_SCALE = Decimal("1.4826")
LEVEL_DAYS = 7
SIGMA_FLOOR = Decimal("0.05")
CONTRIBUTORS = {"account": "a.SubAccountId", "resource": "a.ResourceId", "model": "li.x_ModelId",
                "api_key": "li.Tags ->> '$.key_alias'", "user": "li.Tags ->> '$.user'"}


@dataclass
class Episode:
    first_day: date
    last_day: date
    expected: Decimal
    actual: Decimal

    @property
    def impact(self) -> Decimal:
        return self.actual - self.expected


def _centred_ratios(chrono: list[tuple[date, Decimal]]) -> dict[int, Decimal]:
    """Index -> the day's spend / the mean of the 7 days centred on it. A centred week holds one of each weekday:
    the weekly pattern cancels, so a level shift or a drift inside the window does not bend the factors."""
    out = {}
    for i in range(3, len(chrono) - 3):
        if (chrono[i + 3][0] - chrono[i - 3][0]).days != 6:
            continue  # a gap: no centred week
        m = sum((y for _, y in chrono[i - 3:i + 4]), Decimal(0)) / 7
        if m > 0:
            out[i] = chrono[i][1] / m
    return out


def _factors(chrono: list[tuple[date, Decimal]], ratios: dict[int, Decimal]
             ) -> tuple[dict[int, Decimal], dict[int, Decimal]]:
    """(weekday factors, each ratio's day's factor computed without it). A factor is the weekday's median ratio,
    normalised to a mean of 1; all 1 without 3 ratios of every weekday (4 weeks of history: with 2, on/off spend
    such as a training job running some days passes for a weekly pattern)."""
    ones = {w: Decimal(1) for w in range(7)}
    by_wd: dict[int, list[tuple[int, Decimal]]] = {}
    for i, r in ratios.items():
        by_wd.setdefault(chrono[i][0].weekday(), []).append((i, r))
    if len(by_wd) < 7 or any(len(v) < 3 for v in by_wd.values()):
        return ones, {}
    med = {w: Decimal(median(r for _, r in v)) for w, v in by_wd.items()}
    mean = sum(med.values(), Decimal(0)) / 7
    if mean <= 0:
        return ones, {}
    loo = {}
    for w, v in by_wd.items():
        for i, _ in v:
            m = Decimal(median(r for j, r in v if j != i))
            loo[i] = m / (mean + (m - med[w]) / 7)
    return {w: m / mean for w, m in med.items()}, loo


def _deseason(y: Decimal, f: Decimal) -> Decimal:
    return y / f if f > 0 else y


def seasonal_expected(series: dict[date, Decimal], t: date, baseline_days: int) -> tuple[Decimal, Decimal, int]:
    """(expected, robust sigma, days of history) for day t from the days before it (see `baseline`)."""
    return baseline(series, t, baseline_days)[:3]


def baseline(series: dict[date, Decimal], t: date, baseline_days: int) -> tuple[Decimal, Decimal, int, Decimal]:
    """(expected, robust sigma, days of history, the highest of the last 7 days) for day t, in t's units.

    expected = the weekday factor of t x the level, the median of the last 7 deseasonalised days (a 1-3 day spike
    does not move it; a drift moves it along; a level shift is absorbed after 4 days). sigma = 1.4826 x the median
    absolute error (the MAD: robust to the spikes it must find) of that same 7-day median predicting each day of
    the window, the day deseasonalised by its weekday factor computed WITHOUT it (so the factors' own error is in
    the band), in the units of day t (x its weekday factor); at least 5 % of expected. The highest of the last 7
    deseasonalised days (x t's factor) tells a new jump from the continuation of one that began before.
    """
    chrono = [(t - timedelta(days=i), series[t - timedelta(days=i)]) for i in range(baseline_days, 0, -1)
              if (t - timedelta(days=i)) in series]
    if not chrono:
        return Decimal(0), Decimal(0), 0, Decimal(0)
    ratios = _centred_ratios(chrono)
    best = None
    # the weekly pattern is used only when it predicts the window better than none: on/off spend (a training job
    # that runs some days) gives weekday factors that are noise
    for f, loo in (_factors(chrono, ratios), ({w: Decimal(1) for w in range(7)}, {})):
        z = [_deseason(y, f[d.weekday()]) for d, y in chrono]
        errors = [abs(_deseason(y, loo.get(i, f[d.weekday()])) - Decimal(median(z[i - LEVEL_DAYS:i])))
                  for i, (d, y) in enumerate(chrono) if i >= LEVEL_DAYS]
        sigma_z = MAD_SCALE * Decimal(median(errors)) if errors else Decimal(0)
        if best is None or sigma_z < best[0]:
            best = (sigma_z, f, z)
        if all(v == 1 for v in f.values()):
            break
    sigma_z, f, z = best
    expected = Decimal(median(z[-LEVEL_DAYS:])) * f[t.weekday()]
    sigma = max(sigma_z * f[t.weekday()], SIGMA_FLOOR * abs(expected))
    return expected, sigma, len(chrono), max(z[-LEVEL_DAYS:]) * f[t.weekday()]


def detect(series: dict[date, Decimal], start: date, end: date, s: AnomalySettings) -> list[Episode]:
    """Episodes in [start, end] of a daily series (missing days are 0 from its first day)."""
    if not series:
        return []
    first = min(series)
    full = {first + timedelta(days=i): series.get(first + timedelta(days=i), Decimal(0))
            for i in range((end - first).days + 1)}
    episodes: list[Episode] = []
    cur: Episode | None = None
    d = max(start, first)
    while d <= end:
        expected, sigma, n, recent_max = baseline(full, d, s.baseline_days)
        y = full[d]
        if n >= s.min_history_days and y - expected > s.sigmas * sigma and y > expected:
            if cur and cur.last_day == d - timedelta(days=1):
                cur.last_day, cur.expected, cur.actual = d, cur.expected + expected, cur.actual + y
            elif y > recent_max:  # a new episode starts above the whole last week (deseasonalised), not inside
                # a run that began before the days judged
                cur = Episode(d, d, expected, y)
                episodes.append(cur)
        d += timedelta(days=1)
    return [e for e in episodes if e.impact >= s.min_impact and e.expected >= 0
            and (e.expected == 0 or e.impact / e.expected >= s.min_percent)]


def baseline_7d(series: dict[date, Decimal], start: date, end: date) -> list[Episode]:
    """The comparison detector: 7-day mean +- 3 sigma, consecutive days grouped the same way."""
    first = min(series)
    full = {first + timedelta(days=i): float(series.get(first + timedelta(days=i), 0))
            for i in range((end - first).days + 1)}
    out: list[Episode] = []
    cur = None
    d = max(start, first + timedelta(days=7))
    while d <= end:
        w = [full[d - timedelta(days=i)] for i in range(1, 8)]
        mean = sum(w) / 7
        sd = (sum((x - mean) ** 2 for x in w) / 6) ** 0.5
        if full[d] > mean + 3 * sd:
            if cur and cur.last_day == d - timedelta(days=1):
                cur.last_day = d
            else:
                cur = Episode(d, d, Decimal(0), Decimal(0))
                out.append(cur)
        d += timedelta(days=1)
    return out


def anomaly_id(kind: str, key: list[str], first_day: date) -> str:
    raw = json.dumps([kind, key, first_day.isoformat()])
    return "an-" + hashlib.sha256(raw.encode()).hexdigest()[:10]


SERIES = {
    "team x service": ("a.x_Team", "a.ServiceName"),
    "team x model": ("a.x_Team", "li.x_ModelId"),
    "source": ("a.x_SourceName",),
}



def _series_rows(con, cfg: ApportionConfig, kind: str, since: date) -> dict[tuple, dict[date, Decimal]]:
    cols = SERIES[kind]
    cost = "a.x_ReportingEffectiveCost" if cfg.reporting_currency else "a.EffectiveCost"
    join = " LEFT JOIN line_items AS li USING (x_SourceName, x_BillingMonth, x_LineId)" if kind == "team x model" else ""
    nn = " AND ".join(f"{c} IS NOT NULL" for c in cols)
    rows = con.execute(
        f"SELECT {', '.join(cols)}, {'a.BillingCurrency' if not cfg.reporting_currency else 'a.x_ReportingCurrency'}, "
        f"CAST(a.ChargePeriodStart AS DATE), sum({cost}) FROM allocations AS a{join} "
        f"WHERE a.ChargeCategory = 'Usage' AND {nn} AND a.x_BillingMonth >= ? "
        f"AND CAST(a.ChargePeriodStart AS DATE) >= ? GROUP BY ALL", [since.strftime("%Y-%m"), since]).fetchall()
    out: dict[tuple, dict[date, Decimal]] = {}
    for *key, cur, d, v in rows:
        out.setdefault((*key, cur), {})[d] = Decimal(v or 0)
    return out


def _lookup_contributors(con, kind: str, wanted: list[tuple[tuple, Episode]], baseline_days: int) -> list[dict]:
    """Top contributors of each (series key, episode) of one series kind, in ONE query (one scan of the months the
    episodes' windows cover). A contributor's delta = its spend in the episode - its spend in the `baseline_days`
    before it x days / baseline_days (usage, EffectiveCost); the 3 largest positive deltas of each name."""
    if not wanted:
        return []
    cols = SERIES[kind]
    eps = pa.table({
        "ep": pa.array(range(len(wanted)), pa.int32()),
        **{f"k{i}": pa.array([str(key[i]) for key, _ in wanted], pa.string()) for i in range(len(cols))},
        "first_day": pa.array([e.first_day for _, e in wanted], pa.date32()),
        "last_day": pa.array([e.last_day for _, e in wanted], pa.date32()),
        "before": pa.array([e.first_day - timedelta(days=baseline_days) for _, e in wanted], pa.date32()),
        "days": pa.array([(e.last_day - e.first_day).days + 1 for _, e in wanted], pa.int32()),
    })
    on = " AND ".join(f"{c} = e.k{i}" for i, c in enumerate(cols))
    picked = ", ".join(f'{expr} AS "{name}"' for name, expr in CONTRIBUTORS.items())
    per_name = " UNION ALL ".join(
        f"SELECT ep, '{name}' AS name, \"{name}\" AS v, sum(CASE WHEN d >= first_day THEN cost ELSE 0 END) "
        f"- sum(CASE WHEN d < first_day THEN cost ELSE 0 END) * days / ? AS delta "
        f"FROM pieces WHERE \"{name}\" IS NOT NULL GROUP BY ep, \"{name}\", first_day, days" for name in CONTRIBUTORS)
    months = (min(e.first_day for _, e in wanted) - timedelta(days=baseline_days), max(e.last_day for _, e in wanted))
    con.register("anomaly_lookups_arrow", eps)
    try:
        rows = con.execute(
            f"WITH pieces AS MATERIALIZED (SELECT e.ep, e.first_day, e.days, CAST(a.ChargePeriodStart AS DATE) AS d, "
            f"a.EffectiveCost AS cost, {picked} FROM allocations AS a "
            f"LEFT JOIN line_items AS li USING (x_SourceName, x_BillingMonth, x_LineId) "
            f"JOIN anomaly_lookups_arrow AS e ON {on} AND CAST(a.ChargePeriodStart AS DATE) BETWEEN e.before AND e.last_day "
            f"WHERE a.ChargeCategory = 'Usage' AND a.x_BillingMonth BETWEEN ? AND ?) "
            f"SELECT ep, name, v, delta FROM ({per_name}) WHERE delta > 0 "
            f"QUALIFY row_number() OVER (PARTITION BY ep, name ORDER BY delta DESC, v) <= 3 ORDER BY ep, name, delta DESC, v",
            [months[0].strftime("%Y-%m"), months[1].strftime("%Y-%m"), *[baseline_days] * len(CONTRIBUTORS)]).fetchall()
    finally:
        con.unregister("anomaly_lookups_arrow")
    out: list[dict] = [{} for _ in wanted]
    for ep, name, v, d in rows:
        out[ep].setdefault(name, []).append({"value": v, "delta": str(Decimal(d).quantize(CENT))})
    return [{name: found[name] for name in CONTRIBUTORS if name in found} for found in out]


def _lake_versions(con) -> dict[str, set[str]] | None:
    """Month -> the partition versions (folders) of line items and allocations the warehouse reads; None when the
    connection has no lake_files (a hand-made warehouse) or a partition is not versioned (it may change in place)."""
    try:
        paths = con.execute("SELECT path FROM lake_files WHERE lake_table IN ('line_items', 'allocations')").fetchall()
    except duckdb.Error:
        return None
    out: dict[str, set[str]] = {}
    for (p,) in paths:
        version = Path(p).parent
        if not version.name.startswith("v-") or not version.parent.name.startswith("x_BillingMonth="):
            return None
        out.setdefault(version.parent.name.split("=", 1)[1], set()).add(version.relative_to(
            version.parent.parent.parent).as_posix())
    return out


def _lookup_key(kind: str, key: tuple, e: Episode, baseline_days: int, versions: dict[str, set[str]]) -> str:
    """What an episode's contributors depend on: the series, the episode's days, the baseline and the exact
    partition versions (immutable folders) of every month its window reads."""
    before = e.first_day - timedelta(days=baseline_days)
    months = sorted(m for m in versions if before.strftime("%Y-%m") <= m <= e.last_day.strftime("%Y-%m"))
    raw = json.dumps([kind, [str(k) for k in key[:len(SERIES[kind])]], e.first_day.isoformat(),
                      e.last_day.isoformat(), baseline_days, [sorted(versions[m]) for m in months]])
    return hashlib.sha256(raw.encode()).hexdigest()


def contributors_cache_path(cfg: ApportionConfig) -> Path:
    return cfg.warehouse / "guardrails" / "anomaly_contributors.json"


def _read_cache(cfg: ApportionConfig) -> dict[str, dict]:
    try:
        return json.loads(contributors_cache_path(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(cfg: ApportionConfig, entries: dict[str, dict]) -> None:
    p = contributors_cache_path(cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(entries), encoding="utf-8")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write: no temporary file survives


def top_contributors(con, cfg: ApportionConfig | None, lookups: list[tuple[str, tuple, Episode]],
                     baseline_days: int) -> list[dict]:
    """The contributors of each episode. An episode whose window reads the same partition versions as when it was
    last looked up keeps that result (<warehouse>/guardrails/anomaly_contributors.json, keyed by what the result
    depends on): a nightly run looks up only the episodes whose window reaches the months it rebuilt, so its
    cost does not grow with the history. The others: one query per series kind."""
    versions = _lake_versions(con) if cfg is not None else None
    cache = _read_cache(cfg) if versions is not None else {}
    keys = [_lookup_key(kind, key, e, baseline_days, versions) if versions is not None else None
            for kind, key, e in lookups]
    out: list[dict | None] = [cache.get(k) if k else None for k in keys]
    for kind in SERIES:
        todo = [i for i, (k, _, _) in enumerate(lookups) if k == kind and out[i] is None]
        for i, found in zip(todo, _lookup_contributors(con, kind, [lookups[i][1:] for i in todo], baseline_days)):
            out[i] = found
    if versions is not None:
        _write_cache(cfg, {k: v for k, v in zip(keys, out)})  # only this build's episodes: the file stays small
    return out


def find(con, cfg: ApportionConfig, s: AnomalySettings) -> tuple[list[dict], list[dict]]:
    """(episode rows, history rows) for the whole ledger."""
    # one scan: each source's first day and latest day with money (the ledger's: the min and the max of them)
    per_source = con.execute("SELECT x_SourceName, min(CAST(ChargePeriodStart AS DATE)), max(CAST(ChargePeriodStart "
                             "AS DATE)) FILTER (WHERE EffectiveCost <> 0) FROM allocations GROUP BY 1").fetchall()
    source_as_of = {src: last for src, _, last in per_source if last is not None}
    if not source_as_of:
        return [], []
    as_of = max(source_as_of.values())
    first_day = min(first for _, first, _ in per_source if first is not None)
    episodes = []
    window_start = as_of - timedelta(days=s.lookback_days)  # only recent episodes: the cost does not grow with history
    since = max(first_day, window_start - timedelta(days=s.baseline_days))
    for kind in SERIES:
        rows = _series_rows(con, cfg, kind, since)
        for key, series in sorted(rows.items(), key=lambda kv: [str(x) for x in kv[0]]):
            if not any(series.values()):
                continue
            end = source_as_of.get(key[0], as_of) if kind == "source" else as_of
            for e in detect(series, since, end, s):
                if e.last_day < window_start:
                    continue
                aid = anomaly_id(kind, [str(k) for k in key[:-1]], e.first_day)
                episodes.append({
                    "anomaly_id": aid, "series_kind": kind, "series": " / ".join(str(k) for k in key[:-1]),
                    "series_key": json.dumps([str(k) for k in key[:-1]]), "first_day": e.first_day,
                    "last_day": e.last_day, "days": (e.last_day - e.first_day).days + 1, "currency": key[-1],
                    "expected": e.expected.quantize(CENT), "actual": e.actual.quantize(CENT),
                    "impact": e.impact.quantize(CENT),
                    "impact_ratio": (e.impact / e.expected).quantize(Decimal("0.0001")) if e.expected else None,
                    "provisional": e.last_day > end - timedelta(days=s.provisional_days),
                    "_lookup": (kind, key, e),
                })
    # contributors for the largest episodes only (looked up again only when the data under their window changed)
    ranked = sorted(episodes, key=lambda r: -r["impact"])
    found = top_contributors(con, cfg, [ep["_lookup"] for ep in ranked[:s.contributors_for]], s.baseline_days)
    for i, ep in enumerate(ranked):
        del ep["_lookup"]
        ep["top_contributors"] = json.dumps(found[i] if i < s.contributors_for
                                            else {"note": "not looked up (see contributors_for)"})
    history = []
    month = date(first_day.year, first_day.month, 1)
    judged_from = first_day + timedelta(days=s.min_history_days)
    while month <= as_of:
        nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        last = min(as_of, nxt - timedelta(days=1))
        begin = max(month, first_day)
        unjudged = max(0, (min(last, judged_from - timedelta(days=1)) - begin).days + 1)
        history.append({
            "month": f"{month.year}-{month.month:02d}", "days_with_data": (last - begin).days + 1,
            "days_not_judged": unjudged, "first_judged_day": max(month, judged_from) if judged_from <= last else None,
            "note": (f"{unjudged} day(s) not judged: the ledger starts {first_day} and the baseline needs "
                     f"{s.min_history_days} days of history" if unjudged else "every day judged"),
        })
        month = nxt
    return episodes, history




def dismissals_path(cfg: ApportionConfig):
    d = cfg.warehouse / "guardrails"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "dismissals.jsonl"
    if not p.exists():
        p.touch()
    return p


def dismiss(cfg: ApportionConfig, anomaly: str, reason: str, by: str | None = None) -> dict:
    from apportion.guardrails.alerts import write_jsonl

    if not reason.strip():
        raise ValueError("a dismissal needs a --reason")
    p = dismissals_path(cfg)
    rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = [r for r in rows if r["anomaly_id"] != anomaly]
    rec = {"anomaly_id": anomaly, "reason": reason, "dismissed_at": datetime.now(timezone.utc).isoformat(),
           "dismissed_by": by}
    write_jsonl(p, [*rows, rec])
    return rec


def create_tables(con, cfg: ApportionConfig, tax: Taxonomy, g: GuardrailsFile | None) -> int:
    from apportion.guardrails.tables import document, fill

    s = g.anomalies if g is not None else AnomalySettings()
    episodes, history = find(con, cfg, s)
    fill(con, "anomaly_episodes", episodes)
    fill(con, "anomaly_history", history)
    con.execute(sql_text("guardrails/create_anomalies.sql").format(path=lit(str(dismissals_path(cfg)))))
    for name in ("anomaly_episodes", "anomaly_history", "anomalies"):
        document(con, name)
    return len(episodes)
