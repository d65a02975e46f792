"""Prompt caching: input tokens that could be cache reads, priced at the cache-read price difference.

Per workload x model x key of a model whose catalogue (or override) has a cache-read price below its input
price, with prompts averaging at least `cache_min_prompt_tokens`: observed share = cache_read / all input
tokens; if under `cache_read_target_share`, extra reads = min(target x input - cache_read, uncached input),
saving = extra x (input price - cache-read price) / 1M. Cache writes (Anthropic bills them above input) are
not counted: the confidence says so.
"""

from __future__ import annotations

from decimal import Decimal

from apportion.models.prices import MILLION
from apportion.savings._llm import Prices, scopes
from apportion.savings.table import Finding, Results, Skip, confidence


def find(con, cfg, settings, results: Results) -> None:
    prices = Prices(cfg)
    target = settings.cache_read_target_share
    for s in scopes(con):
        total = s.input_total
        if s.requests <= 0 or total <= 0 or total / s.requests < settings.cache_min_prompt_tokens:
            continue
        read = s.tokens.get("cache_read", Decimal(0))
        uncached = s.tokens.get("input", Decimal(0))
        extra = min(target * total - read, uncached)
        if extra <= 0:
            continue
        p_in, why_in = prices.per_million(s.source, s.provider, s.model_ref, "input", s.last_day)
        p_read, why_read = prices.per_million(s.source, s.provider, s.model_ref, "cache_read", s.last_day)
        if p_in is None or p_read is None:
            results.skipped.append(Skip("prompt_caching", s.month, s.label(),
                                        f"no {'input' if p_in is None else 'cache-read'} price: {why_in if p_in is None else why_read}"))
            continue
        if p_read >= p_in:
            continue
        saving = extra * (p_in - p_read) / MILLION
        level, reason = confidence(settings, requests=int(s.requests), days=s.days, cap="medium",
                                   basis="gap between the observed cache-read share and the configured target; "
                                         "assumes repeated prefixes and ignores cache-write premiums")
        results.findings.append(Finding(
            kind="prompt_caching", month=s.month, team=s.team, project=s.project, workload=s.workload,
            scope_type="api_key" if s.resource else "model", scope_id=s.resource or s.model_id, provider=s.provider,
            current=f"{s.model_id}: cache-read share {(read / total).quantize(Decimal('0.0001'))}",
            suggested=f"cache-read share {target.normalize():f}",
            evidence={"requests": s.requests, "input_tokens": total, "uncached_input_tokens": uncached,
                      "cache_read_tokens": read, "target_share": target, "extra_cache_read_tokens": extra,
                      "input_price_per_1m": p_in, "cache_read_price_per_1m": p_read},
            formula=(f"min(target {target.normalize():f} x input tokens {total.normalize():f} - cache reads "
                     f"{read.normalize():f}, uncached {uncached.normalize():f}) x (input price {p_in.normalize():f} - "
                     f"cache-read price {p_read.normalize():f}) / 1M"),
            saving=saving, currency=s.currency, confidence=level, confidence_reason=reason, days_observed=s.days,
            period_start=str(s.first_day), period_end=str(s.last_day)))
