"""`apportion savings [--month] [--json]`: the recommendations of a month from the published warehouse."""

from __future__ import annotations

import json
import sys

from apportion.models.config import load_config

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
TOP = 20


def load(cfg, month: str | None) -> tuple[str | None, list[dict], list[dict]]:
    """(month, findings, skipped) from the published warehouse; month None = the newest with findings or data."""
    from apportion.db import open_published

    con = open_published(cfg)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "recommendations" not in tables:
            raise LookupError("the warehouse has no recommendations table yet: run `apportion run` to rebuild it")
        if month is None:
            row = con.execute("SELECT max(x_BillingMonth) FROM line_items").fetchone()
            month = row[0] if row else None
        cur = con.execute("SELECT * EXCLUDE (evidence), CAST(evidence AS VARCHAR) AS evidence FROM recommendations "
                          "WHERE x_BillingMonth = ? ORDER BY estimated_monthly_saving DESC, finding_id", [month])
        names = [d[0] for d in cur.description]
        findings = [dict(zip(names, r)) for r in cur.fetchall()]
        cur = con.execute("SELECT kind, scope, reason FROM savings_skipped WHERE x_BillingMonth = ? "
                          "OR x_BillingMonth IS NULL ORDER BY ALL", [month])
        skipped = [{"kind": k, "scope": s, "reason": r} for k, s, r in cur.fetchall()]
        return month, findings, skipped
    finally:
        con.close()


def _jsonable(v):
    from datetime import date
    from decimal import Decimal

    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, date):
        return v.isoformat()
    return v


def summary_lines(findings: list[dict], top: int = 5) -> list[str]:
    """The top findings as one line each (used by `apportion savings` and the demo's summary)."""
    out = []
    for f in findings[:top]:
        who = "/".join(x for x in (f["team"], f["project"], f["workload"]) if x) or "all teams"
        out.append(f"{f['estimated_monthly_saving']:>14,} {f['currency']}  {f['kind']:<15} {who}: "
                   f"{f['scope_id']} -> {f['suggested']} ({f['confidence']})")
    return out


def cmd_savings(args) -> int:
    from apportion.models.config import check_month

    cfg = load_config(args.config)
    if args.month:
        check_month(args.month)
    if not cfg.duckdb_path.exists():
        print(f"error: no warehouse at {cfg.duckdb_path}: run `apportion run` first", file=sys.stderr)
        return EXIT_FAILED
    try:
        month, findings, skipped = load(cfg, args.month)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    total = sum((f["estimated_monthly_saving"] for f in findings), start=0)
    if args.json:
        doc = {"month": month, "total": str(total),
               "recommendations": [{k: (json.loads(v) if k == "evidence" else _jsonable(v)) for k, v in f.items()}
                                   for f in findings],
               "skipped": skipped}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"Savings advice for {month}: {len(findings)} findings, {total:,} estimated per month "
          f"(in each finding's currency; see `--json` for the evidence)")
    for line in summary_lines(findings, TOP):
        print(line)
    for f in findings[:TOP]:
        print(f"  {f['kind']} {f['scope_id']}: {f['formula']}")
    if skipped:
        print(f"Skipped ({len(skipped)}):")
        for s in skipped:
            print(f"  {s['kind']}: {s['scope']}: {s['reason']}")
    return EXIT_OK


def print_summary(summary: dict, console) -> None:
    """The run summary's savings lines: the top recommendations of the newest month, with dollar estimates."""
    import duckdb
    from rich.text import Text

    path = summary.get("warehouse")
    if not path:
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return
    try:
        # the month whose advice covers the most kinds (the newest of those): an open month may have one day
        cur = con.execute("""
            WITH m AS (SELECT x_BillingMonth FROM recommendations GROUP BY 1
                       ORDER BY count(DISTINCT kind) DESC, x_BillingMonth DESC LIMIT 1)
            SELECT * EXCLUDE (evidence) FROM recommendations
            WHERE x_BillingMonth = (SELECT x_BillingMonth FROM m)
            QUALIFY row_number() OVER (PARTITION BY kind ORDER BY estimated_monthly_saving DESC, finding_id) = 1
            ORDER BY estimated_monthly_saving DESC, finding_id""")
        names = [d[0] for d in cur.description]
        findings = [dict(zip(names, r)) for r in cur.fetchall()]
    except duckdb.Error:
        return
    finally:
        con.close()
    if not findings:
        return
    console.print(Text(f"Top savings recommendation of each kind for {findings[0]['x_BillingMonth']} "
                       f"(`apportion savings --month {findings[0]['x_BillingMonth']}` lists all, with the evidence):"))
    for line in summary_lines(findings, top=8):
        console.print(Text("  " + line))
