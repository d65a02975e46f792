"""Closing and re-opening a month: `<warehouse>/closed/<month>/` holds the frozen finance pack (`pack/`), the
allocation pieces it was built from (`allocations/<source>/*.parquet`, hard links to the lake's immutable
version files, else copies) and `manifest.json` (closed_at, delivery ids and totals per source, the taxonomy
file's hash, the lake versions it came from: `prune_versions` keeps those). Every close and re-open is a line
of `<warehouse>/closed/closes.jsonl`. Raw deliveries and the lake are never touched: a closed month can
always be rebuilt from raw.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from apportion.db import list_literal, open_published
from apportion.models.config import ApportionConfig, check_month

MANIFEST = "manifest.json"
LOG = "closes.jsonl"


class CloseError(Exception):
    """A close or re-open was refused; the message says why and what to do."""


def closed_root(cfg: ApportionConfig) -> Path:
    return cfg.warehouse / "closed"


def closed_dir(cfg: ApportionConfig, month: str) -> Path:
    return closed_root(cfg) / month


def month_end(month: str) -> date:
    """The first day after the month (UTC): a month can be closed from this day on."""
    y, m = (int(x) for x in month.split("-"))
    return date(y + (m == 12), m % 12 + 1, 1)


def manifest(cfg: ApportionConfig, month: str) -> dict | None:
    path = closed_dir(cfg, month) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def closed_months(cfg: ApportionConfig) -> dict[str, dict]:
    """month -> manifest of every closed month."""
    root = closed_root(cfg)
    out = {}
    for path in sorted(root.glob(f"????-??/{MANIFEST}")) if root.is_dir() else []:
        out[path.parent.name] = json.loads(path.read_text())
    return out


def closed_piece_files(cfg: ApportionConfig, month: str) -> list[Path]:
    return sorted((closed_dir(cfg, month) / "allocations").glob("*/*.parquet"))


def log_entries(cfg: ApportionConfig) -> list[dict]:
    path = closed_root(cfg) / LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _log(cfg: ApportionConfig, entry: dict) -> None:
    closed_root(cfg).mkdir(parents=True, exist_ok=True)
    with open(closed_root(cfg) / LOG, "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a container is not an error
        return "unknown"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def close_month(cfg: ApportionConfig, month: str, now: datetime | None = None, auto: bool = False) -> dict:
    """Freeze `month` as it stands in the published warehouse. Refused (CloseError) before the month has
    ended, for a month the warehouse does not hold, and for a month already closed."""
    from apportion.steps.exports import ExportError, check_month_built, export_month

    month = check_month(month)
    now = now or datetime.now(timezone.utc)
    end = month_end(month)
    if now.date() < end:
        raise CloseError(f"month {month} has not ended: it can be closed from {end.isoformat()} (UTC) on, "
                         f"today is {now.date().isoformat()}")
    try:
        check_month_built(cfg, month)
    except ExportError as exc:
        raise CloseError(f"cannot close {month}: {exc}") from None
    existing = manifest(cfg, month)
    if existing:
        raise CloseError(f"month {month} is already closed (at {existing['closed_at']}); to close it again, "
                         f"re-open it first: `apportion close --month {month} --reopen --reason \"...\"`")
    root = closed_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{month}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        versions = _freeze_pieces(cfg, month, tmp / "allocations")
        export_month(cfg, month, tmp / "pack")
        info = {
            "month": month,
            "closed_at": now.isoformat(timespec="seconds"),
            "closed_by": _user(),
            "auto": auto,
            "taxonomy": {"path": str(cfg.taxonomy), "sha256": file_sha256(cfg.taxonomy)},
            "sources": _source_totals(tmp / "allocations"),
            "lake_versions": sorted(str(v) for v in versions),
            "pack_files": {p.name: file_sha256(p) for p in sorted((tmp / "pack").iterdir())},
        }
        (tmp / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        tmp.rename(closed_dir(cfg, month))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(cfg, {"action": "close", "month": month, "at": info["closed_at"], "by": info["closed_by"], "auto": auto,
               "taxonomy_sha256": info["taxonomy"]["sha256"],
               "totals": {s: v["totals"] for s, v in info["sources"].items()}})
    return info


def reopen_month(cfg: ApportionConfig, month: str, reason: str | None, now: datetime | None = None) -> dict:
    """Re-open a closed month (its closed version is kept under closed/.reopened/ for the record)."""
    month = check_month(month)
    if not reason or not reason.strip():
        raise CloseError(f"re-opening {month} needs a reason: `apportion close --month {month} --reopen "
                         "--reason \"...\"` (it is recorded in closed/closes.jsonl)")
    info = manifest(cfg, month)
    if info is None:
        raise CloseError(f"month {month} is not closed (closed months: {', '.join(closed_months(cfg)) or 'none'})")
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    dest = closed_root(cfg) / ".reopened" / f"{month}-{stamp}-{uuid.uuid4().hex[:6]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    closed_dir(cfg, month).rename(dest)
    entry = {"action": "reopen", "month": month, "at": now.isoformat(timespec="seconds"), "by": _user(),
             "reason": reason.strip(), "closed_at": info["closed_at"], "kept_at": str(dest)}
    _log(cfg, entry)
    return entry


def due_for_close(cfg: ApportionConfig, now: datetime | None = None) -> list[str]:
    """Months the nightly run closes by itself (`close_after_days`): in the warehouse, ended at least N days
    ago, not closed, and never re-opened (a re-opened month is closed again by hand)."""
    if cfg.close_after_days is None or not cfg.duckdb_path.exists():
        return []
    from apportion.steps.exports import warehouse_months

    now = now or datetime.now(timezone.utc)
    reopened = {e["month"] for e in log_entries(cfg) if e["action"] == "reopen"}
    closed = closed_months(cfg)
    built = sorted({m for ms in warehouse_months(cfg).values() for m in ms})
    return [m for m in built if m not in closed and m not in reopened
            and now.date() >= month_end(m) + timedelta(days=cfg.close_after_days)]


def _freeze_pieces(cfg: ApportionConfig, month: str, dest: Path) -> set[Path]:
    """Link (else copy) the allocation files the published warehouse reads for `month`; returns their versions."""
    con = open_published(cfg)
    try:
        paths = [Path(p) for (p,) in con.execute(
            "SELECT path FROM lake_files WHERE lake_table = 'allocations' AND path LIKE ?",
            [f"%/x_BillingMonth={month}/%"]).fetchall()]
    finally:
        con.close()
    versions = set()
    for path in paths:
        source = next(part.split("=", 1)[1] for part in path.parts if part.startswith("x_SourceName="))
        target = dest / source / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)  # the lake's version files are never rewritten: a hard link is a frozen copy
        except OSError:
            shutil.copy2(path, target)
        versions.add(path.parent.resolve())
    return versions


def _source_totals(pieces: Path) -> dict:
    import duckdb

    from apportion.db import bounded

    files = sorted(pieces.glob("*/*.parquet"))
    if not files:
        return {}
    con = duckdb.connect(config=bounded())
    try:
        rows = con.execute(
            f"SELECT x_SourceName, BillingCurrency, sum(BilledCost)::VARCHAR, sum(EffectiveCost)::VARCHAR, count(*), "
            f"count(DISTINCT x_LineId), list(DISTINCT x_DeliveryId ORDER BY x_DeliveryId) "
            f"FROM read_parquet({list_literal(files)}, union_by_name = true) GROUP BY ALL ORDER BY 1, 2").fetchall()
    finally:
        con.close()
    out: dict = {}
    for source, currency, billed, effective, pieces_n, lines, deliveries in rows:
        s = out.setdefault(source, {"delivery_ids": [], "totals": []})
        s["delivery_ids"] = sorted({*s["delivery_ids"], *(d for d in deliveries if d)})
        s["totals"].append({"currency": currency, "billed_cost": _plain(billed), "effective_cost": _plain(effective),
                            "pieces": pieces_n, "lines": lines})
    return out


def _plain(amount: str) -> str:
    return amount.rstrip("0").rstrip(".") if "." in amount else amount


def closed_pack_problems(cfg: ApportionConfig) -> list[str]:
    """Why a closed month does not tie out (empty when all do): its pack's control totals tie out and equal,
    per source and currency, the frozen pieces' totals in the manifest; its pack files are unchanged; and in
    the published warehouse closed + Σ restatement deltas = current (restatement_tie_out)."""
    import csv
    from decimal import Decimal

    problems = []
    for month, info in closed_months(cfg).items():
        pack = closed_dir(cfg, month) / "pack"
        for name, digest in info.get("pack_files", {}).items():
            if not (pack / name).is_file() or file_sha256(pack / name) != digest:
                problems.append(f"{month}: closed pack file {name} changed or is missing")
        with open(pack / "control_totals.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        problems += [f"{month}: {r['source']} invoice {r.get('invoice_id') or '-'} does not tie out in the closed pack"
                     for r in rows if r["ties_out"] != "true"]
        got: dict[tuple[str, str], Decimal] = {}
        for r in rows:
            key = (r["source"], r["billing_currency"])
            got[key] = got.get(key, Decimal(0)) + Decimal(r["allocated_billed_cost"])
        want = {(s, t["currency"]): Decimal(t["billed_cost"]) for s, v in info["sources"].items() for t in v["totals"]}
        problems += [f"{month}: {s} {c}: closed pack allocated {got.get((s, c), 0)} but frozen pieces {w}"
                     for (s, c), w in want.items() if got.get((s, c), Decimal(0)) != w]
    if cfg.duckdb_path.exists() and problems == []:
        con = open_published(cfg)
        try:
            if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'restatement_tie_out'").fetchone()[0]:
                problems += [f"{m}: {s} {c}: closed {cb} + deltas {db} != current {ab}" for m, s, c, cb, db, ab in
                             con.execute("SELECT billing_month, source, billing_currency, closed_billed_cost, "
                                         "delta_billed_cost, current_billed_cost FROM restatement_tie_out "
                                         "WHERE NOT ties_out").fetchall()]
        finally:
            con.close()
    return problems
