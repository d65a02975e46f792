"""Anomalies (issue 11): one episode per multi-day spike, thresholds on $ and %, provisional last days,
dismissals that survive a rebuild, and too little history said instead of guessed."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import duckdb

from apportion.guardrails.anomalies import detect
from apportion.guardrails.config import AnomalySettings
from tests.test_guardrails_budgets import GOOD, project


def flat(days: int, start=date(2026, 5, 4)) -> dict:
    return {start + timedelta(days=i): Decimal(100) for i in range(days)}


def test_three_day_spike_is_one_episode_by_hand():
    s = flat(40)
    for i in (30, 31, 32):                 # +400 on three days: expected 100 each (same-weekday median)
        s[date(2026, 5, 4) + timedelta(days=i)] = Decimal(500)
    settings = AnomalySettings(min_impact=Decimal(500), min_percent=Decimal("0.5"))
    [e] = detect(s, date(2026, 5, 4), date(2026, 6, 12), settings)
    assert (e.first_day, e.last_day) == (date(2026, 6, 3), date(2026, 6, 5))
    assert (e.expected, e.actual, e.impact) == (Decimal(300), Decimal(1500), Decimal(1200))
    # the same spike below the $ threshold (impact 1200 < 2000) or the % threshold is not flagged
    assert detect(s, date(2026, 5, 4), date(2026, 6, 12), AnomalySettings(min_impact=Decimal(2000))) == []
    assert detect(s, date(2026, 5, 4), date(2026, 6, 12),
                  AnomalySettings(min_impact=Decimal(1), min_percent=Decimal(5))) == []
    # days with less history than min_history_days are never judged
    early = flat(40)
    early[date(2026, 5, 10)] = Decimal(5000)
    assert detect(early, date(2026, 5, 4), date(2026, 6, 12), settings) == []


def test_warehouse_anomalies_provisional_and_dismissal_survives_rebuild(tmp_path):
    from apportion.guardrails.anomalies import dismiss
    from apportion.guardrails.views import create_views

    cfg, tax = project(tmp_path, GOOD + "anomalies:\n  min_impact: 300\n  min_percent: 0.5\n  provisional_days: 2\n")
    cfg.warehouse.mkdir(parents=True)
    con = duckdb.connect(str(cfg.duckdb_path))
    rows = []
    start = date(2026, 5, 4)
    for i in range(40):
        d = start + timedelta(days=i)
        research = 1000 if i in (20, 21) else 100           # 2-day spike (judged) ...
        search = 1000 if i == 39 else 100                    # ... and a spike on the feed's last day (provisional)
        rows += [(d, "Usage", research, "research", "i-big" if i in (20, 21) else "i-1", 2 * i),
                 (d, "Usage", search, "search", "i-2", 2 * i + 1)]
    rows.append((start + timedelta(days=20), "Tax", 9999, "research", "i-1", 999))   # fees never count
    con.execute("CREATE TABLE allocations (ChargePeriodStart TIMESTAMPTZ, ChargeCategory VARCHAR, EffectiveCost "
                "DECIMAL(38,12), x_Team VARCHAR, ResourceId VARCHAR, x_LineId BIGINT, BillingCurrency VARCHAR DEFAULT "
                "'USD', x_SourceName VARCHAR DEFAULT 'aws-main', x_BillingMonth VARCHAR DEFAULT '2026-05', ServiceName "
                "VARCHAR DEFAULT 'Amazon EC2', ProviderName VARCHAR DEFAULT 'AWS', SubAccountId VARCHAR DEFAULT '1', "
                "x_Project VARCHAR, x_Workload VARCHAR)")
    con.executemany("INSERT INTO allocations (ChargePeriodStart, ChargeCategory, EffectiveCost, x_Team, ResourceId, "
                    "x_LineId) VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE line_items AS SELECT x_SourceName, x_BillingMonth, x_LineId, NULL::VARCHAR AS x_ModelId, "
                "NULL::JSON AS Tags FROM allocations")
    create_views(con, cfg, tax)
    got = con.execute("SELECT series_kind, series, first_day, last_day, expected, actual, impact, provisional, "
                      "top_contributors ->> '$.resource[0].value' FROM anomalies ORDER BY series_kind, series").fetchall()
    assert ("team x service", "research / Amazon EC2", date(2026, 5, 24), date(2026, 5, 25), Decimal("200.00"),
            Decimal("2000.00"), Decimal("1800.00"), False, "i-big") in got
    assert ("team x service", "search / Amazon EC2", date(2026, 6, 12), date(2026, 6, 12), Decimal("100.00"),
            Decimal("1000.00"), Decimal("900.00"), True, "i-2") in got
    aid = con.execute("SELECT anomaly_id FROM anomalies WHERE series = 'research / Amazon EC2'").fetchone()[0]
    dismiss(cfg, aid, "planned load test")
    assert con.execute("SELECT dismissed, dismissed_reason FROM anomalies WHERE anomaly_id = ?", [aid]).fetchone() == (
        True, "planned load test")
    con.execute("DROP VIEW anomalies")
    create_views(con, cfg, tax)                             # a rebuild keeps the id and the dismissal
    assert con.execute("SELECT dismissed FROM anomalies WHERE anomaly_id = ?", [aid]).fetchone() == (True,)
    note = con.execute("SELECT days_not_judged, note FROM anomaly_history WHERE month = '2026-05'").fetchone()
    assert note[0] == 14 and "needs 14 days of history" in note[1]
    con.close()


def weekly(days: int, factor=lambda i: 1, start=date(2026, 5, 4)) -> dict:
    """Weekdays 100, weekends 40 (2026-05-04 is a Monday), times factor(day index)."""
    return {start + timedelta(days=i): Decimal(40 if (start + timedelta(days=i)).weekday() >= 5 else 100) * factor(i)
            for i in range(days)}


def cents(e) -> tuple:
    return e.first_day, e.last_day, e.expected.quantize(Decimal("0.01")), e.actual.quantize(Decimal("0.01"))


def test_level_shift_is_one_episode_and_a_weekend_spike_is_found():
    from apportion.guardrails.anomalies import baseline_7d

    settings = AnomalySettings(min_impact=Decimal(0), min_percent=Decimal("0.2"))
    # spend doubles from day 30 (Wed 2026-06-03) on: the 7-day median level still reads the old level for the next
    # days (Wed-Fri: expected 100 + 100 + 100 = 300, actual 600; by Saturday the ratios of the days whose centred
    # week reaches into the shift have widened the band), then follows the new one: ONE episode, not a new one
    # whenever a weekday's 4-week median lags (the same-weekday median found a second episode on Mon 06-08)
    shift = weekly(56, lambda i: 2 if i >= 30 else 1)
    [e] = detect(shift, date(2026, 5, 4), date(2026, 6, 28), settings)
    assert cents(e) == (date(2026, 6, 3), date(2026, 6, 5), Decimal("300.00"), Decimal("600.00"))
    # a Saturday at 120 (3x its 40): weekday factors 100 / (580 / 7) and 40 / (580 / 7), level 580 / 7 -> expected
    # 40; found. The 7-day mean +- 3 sigma misses it: mean 82.86, sd 29.28 -> threshold 170.7
    spike = weekly(42)
    spike[date(2026, 6, 6)] = Decimal(120)
    [e] = detect(spike, date(2026, 5, 4), date(2026, 6, 14), settings)
    assert cents(e) == (date(2026, 6, 6), date(2026, 6, 6), Decimal("40.00"), Decimal("120.00"))
    assert baseline_7d(spike, date(2026, 5, 4), date(2026, 6, 14)) == []
    # a steady 2 %/day drift is a trend, not an anomaly: expected = the level 4 days back (the median of 7), and the
    # baseline's own errors (1.02^4 - 1 = 8.2 % of the level) set the band
    assert detect(weekly(56, lambda i: Decimal("1.02") ** i), date(2026, 5, 4), date(2026, 6, 28), settings) == []
