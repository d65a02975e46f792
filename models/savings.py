"""The `savings:` section of apportion.yaml: the thresholds and discounts behind the savings advice.

Every number here is the customer's own assumption, shown next to each estimate (apportion/savings/).
Omit the section to use the defaults; a kind whose input is missing (no price, no utilisation) is
skipped for that scope with the reason, never estimated from a zero.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _exact(v: Any) -> Any:
    return Decimal(str(v)) if isinstance(v, float) else v  # YAML floats keep the digits as written


class ModelTier(BaseModel):
    """Send simple requests of `premium` (a model id, e.g. gpt-4o) to `cheaper` of the same provider."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="genai-prices provider id: openai, anthropic, aws, azure, google.")
    premium: str = Field(min_length=1, description="Model id as in line_items.x_ModelId (no date suffix).")
    cheaper: str = Field(min_length=1, description="The cheaper model of the same provider, priced from the catalogue.")


class SimpleRequests(BaseModel):
    """A request is 'simple' when its input and output tokens are both at or under these limits."""

    model_config = ConfigDict(extra="forbid")

    max_input_tokens: int = Field(2000, ge=1)
    max_output_tokens: int = Field(500, ge=1)


class ConfidenceRules(BaseModel):
    """When a finding is high / medium / low confidence."""

    model_config = ConfigDict(extra="forbid")

    high_min_requests: int = Field(1000, ge=1, description="LLM findings on at least this many requests can be high.")
    medium_min_requests: int = Field(100, ge=1, description="...at least this many: medium; fewer: low.")
    high_min_gpu_hours: Decimal = Field(Decimal(100), ge=0, description="GPU findings on this many GPU-hours or more: high.")
    min_days: int = Field(7, ge=1, description="Findings on fewer days of data than this are at most medium.")

    @field_validator("high_min_gpu_hours", mode="before")
    @classmethod
    def _dec(cls, v: Any) -> Any:
        return _exact(v)


class SavingsSettings(BaseModel):
    """`savings:` in apportion.yaml."""

    model_config = ConfigDict(extra="forbid")

    model_tiers: list[ModelTier] = Field(default_factory=list)
    simple_requests: SimpleRequests = Field(default_factory=SimpleRequests)
    cache_read_target_share: Decimal = Field(Decimal("0.5"), ge=0, le=1, description="Share of input tokens "
                                             "that could be cache reads (when logs show no cache keys).")
    cache_min_prompt_tokens: int = Field(1024, ge=0, description="Only requests whose prompts average at least this "
                                         "many tokens can cache (OpenAI caches prefixes from 1,024 tokens).")
    prompt_tokens_target: int | None = Field(None, ge=1, description="Input tokens per request a workload should "
                                             "need; omit to use each model's median over workloads.")
    gpu_utilisation_threshold: Decimal = Field(Decimal("0.4"), gt=0, le=1, description="Allocated GPU-hours "
                                               "measured below this average utilisation are flagged.")
    spot_discount: Decimal | None = Field(Decimal("0.6"), ge=0, lt=1, description="Fraction below on-demand.")
    spot_price_history: Path | None = Field(None, description="CSV of AWS spot prices (InstanceType, "
                                            "AvailabilityZone or Region, SpotPrice); overrides spot_discount.")
    spot_workloads: list[str] = Field(default_factory=lambda: ["training"], description="Workloads (or "
                                      "value classes) that are interruptible.")
    commitment_discount: Decimal = Field(Decimal("0.28"), ge=0, lt=1, description="Savings Plan / RI discount "
                                         "off on-demand for the steady hourly floor.")
    min_saving: Decimal = Field(Decimal("0"), ge=0, description="Findings under this monthly amount are not listed.")
    confidence: ConfidenceRules = Field(default_factory=ConfidenceRules)

    @field_validator("cache_read_target_share", "gpu_utilisation_threshold", "spot_discount", "commitment_discount",
                     "min_saving", mode="before")
    @classmethod
    def _dec(cls, v: Any) -> Any:
        return _exact(v)

    @field_validator("model_tiers")
    @classmethod
    def _unique(cls, v: list[ModelTier]) -> list[ModelTier]:
        seen: set[tuple[str, str]] = set()
        for t in v:
            key = (t.provider.lower(), t.premium)
            if key in seen:
                raise ValueError(f"model tier {t.provider}/{t.premium} is listed twice")
            if t.premium == t.cheaper:
                raise ValueError(f"model tier {t.provider}/{t.premium}: cheaper must differ from premium")
            seen.add(key)
        return v
