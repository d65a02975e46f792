"""Shorter prompts: per workload x model x key, input tokens per request above a target.

The target is `savings.prompt_tokens_target`, or (when not set) the median of the per-scope averages of the
same model in the same month. excess = (input tokens per request - target) x requests; the saving is the
excess priced at the model's uncached input price (catalogue or the source's override).
"""

from __future__ import annotations

from decimal import Decimal
from statistics import median

from apportion.models.prices import MILLION
from apportion.savings._llm import Prices, scopes
from apportion.savings.table import Finding, Results, Skip, confidence


def find(con, cfg, settings, results: Results) -> None:
    prices = Prices(cfg)
    all_scopes = [s for s in scopes(con) if s.requests > 0]
    medians: dict[tuple, Decimal] = {}
    if settings.prompt_tokens_target is None:
        groups: dict[tuple, list[Decimal]] = {}
        for s in all_scopes:
            groups.setdefault((s.month, s.provider, s.model_id), []).append(s.input_total / s.requests)
        medians = {k: Decimal(median(v)) for k, v in groups.items() if len(v) >= 2}
    for s in all_scopes:
        if settings.prompt_tokens_target is not None:
            target, basis = Decimal(settings.prompt_tokens_target), "configured prompt_tokens_target"
        elif (s.month, s.provider, s.model_id) in medians:
            target, basis = medians[(s.month, s.provider, s.model_id)], "median of the model's scopes"
        else:
            continue
        per_request = s.input_total / s.requests
        if per_request <= target:
            continue
        price, why = prices.per_million(s.source, s.provider, s.model_ref, "input", s.last_day)
        if price is None:
            results.skipped.append(Skip("shorter_prompts", s.month, s.label(), f"no input price: {why}"))
            continue
        excess = (per_request - target) * s.requests
        saving = excess * price / MILLION
        level, reason = confidence(settings, requests=int(s.requests), days=s.days, cap="medium",
                                   basis=f"target from {basis}; assumes the trimmed tokens are uncached input and "
                                         "the answers stay as good")
        results.findings.append(Finding(
            kind="shorter_prompts", month=s.month, team=s.team, project=s.project, workload=s.workload,
            scope_type="api_key" if s.resource else "model", scope_id=s.resource or s.model_id, provider=s.provider,
            current=f"{s.model_id}: {per_request.quantize(Decimal('0.01'))} input tokens/request",
            suggested=f"{target.quantize(Decimal('0.01'))} input tokens/request",
            evidence={"requests": s.requests, "input_tokens": s.input_total, "tokens_per_request": per_request,
                      "target_tokens_per_request": target, "input_price_per_1m": price},
            formula=(f"(input tokens {s.input_total.normalize():f} / requests {s.requests.normalize():f} - target "
                     f"{target.normalize():f}) x requests x input price {price.normalize():f} / 1M"),
            saving=saving, currency=s.currency, confidence=level, confidence_reason=reason, days_observed=s.days,
            period_start=str(s.first_day), period_end=str(s.last_day)))
