"""Token pricing: genai-prices catalogue, negotiated overrides, model-name normalisation, cache semantics."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml

from apportion.models.prices import PriceBook, PriceConfigError, parse_overrides, split_input

DAY = date(2026, 10, 5)


@pytest.fixture
def book():
    return PriceBook(
        deployments={"chat-prod-eastus": "gpt-4o-2024-08-06"},
        inference_profiles={
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3":
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        },
    )


@pytest.mark.parametrize("provider, raw, expect", [
    ("openai", "gpt-4o-2024-08-06", ("openai", "gpt-4o", "2024-08-06", "OpenAI")),
    ("openai", "gpt-4o-mini-2024-07-18", ("openai", "gpt-4o-mini", "2024-07-18", "OpenAI")),
    ("openai", "ft:gpt-4o-2024-08-06:acme-corp:support-bot:9xK2abCd", ("openai", "ft:gpt-4o", "2024-08-06", "OpenAI")),
    ("anthropic", "claude-sonnet-4-5-20250929", ("anthropic", "claude-sonnet-4-5", "20250929", "Anthropic")),
    (None, "anthropic/claude-3-5-haiku-20241022", ("anthropic", "claude-3-5-haiku", "20241022", "Anthropic")),
    (None, "openai/gpt-4.1-mini", ("openai", "gpt-4.1-mini", None, "OpenAI")),
    ("aws", "anthropic.claude-3-5-sonnet-20240620-v1:0", ("aws", "claude-3-5-sonnet", "20240620-v1:0", "Anthropic")),
    ("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", ("aws", "claude-sonnet-4-5", "20250929-v1:0", "Anthropic")),
    (None, "bedrock/us.amazon.nova-pro-v1:0", ("aws", "nova-pro", "v1:0", "Amazon")),
    ("aws", "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-70b-instruct-v1:0",
     ("aws", "llama3-70b-instruct", "v1:0", "Meta")),
    ("aws", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
     ("aws", "claude-3-5-haiku", "20241022-v1:0", "Anthropic")),
    ("aws", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
     ("aws", "claude-sonnet-4-5", "20250929-v1:0", "Anthropic")),
    ("azure", "chat-prod-eastus", ("azure", "gpt-4o", "2024-08-06", "OpenAI")),
    (None, "azure/chat-prod-eastus", ("azure", "gpt-4o", "2024-08-06", "OpenAI")),
])
def test_model_names_are_normalised(book, provider, raw, expect):
    m = book.normalise(provider, raw)
    assert (m.provider, m.model_id, m.version, m.developer) == expect
    assert m.raw == raw and m.problem is None


def test_fine_tune_keeps_its_identity(book):
    m = book.normalise("openai", "ft:gpt-4o-2024-08-06:acme-corp:support-bot:9xK2abCd")
    assert m.fine_tune == "acme-corp:support-bot:9xK2abCd"
    p = book.price("openai", m.raw, "input", DAY)
    # fine-tuned inference is priced as a fine-tune, not as the base model
    assert p.unit_price == Decimal("3.75") and "ft:gpt-4o" in p.source


def test_unmapped_application_inference_profile_is_reported_not_zero(book):
    arn = "arn:aws:bedrock:us-west-2:123456789012:application-inference-profile/zzz999"
    p = book.price("aws", arn, "input", DAY)
    assert p.unit_price is None and p.cost(1000) is None
    assert "not mapped to a model id" in p.unpriced_reason and "inference_profiles" in p.unpriced_reason
    assert book.unpriced_report() == [f"aws/{arn} input: {p.unpriced_reason}"]


def test_unknown_model_is_reported_never_priced_at_zero(book):
    p = book.price("openai", "gpt-imaginary-2026-01-01", "output", DAY)
    assert p.unit_price is None and p.cost(10) is None
    assert p.unpriced_reason.startswith("unpriced model openai/gpt-imaginary-2026-01-01: not in the genai-prices")
    assert "price override" in p.unpriced_reason
    # audio tokens of a model that has no audio price: reported too
    a = book.price("openai", "gpt-4o-mini-2024-07-18", "input_audio", DAY)
    assert a.unit_price is None and "input_audio_mtok" in a.unpriced_reason
    assert len(book.unpriced) == 2


def test_openai_cache_semantics_match_the_catalogue(book):
    # 1M input tokens of which 200k cached, 100k output on gpt-4o: $3.25 (genai-prices' own example)
    uncached = split_input(1_000_000, 200_000, 0, inclusive=True)
    total = (book.price("openai", "gpt-4o-2024-08-06", "input", DAY).cost(uncached)
             + book.price("openai", "gpt-4o-2024-08-06", "cache_read", DAY).cost(200_000)
             + book.price("openai", "gpt-4o-2024-08-06", "output", DAY).cost(100_000))
    assert total == Decimal("3.25") and isinstance(total, Decimal)
    # OpenAI bills cache writes as ordinary input when the model has no write price
    w = book.price("openai", "gpt-4o-2024-08-06", "cache_write_5m", DAY)
    assert w.unit_price == Decimal("2.5") and "cache write at input price" in w.source


def test_split_input_conventions():
    assert split_input(1000, 300, 100, inclusive=True) == 600      # OpenAI: total includes cache
    assert split_input(1000, 300, 100, inclusive=False) == 1000    # Anthropic: already uncached
    assert split_input(100, 300, 0, inclusive=True) == 100         # reporter used the exclusive convention


def test_anthropic_cache_write_ttls_batch_and_long_context(book):
    model = "claude-sonnet-4-5-20250929"
    assert book.price("anthropic", model, "input", DAY).unit_price == Decimal("3")
    assert book.price("anthropic", model, "cache_read", DAY).unit_price == Decimal("0.3")
    assert book.price("anthropic", model, "cache_write_5m", DAY).unit_price == Decimal("3.75")
    assert book.price("anthropic", model, "cache_write_1h", DAY).unit_price == Decimal("6")
    assert book.price("anthropic", model, "web_search", DAY).cost(37) == Decimal("0.37")
    # the catalogue dates Sonnet 4.5's batch variant from 2026-10-14
    assert book.price("anthropic", model, "output", date(2026, 10, 13), batch=True).unit_price == Decimal("15")
    assert book.price("anthropic", model, "output", date(2026, 10, 14), batch=True).unit_price == Decimal("7.5")
    assert book.price("anthropic", model, "input", DAY, context_window="200k-1M").unit_price == Decimal("6")


def test_catalogue_prices_are_effective_dated(book):
    # o3 was repriced on 2025-06-10: history keeps its price, later days get the new one
    assert book.price("openai", "o3-2025-04-16", "input", date(2025, 6, 9)).unit_price == Decimal("10")
    assert book.price("openai", "o3-2025-04-16", "input", date(2025, 6, 10)).unit_price == Decimal("2")


def test_bedrock_profiles_price_per_region_scope(book):
    regional = book.price("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "input", DAY)
    global_ = book.price("aws", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "input", DAY)
    assert (regional.unit_price, global_.unit_price) == (Decimal("3.3"), Decimal("3"))


OVERRIDES = yaml.safe_load("""
- name: acme-openai-2026
  provider: openai
  model: "gpt-4o*"
  valid_from: 2026-10-01
  valid_to: 2026-11-01
  prices: {input: 2.25, output: "9.00"}
- name: acme-openai-discount
  provider: openai
  model: "gpt-4o*"
  valid_from: 2026-11-01
  discount: 0.2
- name: priority-tier-deal
  provider: anthropic
  model: claude-sonnet-4-5
  service_tier: priority
  prices: {input: 4}
- name: azure-ptu
  provider: azure
  model: "*"
  discount: "0.5"
""")


def test_negotiated_overrides_are_effective_dated_and_fall_back_per_token_type():
    book = PriceBook(parse_overrides(OVERRIDES))
    oct_in = book.price("openai", "gpt-4o-2024-08-06", "input", date(2026, 10, 31))
    assert (oct_in.unit_price, oct_in.list_unit_price, oct_in.source) == (
        Decimal("2.25"), Decimal("2.5"), "override:acme-openai-2026")
    assert book.price("openai", "gpt-4o-2024-08-06", "output", date(2026, 10, 1)).unit_price == Decimal("9.00")
    # a token type the override does not price falls back to the catalogue
    cached = book.price("openai", "gpt-4o-2024-08-06", "cache_read", date(2026, 10, 2))
    assert cached.unit_price == Decimal("1.25") and cached.source.startswith("genai-prices")
    # valid_to is exclusive: from November the discount entry applies
    nov = book.price("openai", "gpt-4o-mini-2024-07-18", "input", date(2026, 11, 1))
    assert nov.unit_price == Decimal("0.15") * Decimal("0.8") and nov.source.startswith("override:acme-openai-discount")
    # before valid_from: catalogue
    assert book.price("openai", "gpt-4o-2024-08-06", "input", date(2026, 9, 30)).source.startswith("genai-prices")
    # service tier filter
    assert book.price("anthropic", "claude-sonnet-4-5-20250929", "input", DAY, service_tier="priority").unit_price == 4
    assert book.price("anthropic", "claude-sonnet-4-5-20250929", "input", DAY, service_tier="standard").unit_price == 3
    # an override prices a model the catalogue does not know; all prices stay Decimal
    ov = PriceBook(parse_overrides([{"name": "self-hosted", "provider": "openai", "model": "gpt-imaginary*",
                                     "prices": {"input": 0.5, "output": 1.5}}]))
    p = ov.price("openai", "gpt-imaginary-2026-01-01", "input", DAY)
    assert p.unit_price == Decimal("0.5") and p.list_unit_price is None and p.cost(2_000_000) == Decimal("1.0")
    assert not ov.unpriced


@pytest.mark.parametrize("entry, message", [
    ({"model": "x", "prices": {"prompt": 1}}, "unknown token type 'prompt'"),
    ({"model": "x", "prices": {"input": -1}}, "non-negative"),
    ({"model": "x", "prices": {"input": "cheap"}}, "not a number"),
    ({"model": "x", "prices": {"input": 1}, "valid_from": "2026-13-01"}, "not a date"),
    ({"model": "x", "prices": {"input": 1}, "valid_from": "2026-10-01", "valid_to": "2026-10-01"}, "valid_to must be after"),
    ({"prices": {"input": 1}}, "model is required"),
    ({"model": "x"}, "give prices, a discount, or both"),
    ({"model": "x", "discount": 2}, "fraction"),
    ({"model": "x", "prices": {"input": 1}, "per": 1000}, "unknown field"),
])
def test_override_table_is_validated(entry, message):
    with pytest.raises(PriceConfigError, match=message):
        parse_overrides([entry])
