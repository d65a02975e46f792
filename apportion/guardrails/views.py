"""The guardrails' warehouse tables and views, built on the staged warehouse before its checks.

budget_status, budget_burndown, anomalies (a view: episodes joined with the dismissals file, so a dismissal
shows at once and survives rebuilds), anomaly_history, token_policy_violations and token_policy_checked (the
request logs read), alerts (a view over the alert state file: what was sent, when, what failed). Each one's
DDL is sql/guardrails/create_<name>.sql, its descriptions models/warehouse_docs.py (COMMENT ON).
"""

from __future__ import annotations

import json

from apportion.db import lit
from apportion.guardrails import anomalies as anomaly_mod
from apportion.guardrails.alerts import state_path
from apportion.guardrails.budgets import evaluate
from apportion.guardrails.config import load_guardrails
from apportion.guardrails.tables import document, fill
from apportion.models.config import ApportionConfig
from apportion.models.taxonomy import Taxonomy
from apportion.sql import sql_text


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
    for name, rows in (("budget_status", status_rows), ("budget_burndown", burn_rows)):
        fill(con, name, rows)
        document(con, name)
    n_anomalies = anomaly_mod.create_tables(con, cfg, tax, g)
    from apportion.guardrails import token_policies

    n_violations = token_policies.create_table(con, cfg, tax, g)
    _alerts_view(con, cfg)
    return {"budget_periods": len(status_rows), "anomalies": n_anomalies, "token_policy_violations": n_violations}


_R = __import__("decimal").Decimal("0.0001")


def _alerts_view(con, cfg: ApportionConfig) -> None:
    con.execute(sql_text("guardrails/create_alerts.sql").format(path=lit(str(state_path(cfg)))))
    document(con, "alerts")
