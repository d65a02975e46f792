"""`apportion budgets`, `apportion anomalies` and `apportion policies` (tables, or --json);
`apportion anomalies dismiss ID --reason`."""

from __future__ import annotations

import json
import os
import sys


def add_parsers(sub) -> None:
    b = sub.add_parser("budgets", help="budget status per period: actual, forecast with its band, thresholds crossed")
    b.add_argument("--config", default="apportion.yaml", help="config file (default: ./apportion.yaml)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = sub.add_parser("anomalies", help="spend anomalies (one per multi-day episode); `dismiss ID --reason`")
    a.add_argument("--config", default="apportion.yaml", help="config file (default: ./apportion.yaml)")
    a.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a.add_argument("action", nargs="?", choices=["list", "dismiss"], default="list",
                   help="list the anomalies (default) or dismiss one")
    a.add_argument("anomaly_id", nargs="?", help="the anomaly to dismiss (its id from the list)")
    a.add_argument("--reason", default=None, help="why the anomaly is dismissed (required with dismiss)")
    p = sub.add_parser("policies", help="token policy violations: requests over their token limits, on models not "
                       "allowed, over a monthly quota; the cost of the excess")
    p.add_argument("--config", default="apportion.yaml", help="config file (default: ./apportion.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--month", default=None, help="only this billing month (YYYY-MM)")


def dispatch(args) -> int | None:
    if args.command == "budgets":
        return cmd_budgets(args)
    if args.command == "anomalies":
        return cmd_anomalies(args)
    if args.command == "policies":
        return cmd_policies(args)
    return None


def _setup(args):
    from apportion.models.config import load_config
    from apportion.models.taxonomy import load_taxonomy

    cfg = load_config(args.config)
    tax = load_taxonomy(cfg.taxonomy)
    from apportion.guardrails.config import load_guardrails

    load_guardrails(cfg, tax)  # a bad budgets file: rc 2 with file, line and key
    if not cfg.duckdb_path.exists():
        print(f"error: no warehouse at {cfg.duckdb_path}; run `apportion run` first", file=sys.stderr)
        return cfg, None
    return cfg, tax


def cmd_budgets(args) -> int:
    from apportion.guardrails.run import current

    cfg, tax = _setup(args)
    if tax is None:
        return 1
    budgets, _, _ = current(cfg)
    if args.json:
        print(json.dumps(budgets, indent=2, default=str))
        return 0
    print_budgets(budgets)
    return 0


def print_budgets(rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=Text("Budgets (actual and period-end forecast, 80 % band)"))
    for c in ("budget", "period", "amount", "actual", "forecast", "band", "status", "crossed"):
        t.add_column(c, justify="right" if c in ("amount", "actual", "forecast") else "left")
    for r in rows:
        crossed = ", ".join(f"{c['of']} {float(c['at']):.0%}" for c in json.loads(r["crossed"] or "[]"))
        t.add_row(*(Text(str(x)) for x in (
            r["budget"], r["period"] + ("" if r["is_open"] else " (closed)"), f"{r['amount']:,.2f} {r['currency']}",
            f"{r['actual']:,.2f} ({float(r['actual_ratio']):.0%})", f"{r['forecast']:,.2f} ({float(r['forecast_ratio']):.0%})",
            f"{r['forecast_low']:,.2f} - {r['forecast_high']:,.2f}", r["status"], crossed or "-")))
    console.print(t)


def print_anomalies(rows: list[dict], history: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=Text("Spend anomalies (one row per episode; fees excluded)"))
    for c in ("id", "series", "days", "expected", "actual", "impact", "state", "top contributor"):
        t.add_column(c, justify="right" if c in ("expected", "actual", "impact") else "left")
    for r in rows:
        top = json.loads(r["top_contributors"] or "{}")
        first = next(((k, v[0]["value"]) for k, v in top.items() if v), None)
        state = "dismissed" if r["dismissed"] else "provisional" if r["provisional"] else "alarmed"
        t.add_row(*(Text(str(x)) for x in (
            r["anomaly_id"], f"{r['series_kind']}: {r['series']}", f"{r['first_day']}..{r['last_day']}",
            f"{r['expected']:,.2f}", f"{r['actual']:,.2f}", f"{r['impact']:,.2f}", state,
            f"{first[0]} {first[1]}" if first else "-")))
    console.print(t)
    for h in history:
        if h["days_not_judged"]:
            console.print(Text(f"{h['month']}: {h['note']}"))


def cmd_anomalies(args) -> int:
    from apportion.guardrails.run import current

    if args.action == "dismiss":
        from apportion.guardrails.anomalies import dismiss
        from apportion.models.config import load_config

        if not args.anomaly_id or not args.reason:
            print("error: usage: apportion anomalies dismiss ID --reason TEXT", file=sys.stderr)
            return 2
        cfg = load_config(args.config)
        known = {r["anomaly_id"] for r in current(cfg)[1]} if cfg.duckdb_path.exists() else set()
        if args.anomaly_id not in known:
            print(f"error: no anomaly {args.anomaly_id!r} in the warehouse (see `apportion anomalies`)", file=sys.stderr)
            return 2
        rec = dismiss(cfg, args.anomaly_id, args.reason, os.environ.get("USER"))
        print(f"dismissed {rec['anomaly_id']}: {rec['reason']}")
        return 0
    cfg, tax = _setup(args)
    if tax is None:
        return 1
    _, anomalies, history = current(cfg)
    if args.json:
        print(json.dumps({"anomalies": anomalies, "history": history}, indent=2, default=str))
        return 0
    print_anomalies(anomalies, history)
    return 0


def cmd_policies(args) -> int:
    from apportion.guardrails.run import current_violations

    cfg, tax = _setup(args)
    if tax is None:
        return 1
    rows = [r for r in current_violations(cfg) if args.month is None or r["month"] == args.month]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print_policies(rows)
    return 0


def print_policies(rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=Text("Token policy violations (per-request logs; catalogue prices, USD)"))
    for c in ("policy", "rule", "month", "team", "api key", "model", "requests", "tokens over", "cost of the excess",
              "on allowed model"):
        # fold long names (no spaces to wrap at) instead of cutting them
        t.add_column(c, justify="right" if c in ("requests", "tokens over", "cost of the excess", "on allowed model")
                     else "left", overflow="fold")
    for r in rows:
        alt = r["allowed_model_cost"]
        t.add_row(*(Text(str(x)) for x in (
            r["policy"], r["rule"], r["month"], r["team"] or "-", r["api_key"] or "-", r["model"],
            f"{r['requests']:,}", f"{r['tokens_over']:,}", f"{r['excess_cost']:,.2f}",
            f"{alt:,.2f} ({r['allowed_model']})" if alt is not None else "-")))
    if not rows:
        t.add_row(*(Text(x) for x in ("no violation", "", "", "", "", "", "", "", "", "")))
    console.print(t)


def summary(cfg) -> dict | None:
    """The guardrails part of the run summary (None without a budgets file or a warehouse guardrail table)."""
    import duckdb

    from apportion.guardrails.run import current, current_violations

    if getattr(cfg, "budgets", None) is None or not cfg.duckdb_path.exists():
        return None
    try:
        budgets, anomalies, history = current(cfg)
        violations = current_violations(cfg)
    except duckdb.Error:
        return None
    state = []
    alerts_file = cfg.warehouse / "guardrails" / "alerts.jsonl"
    if alerts_file.exists():
        state = [json.loads(x) for x in alerts_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {"budgets": budgets, "anomalies": anomalies, "anomaly_history": history, "token_policy_violations": violations,
            "alerts": {"sent": sum(r["status"] == "sent" for r in state),
                       "failed": sum(r["status"] == "failed" for r in state)}}


def print_summary(g: dict | None, console) -> None:
    from rich.text import Text

    if not g:
        return
    print_budgets(g["budgets"], console)
    print_anomalies(g["anomalies"], g["anomaly_history"], console)
    if g.get("token_policy_violations") is not None:
        print_policies(g["token_policy_violations"], console)
    console.print(Text(f"alerts: {g['alerts']['sent']} sent, {g['alerts']['failed']} failed (retried next run); "
                       "see the alerts view"))
