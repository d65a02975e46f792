"""The guardrails' warehouse tables and views, built on the staged warehouse before its checks.

budget_status, budget_burndown, anomalies (a view: episodes joined with the dismissals file, so a dismissal
shows at once and survives rebuilds), anomaly_history, token_policy_violations and token_policy_checked (the
request logs read), alerts (a view over the alert state file: what was sent, when, what failed). Documented with
COMMENT ON like the rest.
"""

from __future__ import annotations

import json

from apportion.db import lit
from apportion.guardrails import anomalies as anomaly_mod
from apportion.guardrails.alerts import STATE_COLUMNS, state_path
from apportion.guardrails.budgets import evaluate
from apportion.guardrails.config import load_guardrails
from apportion.guardrails.tables import table as _table
from apportion.models.config import ApportionConfig
from apportion.models.taxonomy import Taxonomy

MONEY = "DECIMAL(38,2)"

BUDGET_STATUS = [
    ("budget", "VARCHAR", "Budget name (the budgets file)."),
    ("period", "VARCHAR", "Period: YYYY-MM or YYYY-Qn."),
    ("period_start", "DATE", "First day of the period."),
    ("period_end", "DATE", "First day after the period."),
    ("as_of", "DATE", "Latest charge day with money in the ledger (the day the figures are as of)."),
    ("is_open", "BOOLEAN", "The period has days after as_of (its forecast is a forecast)."),
    ("scope", "JSON", "The budget's scope: taxonomy dimensions and/or provider, service, model, source."),
    ("currency", "VARCHAR", "Budget currency (the reporting currency when one is configured)."),
    ("amount", MONEY, "Budget amount for the period."),
    ("actual", MONEY, "EffectiveCost in scope from the period start to as_of (usage, fees, tax, credits)."),
    ("actual_ratio", "DECIMAL(18,4)", "actual / amount."),
    ("forecast", MONEY, "Period-end forecast: actual + weekday-seasonal forecast of the usage days left."),
    ("forecast_low", MONEY, "Lower end of the forecast's 80 % prediction interval."),
    ("forecast_high", MONEY, "Upper end of the forecast's 80 % prediction interval."),
    ("forecast_ratio", "DECIMAL(18,4)", "forecast / amount."),
    ("run_rate", MONEY, "Straight run-rate (actual / days elapsed x days in period), for comparison."),
    ("forecast_method", "VARCHAR", "weekday-seasonal | level | closed | no-history."),
    ("history_days", "INTEGER", "Days of history the forecast used."),
    ("status", "VARCHAR", "ok, or the highest severity of the thresholds crossed (info | warn | critical)."),
    ("crossed", "JSON", "Thresholds crossed: [{of: actual|forecast, at, severity, limit, value}]."),
    ("owners", "VARCHAR", "Budget owners."),
    ("channels", "VARCHAR", "Alert channel names or redacted URLs."),
]

BUDGET_BURNDOWN = [
    ("budget", "VARCHAR", "Budget name."),
    ("period", "VARCHAR", "Period."),
    ("day", "DATE", "Day."),
    ("kind", "VARCHAR", "actual (cumulative spend to date) or forecast (cumulative expected for the days left)."),
    ("cumulative", MONEY, "Cumulative spend in the period up to the day (actual or expected)."),
    ("low", MONEY, "Forecast days: lower end of the 80 % band of the cumulative spend."),
    ("high", MONEY, "Forecast days: upper end of the 80 % band."),
    ("amount", MONEY, "Budget amount (the line to stay under)."),
]


def create_views(con, cfg: ApportionConfig, tax: Taxonomy) -> dict:
    """Create the guardrail tables/views in the (staged) warehouse. Returns counts for the run summary."""
    dims = tax.dimension_names
    g = load_guardrails(cfg, tax)
    status_rows, burn_rows = [], []
    if g is not None:
        for bp in evaluate(con, cfg, g, dims):
            b, f = bp.budget, bp.forecast
            status_rows.append({
                "budget": b.name, "period": bp.period, "period_start": bp.start, "period_end": bp.end,
                "as_of": bp.as_of, "is_open": bp.is_open, "scope": json.dumps(b.scope, sort_keys=True),
                "currency": b.currency, "amount": str(b.amount), "actual": str(f.actual),
                "actual_ratio": str((f.actual / b.amount).quantize(_R)), "forecast": str(f.expected),
                "forecast_low": str(f.low), "forecast_high": str(f.high),
                "forecast_ratio": str((f.expected / b.amount).quantize(_R)), "run_rate": str(f.run_rate),
                "forecast_method": f.method, "history_days": f.history_days, "status": bp.status,
                "crossed": json.dumps([{k: str(v) for k, v in c.items()} for c in bp.crossed]),
                "owners": ", ".join(b.owners), "channels": ", ".join(n for n, _ in g.channel_urls(b.channels)),
            })
            for day, cum in bp.daily_actual:
                burn_rows.append({"budget": b.name, "period": bp.period, "day": day, "kind": "actual",
                                  "cumulative": str(cum), "low": None, "high": None, "amount": str(b.amount)})
            for day, cum, lo, hi in f.path:
                burn_rows.append({"budget": b.name, "period": bp.period, "day": day, "kind": "forecast",
                                  "cumulative": str(cum), "low": str(lo), "high": str(hi), "amount": str(b.amount)})
    _table(con, "budget_status", BUDGET_STATUS, status_rows,
           "Each budget per period: actual, period-end forecast with an 80 % band, run-rate, thresholds crossed.")
    _table(con, "budget_burndown", BUDGET_BURNDOWN, burn_rows,
           "Cumulative spend per budget, period and day, then the forecast path with its band (the burn-down chart).")
    n_anomalies = anomaly_mod.create_tables(con, cfg, tax, g)
    from apportion.guardrails import token_policies

    n_violations = token_policies.create_table(con, cfg, tax, g)
    _alerts_view(con, cfg)
    return {"budget_periods": len(status_rows), "anomalies": n_anomalies, "token_policy_violations": n_violations}


_R = __import__("decimal").Decimal("0.0001")


ALERT_DOCS = {
    "alert_key": "budget:<name>:<actual|forecast>:<ratio>:<period>, anomaly:<id> or "
                 "token_policy:<policy>:<rule>:<month>:<team or api key>: what is alerted once.",
    "kind": "budget | anomaly | token_policy.", "subject_ref": "Budget name, anomaly id or token policy name.",
    "period": "Budget period or month.",
    "severity": "info | warn | critical.", "title": "The message's title.",
    "channel": "Channel name (or redacted URL).", "status": "sent | failed (retried on the next run).",
    "attempts": "Send attempts.", "first_attempt_at": "First attempt (UTC).", "last_attempt_at": "Last attempt (UTC).",
    "sent_at": "When it was delivered.", "last_error": "Why the last attempt failed (no secrets).",
}


def _alerts_view(con, cfg: ApportionConfig) -> None:
    path = state_path(cfg)
    cols = "{" + ", ".join(f"{lit(c)}: {lit(t)}" for c, t in STATE_COLUMNS.items()) + "}"
    con.execute(f"CREATE OR REPLACE VIEW alerts AS SELECT * FROM read_json({lit(str(path))}, "
                f"format = 'newline_delimited', columns = {cols})")
    con.execute("COMMENT ON VIEW alerts IS 'Every alert per channel and its delivery (read from "
                "<warehouse>/guardrails/alerts.jsonl: always current, kept across rebuilds).'")
    for c, d in ALERT_DOCS.items():
        con.execute(f'COMMENT ON COLUMN alerts."{c}" IS {lit(d)}')
