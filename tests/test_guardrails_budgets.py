"""Guardrails (issue 11): budgets as code, the period-end forecast, alerts that arrive once.

Every figure is computed by hand in the comments; the alert tests use a real HTTP receiver and a real SMTP
server (aiosmtpd) on 127.0.0.1, started here.
"""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from apportion.guardrails.budgets import evaluate
from apportion.guardrails.config import load_guardrails
from apportion.guardrails.forecast import forecast_period
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from apportion.models.taxonomy import load_taxonomy

TAXONOMY = """version: 1
dimensions:
  team:
    keys: [team]
    allowed: [research, search]
  project:
    keys: [project]
  workload:
    keys: [workload]
"""


def project(tmp_path, budgets: str):
    (tmp_path / "taxonomy.yaml").write_text(TAXONOMY)
    (tmp_path / "budgets.yaml").write_text(budgets)
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: wh\ntaxonomy: taxonomy.yaml\nbudgets: budgets.yaml\n"
        "sources:\n  - {name: aws-main, kind: aws_cur, uri: bucket}\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    return cfg, load_taxonomy(cfg.taxonomy)


GOOD = """version: 1
channels:
  hook: "${GUARDRAIL_HOOK_URL}"
budgets:
  - name: research-monthly
    scope: {team: research}
    amount: 2000
    currency: USD
    thresholds:
      - {of: actual, at: 0.5, severity: warn}
      - {of: forecast, at: "100%", severity: critical}
    channels: [hook]
"""


@pytest.mark.parametrize("text, line, key, words", [
    (GOOD.replace("team: research", "team: reserch"), 6, "budgets[0].scope.team", "unknown team 'reserch'"),
    (GOOD.replace("team: research", "squad: research"), 6, "budgets[0].scope.squad", "unknown dimension 'squad'"),
    (GOOD.replace("at: 0.5", "at: 80"), 10, "budgets[0].thresholds[0].at", "at most 10"),
    (GOOD.replace("currency: USD", "currency: USX"), 8, "budgets[0].currency", "unknown currency 'USX'"),
    (GOOD.replace('"${GUARDRAIL_HOOK_URL}"', "not a url"), 3, "channels.hook", "cannot be parsed"),
    (GOOD.replace('"${GUARDRAIL_HOOK_URL}"', '"mailto://bob:hunter2@example.com?to=a@example.com"'), 3,
     "channels.hook", "carries a password"),
    (GOOD + "anomalies:\n  sigmas: 0\n", 14, "anomalies.sigmas", "greater than or equal to 1"),
    (GOOD + "anomalies:\n  channels: [nowhere]\n", 14, "anomalies.channels[0]", "cannot be parsed"),
    (GOOD.replace("    currency: USD", "    currency: USD\n    amout: 5"), 9, "budgets[0].amout", "unknown key"),
])
def test_bad_budget_names_file_line_and_key(tmp_path, text, line, key, words):
    cfg, tax = project(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_guardrails(cfg, tax)
    msg = str(err.value)
    assert str(tmp_path / "budgets.yaml") in msg
    assert f"line {line}: {key}: " in msg and words in msg, msg
    assert "hunter2" not in msg


def test_forecast_weekday_seasonal_by_hand():
    # 2026-06-01 is a Monday. Weekdays 100, weekends 30, for 14 days: mean 1120/14 = 80; factors 1.25 / 0.375;
    # level 80. Days left in June after the 14th: 12 weekdays and 4 weekend days: 1200 + 120 = 1320.
    start = date(2026, 6, 1)
    daily = {start + timedelta(days=i): Decimal(30 if (start + timedelta(days=i)).weekday() >= 5 else 100)
             for i in range(14)}
    f = forecast_period(daily, start, date(2026, 7, 1), date(2026, 6, 14))
    assert f.actual == Decimal("1120.00")
    assert f.expected == Decimal("2440.00")          # 1120 + 1320
    assert f.run_rate == Decimal("2400.00")          # 1120 / 14 x 30: the straight line misses the weekends
    assert f.low == f.high == f.expected             # no residuals: no band
    assert f.method == "weekday-seasonal" and f.days_elapsed == 14 and f.days_in_period == 30
    noisy = dict(daily)
    noisy[date(2026, 6, 3)] += 40                    # one noisy day widens the band around a higher forecast
    g = forecast_period(noisy, start, date(2026, 7, 1), date(2026, 6, 14))
    assert g.low < g.expected < g.high and g.actual == Decimal("1160.00")
    closed = forecast_period(daily, start, date(2026, 6, 15), date(2026, 6, 14))
    assert closed.method == "closed" and closed.expected == closed.actual == Decimal("1120.00")


def warehouse(cfg):
    """A small ledger: research spends 100 on weekdays, 30 on weekends from 2026-06-01 to 06-14, plus 50 tax on
    06-01 (counted in actual, not forecast); search spends 999 a day (another team, never in the budget)."""
    cfg.warehouse.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(cfg.duckdb_path))
    rows = []
    for i in range(14):
        d = date(2026, 6, 1) + timedelta(days=i)
        rows.append((d, "Usage", Decimal(30 if d.weekday() >= 5 else 100), "research", i))
        rows.append((d, "Usage", Decimal(999), "search", 100 + i))
    rows.append((date(2026, 6, 1), "Tax", Decimal(50), "research", 200))
    con.execute("CREATE TABLE allocations (ChargePeriodStart TIMESTAMPTZ, ChargeCategory VARCHAR, "
                "EffectiveCost DECIMAL(38,12), x_Team VARCHAR, x_LineId BIGINT, BillingCurrency VARCHAR DEFAULT 'USD', "
                "x_SourceName VARCHAR DEFAULT 'aws-main', x_BillingMonth VARCHAR DEFAULT '2026-06', ServiceName VARCHAR "
                "DEFAULT 'Amazon EC2', ProviderName VARCHAR DEFAULT 'AWS', SubAccountId VARCHAR DEFAULT '1', "
                "ResourceId VARCHAR DEFAULT 'i-1', x_ReportingEffectiveCost DECIMAL(38,12), "
                "x_ReportingCurrency VARCHAR, x_Project VARCHAR, x_Workload VARCHAR)")
    con.executemany("INSERT INTO allocations (ChargePeriodStart, ChargeCategory, EffectiveCost, x_Team, x_LineId) "
                    "VALUES (?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE line_items AS SELECT x_SourceName, x_BillingMonth, x_LineId, NULL::VARCHAR AS x_ModelId, "
                "NULL::JSON AS Tags FROM allocations")
    return con


def test_budget_status_by_hand(tmp_path):
    cfg, tax = project(tmp_path, GOOD)
    con = warehouse(cfg)
    [bp] = evaluate(con, cfg, load_guardrails(cfg, tax), tax.dimension_names)
    # actual 1120 + 50 tax = 1170 (>= 0.5 x 2000); forecast 1170 + 1320 = 2490 (>= 2000)
    assert (bp.period, bp.forecast.actual, bp.forecast.expected) == ("2026-06", Decimal("1170.00"), Decimal("2490.00"))
    assert [(c["of"], c["limit"], c["value"]) for c in bp.crossed] == [
        ("actual", Decimal("1000.00"), Decimal("1170.00")), ("forecast", Decimal("2000.00"), Decimal("2490.00"))]
    assert bp.status == "critical" and bp.is_open


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def http_receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook", Receiver.received
    server.shutdown()


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    handler = Handler()
    import socket

    with socket.socket() as sock:  # aiosmtpd checks readiness by connecting: it needs a real port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield ctl.port, handler.messages
    ctl.stop()


def test_alerts_arrive_once_over_http_and_smtp(tmp_path, http_receiver, smtp_server, monkeypatch):
    from apportion.guardrails.run import run_guardrails
    from apportion.guardrails.views import create_views

    url, received = http_receiver
    port, mails = smtp_server
    text = GOOD.replace("channels: [hook]", "channels: [hook, mail]") + (
        "  - name: research-quarter\n    scope: {team: research}\n    amount: 500\n    currency: USD\n"
        "    period: quarter\n    channels: [hook]\n")
    text = text.replace("channels:\n  hook:", f'channels:\n  mail: "mailto://127.0.0.1:{port}?from=apportion@example.com'
                        '&to=finance@example.com"\n  hook:')
    cfg, tax = project(tmp_path, text)
    con = warehouse(cfg)
    create_views(con, cfg, tax)
    con.close()
    monkeypatch.setenv("GUARDRAIL_HOOK_URL", url)
    first = run_guardrails(cfg, tax)
    # research-monthly: actual 0.5 and forecast 1.0 crossed -> 2 alerts x 2 channels; research-quarter: actual 1.0
    # (1170 >= 500) -> 1 alert x 1 channel. 3 webhook posts, 2 e-mails.
    assert (first["sent"], first["failed"]) == (5, 0)
    assert sorted(r["title"].split(":")[0] for r in received) == [
        "[critical] budget research-monthly 2026-06", "[critical] budget research-quarter 2026-Q2",
        "[warn] budget research-monthly 2026-06"]
    assert len(mails) == 2 and all(rcpt == ["finance@example.com"] for rcpt, _ in mails)
    assert any("forecast to spend 2490.00 USD of 2000" in body for _, body in mails)
    again = run_guardrails(cfg, tax)
    assert (again["sent"], again["already_sent"]) == (0, 5)
    assert len(received) == 3 and len(mails) == 2
    # a rebuild of the warehouse does not resend either: the state is outside the warehouse file
    con = duckdb.connect(str(cfg.duckdb_path))
    create_views(con, cfg, tax)
    rows = con.execute("SELECT alert_key, channel, status, attempts FROM alerts ORDER BY 1, 2").fetchall()
    con.close()
    assert len(rows) == 5 and {r[2] for r in rows} == {"sent"} and {r[3] for r in rows} == {1}
    assert run_guardrails(cfg, tax)["sent"] == 0 and len(received) == 3


def test_failed_send_is_recorded_and_retried(tmp_path, http_receiver, monkeypatch):
    from apportion.guardrails.run import run_guardrails
    from apportion.guardrails.views import create_views

    url, received = http_receiver
    cfg, tax = project(tmp_path, GOOD)
    con = warehouse(cfg)
    create_views(con, cfg, tax)
    con.close()
    monkeypatch.delenv("GUARDRAIL_HOOK_URL", raising=False)
    first = run_guardrails(cfg, tax)
    assert (first["sent"], first["failed"]) == (0, 2) and received == []
    state = [json.loads(x) for x in (cfg.warehouse / "guardrails" / "alerts.jsonl").read_text().splitlines()]
    assert {s["status"] for s in state} == {"failed"}
    assert all("GUARDRAIL_HOOK_URL is not set" in s["last_error"] for s in state)
    monkeypatch.setenv("GUARDRAIL_HOOK_URL", url)
    second = run_guardrails(cfg, tax)
    assert (second["sent"], second["failed"]) == (2, 0) and len(received) == 2
    state = [json.loads(x) for x in (cfg.warehouse / "guardrails" / "alerts.jsonl").read_text().splitlines()]
    assert {(s["status"], s["attempts"]) for s in state} == {("sent", 2)}


def test_forecast_band_from_the_series_track_record_covers_about_80_percent():
    """The band: 5th-95th percentiles of the series' own past errors at the same horizon (the residual formula
    covered 50-68 % of month totals in the backtest; bench/bench_forecast.py runs the full version)."""
    import calendar
    import random
    import sys

    from apportion.guardrails.forecast import _percentile

    # the percentile by hand: 11 values 0.90, 0.92 .. 1.10; the 5th at position 0.05 x 10 = 0.5, halfway between
    # 0.90 and 0.92 -> 0.91; the 95th at 9.5, halfway between 1.08 and 1.10 -> 1.09
    values = [Decimal("0.90") + Decimal("0.02") * i for i in range(11)]
    assert (_percentile(values, Decimal("0.05")), _percentile(values, Decimal("0.95"))) == (
        Decimal("0.91"), Decimal("1.09"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from bench_forecast import series

    rng = random.Random(11)
    covered = total = track = 0
    for _ in range(4):
        s = series(rng, date(2024, 1, 1), 31 * 15)
        for k in range(3, 15):  # from the 4th month on: a track record exists
            y, m = 2024 + (k // 12), k % 12 + 1
            p0, p1 = date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1]) + timedelta(days=1)
            truth = sum(v for d, v in s.items() if p0 <= d < p1)
            for day in (7, 14, 21):
                as_of = p0 + timedelta(days=day - 1)
                f = forecast_period({d: v for d, v in s.items() if d <= as_of}, p0, p1, as_of)
                covered += f.low <= truth <= f.high
                track += f.band == "track record"
                total += 1
    assert track == total == 144
    assert 0.72 <= covered / total <= 0.92, covered / total
