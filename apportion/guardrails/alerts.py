"""Alerts that arrive once: each (budget, threshold, period), each anomaly and each (token policy, rule, month,
team), per channel, is sent once.

The state lives in `<warehouse>/guardrails/alerts.jsonl` (one line per alert and channel), outside the
rebuilt warehouse file, so rebuilds and re-runs do not resend. A failed send stays `failed` with its error
and the number of attempts and is retried on the next run. Channel URLs are apprise URLs; `${VAR}`
placeholders are filled from the environment at send time and never written to the state or the logs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

from apportion.guardrails.config import GuardrailsFile, expand, redact
from apportion.models.config import ApportionConfig


@dataclass
class Alert:
    key: str            # budget:<name>:<actual|forecast>:<ratio>:<period> | anomaly:<id> | token_policy:...
    kind: str           # budget | anomaly | token_policy
    subject_ref: str    # budget name or anomaly id
    period: str
    severity: str
    title: str
    body: str
    channels: list[tuple[str, str]] = field(default_factory=list)  # (name, URL with placeholders)


def guardrails_dir(cfg: ApportionConfig) -> Path:
    d = cfg.warehouse / "guardrails"
    d.mkdir(parents=True, exist_ok=True)
    return d


def state_path(cfg: ApportionConfig) -> Path:
    p = guardrails_dir(cfg) / "alerts.jsonl"
    if not p.exists():
        p.touch()
    return p


def load_state(cfg: ApportionConfig) -> dict[tuple[str, str], dict]:
    out = {}
    for line in state_path(cfg).read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["alert_key"], r["channel"])] = r
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def apprise_send(url: str, title: str, body: str) -> None:
    """Send one message through apprise; raise with the reason when it did not go out."""
    import apprise

    ap = apprise.Apprise()
    if not ap.add(expand(url)):
        raise RuntimeError(f"apprise cannot use {redact(url)}")
    if not ap.notify(title=title, body=body):
        raise RuntimeError(f"sending to {redact(url)} failed (see the apprise log)")


def deliver(cfg: ApportionConfig, alerts: list[Alert],
            send: Callable[[str, str, str], None] = apprise_send) -> dict:
    """Send each alert to each of its channels unless it was sent before; record every attempt."""
    state = load_state(cfg)
    now = datetime.now(timezone.utc).isoformat()
    counts = {"sent": 0, "failed": 0, "already_sent": 0}
    for a in alerts:
        for name, url in a.channels:
            rec = state.get((a.key, name))
            if rec and rec["status"] == "sent":
                counts["already_sent"] += 1
                continue
            rec = rec or {"alert_key": a.key, "kind": a.kind, "subject_ref": a.subject_ref, "period": a.period,
                          "severity": a.severity, "title": a.title, "channel": name, "attempts": 0,
                          "first_attempt_at": now, "sent_at": None}
            rec["attempts"] += 1
            rec["last_attempt_at"] = now
            try:
                send(url, a.title, a.body)
            except Exception as exc:  # noqa: BLE001 - recorded, retried next run
                rec.update(status="failed", last_error=str(exc)[:500])
                counts["failed"] += 1
            else:
                rec.update(status="sent", sent_at=now, last_error=None)
                counts["sent"] += 1
            state[(a.key, name)] = rec
    write_jsonl(state_path(cfg), [state[k] for k in sorted(state)])
    return counts


def budget_alerts(rows: list[dict], g: GuardrailsFile) -> list[Alert]:
    """One alert per (budget, threshold crossed, period) from budget_status rows."""
    budgets = {b.name: b for b in g.budgets}
    out = []
    for r in rows:
        b = budgets.get(r["budget"])
        if b is None:
            continue
        for c in json.loads(r["crossed"] or "[]"):
            what = "spent" if c["of"] == "actual" else "forecast to spend"
            title = (f"[{c['severity']}] budget {b.name} {r['period']}: {what} {c['value']} {r['currency']} "
                     f"of {r['amount']} ({c['of']} threshold {_pct(c['at'])})")
            body = (f"Budget {b.name} ({json.dumps(b.scope, sort_keys=True)}), period {r['period']} as of "
                    f"{r['as_of']}: actual {r['actual']} {r['currency']}, forecast {r['forecast']} "
                    f"(80 % band {r['forecast_low']} - {r['forecast_high']}), budget {r['amount']}. "
                    f"Owners: {', '.join(b.owners) or '-'}.")
            out.append(Alert(f"budget:{b.name}:{c['of']}:{c['at']}:{r['period']}", "budget", b.name, r["period"],
                             c["severity"], title, body, g.channel_urls(b.channels)))
    return out


def anomaly_alerts(rows: list[dict], g: GuardrailsFile) -> list[Alert]:
    """One alert per anomaly that is neither provisional nor dismissed."""
    out = []
    for r in rows:
        if r["provisional"] or r["dismissed"]:
            continue
        title = (f"[warn] spend anomaly {r['anomaly_id']}: {r['series']} {r['first_day']}..{r['last_day']} "
                 f"+{r['impact']} {r['currency']} ({_pct(r['impact_ratio'])} over expected)")
        body = (f"{r['series']}: actual {r['actual']} vs expected {r['expected']} {r['currency']} from "
                f"{r['first_day']} to {r['last_day']}. Top contributors: {r['top_contributors']}. "
                f"Dismiss with `apportion anomalies dismiss {r['anomaly_id']} --reason ...`.")
        out.append(Alert(f"anomaly:{r['anomaly_id']}", "anomaly", r["anomaly_id"], str(r["first_day"])[:7], "warn",
                         title, body, g.channel_urls(g.anomalies.channels)))
    return out


def policy_alerts(rows: list[dict], g: GuardrailsFile) -> list[Alert]:
    """One alert per (token policy, rule, month, team) from token_policy_violations rows (per API key for a
    quota per key): new violations later in the month do not resend it."""
    policies = {p.name: p for p in g.token_policies}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        p = policies.get(r["policy"])
        if p is None:
            continue
        per_key = r["rule"] == "monthly_tokens" and p.monthly_tokens is not None and p.monthly_tokens.per == "api_key"
        subject = (r["api_key"] if per_key else r["team"]) or "unattributed"
        groups.setdefault((p.name, r["rule"], r["month"], subject), []).append(r)
    out = []
    for (name, rule, month, subject), rs in sorted(groups.items()):
        p = policies[name]
        n = sum(int(r["requests"]) for r in rs)
        over = sum(int(r["tokens_over"]) for r in rs)
        excess = _usd(sum((Decimal(str(r["excess_cost"])) for r in rs), Decimal(0)))
        alt = [r["allowed_model_cost"] for r in rs]
        cost = _usd(sum((Decimal(str(r["cost"])) for r in rs), Decimal(0)))
        models = ", ".join(sorted({str(r["model"]) for r in rs}))
        title = (f"[{p.severity}] token policy {name} {month}: {n} request(s) over {rule} ({subject}), "
                 f"excess {excess} USD")
        body = (f"Token policy {name} ({rs[0]['limit_value']}), {month}, {subject}: {n} request(s) on {models}, "
                f"{over} tokens over, cost {cost} USD, cost of the excess {excess} USD"
                + (f", {_usd(sum(Decimal(str(a)) for a in alt))} USD on {rs[0]['allowed_model']}"
                   if rs[0]["allowed_model"] and None not in alt else "")
                + ". See the token_policy_violations view.")
        out.append(Alert(f"token_policy:{name}:{rule}:{month}:{subject}", "token_policy", name, month, p.severity,
                         title, body, g.channel_urls(p.channels)))
    return out


def _usd(x: Decimal) -> str:
    """Cents from a dollar up; below a dollar the exact figure (request costs are fractions of a cent)."""
    return f"{x.quantize(Decimal('0.01')):,}" if abs(x) >= 1 else f"{x.normalize():f}"


def _pct(x) -> str:
    try:
        return f"{float(x):.0%}"
    except (TypeError, ValueError):
        return str(x)
