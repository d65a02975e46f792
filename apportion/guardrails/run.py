"""The nightly guardrails step: read the published warehouse, send each alert once, summarise."""

from __future__ import annotations

import json
from decimal import Decimal

from apportion.db import open_published
from apportion.guardrails.alerts import (
    anomaly_alerts,
    apprise_send,
    budget_alerts,
    deliver,
    load_state,
    policy_alerts,
)
from apportion.guardrails.config import load_guardrails
from apportion.models.config import ApportionConfig
from apportion.models.taxonomy import Taxonomy


def _rows(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def current(cfg: ApportionConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(budget_status rows, anomalies rows, anomaly_history rows) of the published warehouse."""
    con = open_published(cfg)
    try:
        budgets = _rows(con, "SELECT * FROM budget_status ORDER BY budget, period_start")
        anomalies = _rows(con, "SELECT * FROM anomalies ORDER BY first_day, series_kind, series")
        history = _rows(con, "SELECT * FROM anomaly_history ORDER BY month")
    finally:
        con.close()
    return budgets, anomalies, history


def current_violations(cfg: ApportionConfig) -> list[dict]:
    """token_policy_violations rows of the published warehouse."""
    con = open_published(cfg)
    try:
        return _rows(con, "SELECT * FROM token_policy_violations ORDER BY month, policy, rule, team, api_key, model")
    finally:
        con.close()


def run_guardrails(cfg: ApportionConfig, tax: Taxonomy, send=apprise_send) -> dict:
    g = load_guardrails(cfg, tax)
    budgets, anomalies, _ = current(cfg)
    if g is None:
        return {"sent": 0, "failed": 0, "already_sent": 0, "over_budget": [], "new_anomalies": [],
                "new_policy_violations": []}
    violations = current_violations(cfg)
    before = {k for k, r in load_state(cfg).items() if r["status"] == "sent"}
    alerts = budget_alerts(budgets, g) + anomaly_alerts(anomalies, g) + policy_alerts(violations, g)
    counts = deliver(cfg, alerts, send)

    def new(kind: str) -> list[str]:
        return sorted({a.key.split(":", 1)[1] if kind == "token_policy" else a.subject_ref for a in alerts
                       if a.kind == kind and not any((a.key, n) in before for n, _ in a.channels)})

    over = [f"{r['budget']} {r['period']}: {r['actual']} of {r['amount']} {r['currency']}" for r in budgets
            if any(c["of"] == "actual" and Decimal(c["at"]) >= 1 for c in json.loads(r["crossed"] or "[]"))]
    return {**counts, "over_budget": over, "new_anomalies": new("anomaly"),
            "new_policy_violations": new("token_policy")}
