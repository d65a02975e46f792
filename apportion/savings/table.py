"""The `recommendations` and `savings_skipped` tables: one row per finding, one row per skipped scope
(sql/savings/create_<table>.sql; descriptions in models/warehouse_docs.py).

Each kind module returns `Finding`s and `Skip`s; `build` writes them. A finding carries the numbers it
is computed from (`evidence`, a JSON object of exact decimals as strings) and the formula in words, so
`estimated_monthly_saving` can be recomputed by hand from its own row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pyarrow as pa

from apportion.db import lit
from apportion.guardrails.tables import document
from apportion.models.savings import SavingsSettings
from apportion.sql import sql_text

KINDS = ("smaller_model", "prompt_caching", "shorter_prompts", "idle_gpus", "oversized_gpus", "spot", "commitments")
CENT = Decimal("0.01")
MONEY_PLACES = Decimal("0.000001")


@dataclass
class Finding:
    kind: str
    month: str
    team: str | None
    project: str | None
    workload: str | None
    scope_type: str            # model | api_key | cluster | resource | account
    scope_id: str
    current: str | None        # what runs today (model, instance type, pricing)
    suggested: str | None      # what the advice moves it to
    evidence: dict[str, Any]
    formula: str
    saving: Decimal            # in `currency`, for the period
    currency: str
    confidence: str            # high | medium | low
    confidence_reason: str
    provider: str | None = None
    days_observed: int | None = None
    period_start: str | None = None
    period_end: str | None = None

    def finding_id(self) -> str:
        h = hashlib.sha1("\0".join(str(x) for x in (self.kind, self.month, self.team, self.project, self.workload,
                                                   self.scope_type, self.scope_id, self.current, self.suggested))
                         .encode()).hexdigest()[:12]
        return f"{self.kind}:{h}"


@dataclass
class Skip:
    kind: str
    month: str | None
    scope: str
    reason: str


@dataclass
class Results:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def confidence(settings: SavingsSettings, *, requests: int | None = None, gpu_hours: Decimal | None = None,
               days: int | None = None, basis: str, cap: str | None = None) -> tuple[str, str]:
    """(level, reason): volume decides the level; few days of data or an assumption (`cap`) lower it."""
    rules = settings.confidence
    order = ["low", "medium", "high"]
    if requests is not None:
        level = "high" if requests >= rules.high_min_requests else "medium" if requests >= rules.medium_min_requests \
            else "low"
        why = [f"{requests} requests"]
    elif gpu_hours is not None:
        level = "high" if gpu_hours >= rules.high_min_gpu_hours else "medium"
        why = [f"{_plain(gpu_hours)} GPU-hours"]
    else:
        level, why = "high", []
    if days is not None and days < rules.min_days and level == "high":
        level = "medium"
        why.append(f"only {days} days of data")
    if cap is not None and order.index(level) > order.index(cap):
        level = cap
    why.append(basis)
    return level, "; ".join(why)


def _plain(d: Any) -> str:
    return format(d.normalize(), "f") if isinstance(d, Decimal) else str(d)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


SCHEMA = pa.schema([
    ("finding_id", pa.string()), ("kind", pa.string()), ("x_BillingMonth", pa.string()),
    ("period_start", pa.string()), ("period_end", pa.string()), ("days_observed", pa.int64()),
    ("team", pa.string()), ("project", pa.string()), ("workload", pa.string()),
    ("scope_type", pa.string()), ("scope_id", pa.string()), ("provider", pa.string()),
    ("current", pa.string()), ("suggested", pa.string()), ("evidence", pa.string()), ("formula", pa.string()),
    ("saving", pa.string()), ("currency", pa.string()), ("confidence", pa.string()),
    ("confidence_reason", pa.string()),
])

def write(con, results: Results, reporting_currency: str | None) -> None:
    rows = []
    seen: set[str] = set()
    for f in results.findings:
        fid = f.finding_id()
        while fid in seen:
            fid += "x"
        seen.add(fid)
        rows.append({
            "finding_id": fid, "kind": f.kind, "x_BillingMonth": f.month, "period_start": f.period_start,
            "period_end": f.period_end, "days_observed": f.days_observed, "team": f.team, "project": f.project,
            "workload": f.workload, "scope_type": f.scope_type, "scope_id": f.scope_id, "provider": f.provider,
            "current": f.current, "suggested": f.suggested,
            "evidence": json.dumps(_jsonable(f.evidence), ensure_ascii=False), "formula": f.formula,
            "saving": str(f.saving.quantize(CENT, rounding=ROUND_HALF_EVEN)), "currency": f.currency,
            "confidence": f.confidence, "confidence_reason": f.confidence_reason,
        })
    con.register("sv_findings_arrow", pa.Table.from_pylist(rows, schema=SCHEMA))
    con.execute(sql_text("savings/create_recommendations.sql").format(
        reporting_currency=lit(reporting_currency) if reporting_currency else "NULL::VARCHAR"))
    con.unregister("sv_findings_arrow")
    skipped = pa.Table.from_pylist(
        [{"kind": s.kind, "x_BillingMonth": s.month, "scope": s.scope, "reason": s.reason} for s in results.skipped],
        schema=pa.schema([("kind", pa.string()), ("x_BillingMonth", pa.string()), ("scope", pa.string()),
                          ("reason", pa.string())]))
    con.register("sv_skipped_arrow", skipped)
    con.execute(sql_text("savings/create_savings_skipped.sql"))
    con.unregister("sv_skipped_arrow")
    for name in ("recommendations", "savings_skipped"):
        document(con, name)  # descriptions: models/warehouse_docs.py
