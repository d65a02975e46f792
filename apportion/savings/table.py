"""The `recommendations` and `savings_skipped` tables: one row per finding, one row per skipped scope.

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
from apportion.models.savings import SavingsSettings

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

COLUMN_DOCS = {
    "finding_id": "Stable id of the finding: kind and a hash of its scope.",
    "kind": "smaller_model | prompt_caching | shorter_prompts | idle_gpus | oversized_gpus | spot | commitments.",
    "x_BillingMonth": "The billing month the finding looks at (YYYY-MM).",
    "period_start": "First day of the data the finding is computed from.",
    "period_end": "Last day (inclusive) of the data the finding is computed from.",
    "days_observed": "Days with data in the period.",
    "team": "Team the spend is allocated to (allocations.x_Team); null for account-wide findings.",
    "project": "Project the spend is allocated to.",
    "workload": "Workload the spend is allocated to.",
    "scope_type": "What scope_id names: model, api_key, cluster, resource, account.",
    "scope_id": "The model, API key, cluster/GPU model, instance or billing account the finding is about.",
    "provider": "Provider of the spend (openai, anthropic, aws, slurm cluster, ...).",
    "current": "What runs today (model, instance type and pricing, GPU model).",
    "suggested": "What the advice moves it to (cheaper model, cache reads, spot, a commitment).",
    "evidence": "The numbers the estimate is computed from, as a JSON object of exact decimals.",
    "formula": "How estimated_monthly_saving follows from the evidence, in words and numbers.",
    "estimated_monthly_saving": "Estimated saving for the month in `currency` (DECIMAL, rounded to the cent).",
    "currency": "Currency of the saving (the line items' BillingCurrency).",
    "reporting_currency": "Configured reporting currency (null when none).",
    "fx_rate": "Rate currency -> reporting currency used (the month's rate of the line items).",
    "estimated_monthly_saving_reporting": "estimated_monthly_saving x fx_rate, in the reporting currency.",
    "confidence": "high | medium | low.",
    "confidence_reason": "Why that confidence: the volume behind it and the assumptions it rests on.",
}


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
    fx = "NULL::DECIMAL(38,12)"
    if reporting_currency:
        fx = ("(SELECT max(li.x_FxRate) FROM line_items AS li WHERE li.x_BillingMonth = f.x_BillingMonth "
              "AND li.BillingCurrency = f.currency AND li.x_FxRate IS NOT NULL)")
    con.execute(f"""
        CREATE OR REPLACE TABLE recommendations AS
        WITH f AS (SELECT * FROM sv_findings_arrow)
        SELECT finding_id, kind, x_BillingMonth, CAST(period_start AS DATE) AS period_start,
               CAST(period_end AS DATE) AS period_end, days_observed, team, project, workload, scope_type, scope_id,
               provider, current, suggested, CAST(evidence AS JSON) AS evidence, formula,
               CAST(saving AS DECIMAL(38, 2)) AS estimated_monthly_saving, currency,
               {lit(reporting_currency) if reporting_currency else 'NULL::VARCHAR'} AS reporting_currency,
               CAST({fx} AS DECIMAL(38, 12)) AS fx_rate,
               CAST(round(CAST(saving AS DECIMAL(38, 2)) * CAST({fx} AS DECIMAL(38, 12)), 2) AS DECIMAL(38, 2))
                   AS estimated_monthly_saving_reporting,
               confidence, confidence_reason
        FROM f
        ORDER BY x_BillingMonth, estimated_monthly_saving DESC, finding_id
    """)
    con.unregister("sv_findings_arrow")
    skipped = pa.Table.from_pylist(
        [{"kind": s.kind, "x_BillingMonth": s.month, "scope": s.scope, "reason": s.reason} for s in results.skipped],
        schema=pa.schema([("kind", pa.string()), ("x_BillingMonth", pa.string()), ("scope", pa.string()),
                          ("reason", pa.string())]))
    con.register("sv_skipped_arrow", skipped)
    con.execute("CREATE OR REPLACE TABLE savings_skipped AS SELECT DISTINCT * FROM sv_skipped_arrow "
                "ORDER BY x_BillingMonth, kind, scope")
    con.unregister("sv_skipped_arrow")
    con.execute("COMMENT ON TABLE recommendations IS " + lit(
        "Savings advice: one row per finding (smaller model, prompt caching, shorter prompts, idle and oversized "
        "GPUs, spot, commitments) with its scope, the evidence it is computed from, the formula, the estimated "
        "monthly saving and a confidence. See docs/savings.md."))
    for col, doc in COLUMN_DOCS.items():
        con.execute(f'COMMENT ON COLUMN recommendations."{col}" IS {lit(doc)}')
    con.execute("COMMENT ON TABLE savings_skipped IS " + lit(
        "Savings kinds not estimated for a scope, with the reason (missing price, unknown model, no utilisation): "
        "never estimated from a zero."))
    for col, doc in {"kind": "The kind that was skipped.", "x_BillingMonth": "Billing month.",
                     "scope": "The scope (model, cluster, instance, account) it was skipped for.",
                     "reason": "Why it was skipped."}.items():
        con.execute(f'COMMENT ON COLUMN savings_skipped."{col}" IS {lit(doc)}')
