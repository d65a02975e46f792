"""`apportion close --month YYYY-MM [--reopen --reason "..."]`, `apportion export --as-of`, and the run
summary's restatement lines."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(sub, config_help: str, default_config: str) -> None:
    close = sub.add_parser("close", help="close a month (freeze its finance pack and allocation) or re-open it")
    close.add_argument("--config", default=default_config, help=config_help)
    close.add_argument("--month", required=True, help="billing month YYYY-MM (or `previous`: the month before the "
                                                      "current one, UTC); it must have ended and be in the warehouse")
    close.add_argument("--if-open", action="store_true", help="no error when the month is already closed")
    close.add_argument("--reopen", action="store_true", help="re-open a closed month (needs --reason)")
    close.add_argument("--reason", default=None, help="why the month is re-opened (recorded in closed/closes.jsonl)")


def cmd_close(args) -> int:
    from apportion.close.store import CloseError, close_month, closed_dir, manifest, reopen_month
    from apportion.models.config import load_config

    cfg = load_config(args.config)
    if args.month == "previous":
        args.month = previous_month()
    try:
        if args.reopen:
            entry = reopen_month(cfg, args.month, args.reason)
            print(f"{args.month} re-opened ({entry['reason']}); its closed version is kept at {entry['kept_at']}")
            return EXIT_OK
        if args.reason:
            print("error: --reason goes with --reopen", file=sys.stderr)
            return EXIT_FAILED
        existing = manifest(cfg, args.month) if args.if_open else None
        if existing:
            print(f"{args.month} is already closed (at {existing['closed_at']}): {closed_dir(cfg, args.month)}")
            return EXIT_OK
        info = close_month(cfg, args.month)
    except CloseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.month} closed at {info['closed_at']}: {closed_dir(cfg, args.month)}")
    for source, s in info["sources"].items():
        for t in s["totals"]:
            print(f"  {source}: billed {t['billed_cost']} {t['currency']}, effective {t['effective_cost']} "
                  f"(deliveries {', '.join(s['delivery_ids']) or '-'})")
    print("later restatements show as deltas in the `restatements` table and restatement_deltas.csv after the "
          "next `apportion run`")
    return EXIT_OK


def previous_month() -> str:
    from datetime import datetime, timezone

    today = datetime.now(timezone.utc)
    return f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"


def demo_late_credit(cfg) -> int:
    """`apportion demo --late-credit`: AWS re-delivers the previous month with a late credit."""
    from pathlib import Path

    from apportion.demo.generators.aws_cur import write_late_credit

    source = next(s for s in cfg.sources if s.kind == "aws_cur")
    month = previous_month()
    dest = write_late_credit(Path(source.uri).parents[1], month)
    print(f"late credit of -150.00 USD re-delivered for {month} ({source.name}): {dest}")
    return EXIT_OK


def export_as_of(cfg, month: str, as_of: str, out) -> int:
    from apportion.close.exports import AsOfError, copy_pack, pack_as_of, parse_as_of

    try:
        src = pack_as_of(cfg, month, parse_as_of(as_of))
    except AsOfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"the pack of {month} published at {src.name} (newest at or before {as_of})", file=sys.stderr)
    for p in sorted(copy_pack(src, out).iterdir()):
        print(p)
    return EXIT_OK


def summary(cfg, months: list[str]) -> list[dict]:
    """Per closed month: source, currency, closed total, Σ delta, current total, and the reasons."""
    from apportion.db import open_published

    if not cfg.duckdb_path.exists():
        return []
    con = open_published(cfg)
    try:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'restatement_tie_out'").fetchone()[0]:
            return []
        rows = con.execute(
            "SELECT t.billing_month, t.source, t.billing_currency, t.closed_billed_cost, t.delta_billed_cost, "
            "t.current_billed_cost, t.ties_out, (SELECT string_agg(DISTINCT r.reason, ', ' ORDER BY r.reason) "
            "FROM restatements r WHERE r.billing_month = t.billing_month AND r.source = t.source "
            "AND r.billing_currency = t.billing_currency) FROM restatement_tie_out t "
            "WHERE t.delta_billed_cost <> 0 OR t.delta_effective_cost <> 0 ORDER BY 1, 2, 3").fetchall()
    finally:
        con.close()
    keys = ("month", "source", "currency", "closed_billed_cost", "delta_billed_cost", "current_billed_cost",
            "ties_out", "reasons")
    return [dict(zip(keys, r)) for r in rows]


def print_summary(rows: list[dict], console) -> None:
    if not rows:
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text("Restatements since close (BilledCost; restatements table, restatement_deltas.csv)"))
    for c in ("month", "source", "currency", "closed", "delta", "current", "ties", "reasons"):
        t.add_column(c, justify="right" if c in ("closed", "delta", "current") else "left")
    for r in rows:
        t.add_row(*(Text(str(c)) for c in (
            r["month"], r["source"], r["currency"], f"{r['closed_billed_cost']:,.2f}", f"{r['delta_billed_cost']:+,.2f}",
            f"{r['current_billed_cost']:,.2f}", "yes" if r["ties_out"] else "NO", r["reasons"] or "")))
    console.print(t)
