"""Smaller model: simple requests on a premium model, priced at the configured cheaper model.

Per request (the per-request logs of litellm and otel_genai sources, re-read from the delivery the current line
items were built from): a request to a tier's `premium` model whose input tokens (uncached + cache reads +
cache writes) and output tokens are at or under `savings.simple_requests` is "simple". Each request is
attributed like the line item it was summed into (same source file and first row: the allocation of that
line). Per workload x key: saving = sum over token types of tokens x (premium price - cheaper price) / 1M,
prices from the catalogue with the source's overrides.

Never suggests a model a workload's token policy forbids: `policy_problem` asks apportion.guardrails when it
exists (see docs/savings.md); a forbidden suggestion is skipped with the policy's reason.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from apportion.connectors.base import SourceError
from apportion.connectors.llm import month_bounds
from apportion.models.prices import MILLION
from apportion.savings._llm import INPUT_TYPES, Prices
from apportion.savings.table import Finding, Results, Skip, confidence

PER_REQUEST_KINDS = ("litellm", "otel_genai")


def policy_problem(cfg, team, project, workload, provider: str, model: str) -> str | None:
    """Why the workload's token policy forbids `model`, or None. Hook for issue 11's policies: when
    apportion.guardrails provides `model_allowed(cfg, team=, project=, workload=, provider=, model=)`
    returning (allowed, reason), it decides; until then every model is allowed."""
    try:
        from apportion import guardrails  # noqa: F401  (issue 11; absent in trees without it)
        check = getattr(guardrails, "model_allowed", None)
    except ImportError:
        return None
    if check is None:
        return None
    allowed, reason = check(cfg, team=team, project=project, workload=workload, provider=provider, model=model)
    return None if allowed else (reason or "forbidden by the workload's token policy")


def requests_of(cfg, source, month: str):
    """Per-request UsageRecords of the delivery behind the month's current line items, with each record's
    group row (the x_SourceRow of the line item it was summed into)."""
    from apportion.connectors.registry import connector_for
    from apportion.steps.land import current_delivery

    try:
        delivery = current_delivery(cfg, source, month, "CURRENT")
    except SourceError:
        return []
    conn = connector_for(source)
    start, end = month_bounds(month)
    recs = []
    for key, path in sorted(delivery.files):
        if source.kind == "litellm":
            it = (conn._record(key, n, row) for n, row in conn._read_csv(key, path))
        else:
            it = conn._spans(key, path)
        for rec in it:
            if rec.quarantine or rec.day is None or not (start <= rec.day < end):
                continue
            recs.append(rec)
    # the connector's Aggregator groups by UsageRecord.key(); a group's row is its first member's
    first_row: dict[tuple, int] = {}
    for rec in recs:
        k = rec.key()
        first_row[k] = min(first_row.get(k, rec.row), rec.row)
    return [(rec, first_row[rec.key()]) for rec in recs]


def find(con, cfg, settings, results: Results) -> None:
    if not settings.model_tiers:
        return
    tiers = {(t.provider.lower(), t.premium): t for t in settings.model_tiers}
    prices = Prices(cfg)
    months = [r[0] for r in con.execute(
        "SELECT DISTINCT x_BillingMonth FROM line_items WHERE x_SourceKind IN ('litellm', 'otel_genai') ORDER BY 1"
    ).fetchall()]
    limits = settings.simple_requests
    for source in cfg.sources:
        if source.kind not in PER_REQUEST_KINDS:
            continue
        book = prices.book(source.name)
        for month in months:
            alloc = defaultdict(list)
            for file, row, team, project, workload, ratio in con.execute(
                    "SELECT DISTINCT x_SourceFile, x_SourceRow, sv_team, sv_project, sv_workload, sv_ratio FROM sv_pieces "
                    "WHERE x_SourceName = ? AND x_BillingMonth = ? AND x_CostBasis = 'usage'",
                    [source.name, month]).fetchall():
                alloc[(file, row)].append((team, project, workload, ratio))
            scopes: dict[tuple, dict] = {}
            for rec, group_row in requests_of(cfg, source, month):
                m = book.normalise(rec.provider, rec.model_ref)
                tier = tiers.get((m.provider, m.model_id))
                if tier is None:
                    continue
                inp = sum(rec.tokens.get(t, 0) for t in INPUT_TYPES)
                out = rec.tokens.get("output", 0)
                for team, project, workload, ratio in alloc.get((rec.file, group_row), [(None, None, None, Decimal(1))]):
                    key = (m.provider, m.model_id, rec.model_ref, team, project, workload, rec.resource_id)
                    s = scopes.setdefault(key, {"tokens": defaultdict(Decimal), "simple": Decimal(0),
                                                "all": Decimal(0), "days": set(), "tier": tier})
                    s["all"] += ratio
                    s["days"].add(rec.day)
                    if inp <= limits.max_input_tokens and out <= limits.max_output_tokens:
                        s["simple"] += ratio
                        for t, n in rec.tokens.items():
                            if n:
                                s["tokens"][t] += Decimal(n) * ratio
            for (provider, model_id, model_ref, team, project, workload, resource), s in sorted(
                    scopes.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
                _finding(cfg, settings, prices, results, source.name, month, provider, model_id, model_ref, team,
                         project, workload, resource, s)


def _finding(cfg, settings, prices, results, source, month, provider, model_id, model_ref, team, project, workload,
             resource, s) -> None:
    tier = s["tier"]
    label = f"{source}: {provider}/{model_id} -> {tier.cheaper}" + (f" key {resource}" if resource else "") + \
        f" ({team}/{project}/{workload})"
    if s["simple"] <= 0:
        return
    day = max(s["days"])
    problem = prices.known(source, provider, tier.cheaper, day)
    if problem:
        results.skipped.append(Skip("smaller_model", month, label,
                                    f"model tier names a model the catalogue cannot price ({tier.cheaper}): {problem}"))
        return
    forbidden = policy_problem(cfg, team, project, workload, provider, tier.cheaper)
    if forbidden:
        results.skipped.append(Skip("smaller_model", month, label, f"policy: {forbidden}"))
        return
    evidence: dict = {"simple_requests": s["simple"], "requests": s["all"],
                      "max_input_tokens": settings.simple_requests.max_input_tokens,
                      "max_output_tokens": settings.simple_requests.max_output_tokens}
    saving = Decimal(0)
    parts = []
    for t in sorted(s["tokens"]):
        n = s["tokens"][t]
        p_prem, why_p = prices.per_million(source, provider, model_ref, t, day)
        p_cheap, why_c = prices.per_million(source, provider, tier.cheaper, t, day)
        if p_prem is None or p_cheap is None:
            results.skipped.append(Skip("smaller_model", month, label, f"no {t} price: {why_p if p_prem is None else why_c}"))
            return
        evidence[f"{t}_tokens"] = n
        evidence[f"{t}_price_per_1m"] = p_prem
        evidence[f"{t}_cheaper_price_per_1m"] = p_cheap
        saving += n * (p_prem - p_cheap) / MILLION
        parts.append(f"{n.normalize():f} {t} x ({p_prem.normalize():f} - {p_cheap.normalize():f})")
    level, reason = confidence(settings, requests=int(s["simple"]), days=len(s["days"]), cap="medium",
                               basis="simple = under the configured token limits; whether the cheaper model answers "
                                     "them as well is not knowable from tokens")
    results.findings.append(Finding(
        kind="smaller_model", month=month, team=team, project=project, workload=workload,
        scope_type="api_key" if resource else "model", scope_id=resource or model_id, provider=provider,
        current=model_id, suggested=tier.cheaper, evidence=evidence,
        formula="(" + " + ".join(parts) + ") / 1M", saving=saving, currency="USD", confidence=level,
        confidence_reason=reason, days_observed=len(s["days"]), period_start=str(min(s["days"])), period_end=str(day)))
