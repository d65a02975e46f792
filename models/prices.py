"""LLM token prices: an effective-dated catalogue plus negotiated overrides, in Decimal only.

The catalogue is the `genai-prices` package (pinned): dated prices per model and provider, cache
read/write prices, batch and service-tier variants, context-window tiers. Negotiated prices come
from the config as an override table (first matching entry wins):

    price_overrides:
      - name: acme-openai-2026            # shown in x_PriceSource
        provider: openai                  # genai-prices provider id, or "*"
        model: "gpt-4o*"                  # glob, matched against the model id, the dated ref and the raw ref
        valid_from: 2026-01-01            # inclusive (UTC day)
        valid_to: 2027-01-01              # exclusive; omit for open-ended
        service_tier: null                # optional: only for this tier
        prices: {input: "2.25", output: "9.00", cache_read: "1.125"}   # USD per 1M tokens (web_search: per 1000)
        discount: null                    # or a fraction off the catalogue price, e.g. "0.15"

A token type the override does not price falls back to the catalogue (with `discount` applied).

Token types (`x_TokenType`): input (uncached text/image input), input_audio (uncached audio input),
cache_read, cache_write_5m, cache_write_1h, output, output_audio, web_search (requests).

Cache semantics differ per provider and every connector converts to the token types above before
pricing: OpenAI's `input_tokens` INCLUDES cached (and cache-write) tokens, so uncached input =
input_tokens - cached - cache writes; Anthropic's `uncached_input_tokens` / `input_tokens` EXCLUDE
cache reads and cache creation; Bedrock's `inputTokenCount` excludes them too (Anthropic
convention); LiteLLM and OpenTelemetry report OpenAI-style inclusive prompt tokens
(`split_input` detects the exclusive convention when cache tokens exceed the total).

A model (or token type) without a price is never priced at zero: `price()` returns a `Price` whose
`unpriced_reason` says why, connectors quarantine those rows with that reason, and `PriceBook.unpriced`
lists them.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1000)

TOKEN_TYPES = ("input", "input_audio", "cache_read", "cache_write_5m", "cache_write_1h", "output", "output_audio",
               "web_search")

# token type -> (genai-prices price key, price is per N units, FOCUS TokenDirection, TokenCacheAction, SkuMeter)
TOKEN_TYPE_INFO: dict[str, tuple[str, Decimal, str | None, str | None, str]] = {
    "input": ("input_mtok", MILLION, "Input", "Uncached", "Input Tokens"),
    "input_audio": ("input_audio_mtok", MILLION, "Input", "Uncached", "Audio Input Tokens"),
    "cache_read": ("cache_read_mtok", MILLION, "Input", "Read", "Cache Read Input Tokens"),
    "cache_write_5m": ("cache_write_mtok", MILLION, "Input", "Write", "Cache Write Input Tokens"),
    "cache_write_1h": ("cache_write_1h_mtok", MILLION, "Input", "Write", "Cache Write Input Tokens (1h)"),
    "output": ("output_mtok", MILLION, "Output", None, "Output Tokens"),
    "output_audio": ("output_audio_mtok", MILLION, "Output", None, "Audio Output Tokens"),
    "web_search": ("web_searches_kcount", THOUSAND, None, None, "Web Search Requests"),
}

# Provider id (genai-prices) -> does the provider's reported input total include cached tokens?
INPUT_INCLUDES_CACHE = {"openai": True, "azure": True, "anthropic": False, "aws": False, "google": True}

PROVIDER_DISPLAY = {
    "openai": "OpenAI", "anthropic": "Anthropic", "aws": "AWS", "azure": "Microsoft", "google": "Google Cloud",
    "mistral": "Mistral AI", "cohere": "Cohere", "deepseek": "DeepSeek", "x-ai": "xAI", "groq": "Groq",
}

# LiteLLM / gateway prefixes -> genai-prices provider id
PREFIX_PROVIDERS = {
    "openai": "openai", "azure": "azure", "azure_ai": "azure", "anthropic": "anthropic", "bedrock": "aws",
    "bedrock_converse": "aws", "converse": "aws", "vertex_ai": "google", "vertex_ai_beta": "google",
    "gemini": "google", "google": "google", "mistral": "mistral", "cohere": "cohere", "deepseek": "deepseek",
    "xai": "x-ai", "groq": "groq",
}

BEDROCK_REGION_PREFIX = re.compile(r"^(us|eu|apac|global|us-gov|jp|au|ca)\.(?=[a-z0-9-]+\.)")
BEDROCK_DEVELOPERS = {
    "anthropic": "Anthropic", "amazon": "Amazon", "meta": "Meta", "mistral": "Mistral AI", "cohere": "Cohere",
    "ai21": "AI21 Labs", "deepseek": "DeepSeek", "openai": "OpenAI", "qwen": "Qwen", "writer": "Writer",
    "stability": "Stability AI", "twelvelabs": "TwelveLabs", "luma": "Luma AI",
}
BEDROCK_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]*):(?P<account>\d*):"
    r"(?P<kind>foundation-model|inference-profile|application-inference-profile|provisioned-model|custom-model)/(?P<id>.+)$"
)
DATE_SUFFIXES = (
    re.compile(r"-(\d{4}-\d{2}-\d{2})$"),     # OpenAI snapshots: gpt-4o-2024-08-06
    re.compile(r"-(\d{8})$"),                 # Anthropic: claude-sonnet-4-5-20250929
    re.compile(r"@(\d{8})$"),                 # Vertex: claude-3-5-sonnet@20240620
    re.compile(r"-(\d{4})$"),                 # Azure/OpenAI short: gpt-35-turbo-0125
)
BEDROCK_VERSION = re.compile(
    r"^(?P<base>.+?)(?:-(?P<date>\d{8}))?(?:-(?P<ver>v\d+(?::\d+)?))?(?::(?P<tp>[0-9a-z]+))?$")
FINE_TUNE = re.compile(r"^ft:(?P<base>[^:]+)(?::(?P<rest>.*))?$")


class PriceConfigError(ValueError):
    """The override table in the config is invalid."""


def genai_prices_version() -> str:
    import genai_prices

    return genai_prices.__version__


def split_input(total: int, cache_read: int, cache_write: int, inclusive: bool) -> int:
    """Uncached input tokens from a reported input total.

    `inclusive` (OpenAI convention): the total includes cache reads and writes, so they are subtracted.
    If they exceed the total, the reporter evidently used the exclusive convention (Anthropic's) and
    the total is already uncached.
    """
    if not inclusive:
        return total
    rest = total - cache_read - cache_write
    return rest if rest >= 0 else total


@dataclass(frozen=True)
class ModelName:
    """A model reference, normalised."""

    raw: str                     # as the source reported it
    provider: str                # genai-prices provider id used for pricing (openai, anthropic, aws, azure...)
    lookup: str                  # what the catalogue is asked for (dated, region-prefixed for Bedrock)
    model_id: str                # grouping id without date / region / version: gpt-4o, claude-sonnet-4-5, ft:gpt-4o
    version: str | None = None   # 2024-08-06, 20250929, v1:0 ...
    developer: str | None = None  # OpenAI, Anthropic, Amazon, Meta ...
    fine_tune: str | None = None  # the fine-tune suffix (org:name:id) when a fine-tuned model
    problem: str | None = None    # why it cannot be priced before even asking the catalogue


@dataclass(frozen=True)
class PriceOverride:
    name: str
    provider: str
    model: str
    valid_from: date | None
    valid_to: date | None
    prices: dict[str, Decimal]
    discount: Decimal | None
    service_tier: str | None

    def matches(self, m: ModelName, day: date, service_tier: str | None) -> bool:
        if self.provider not in ("*", m.provider):
            return False
        if self.valid_from and day < self.valid_from:
            return False
        if self.valid_to and day >= self.valid_to:
            return False
        if self.service_tier and (service_tier or "").lower() != self.service_tier.lower():
            return False
        pat = self.model.lower()
        return any(fnmatch.fnmatchcase(s.lower(), pat) for s in {m.model_id, m.lookup, m.raw})


@dataclass(frozen=True)
class Price:
    """Price of one token type for one model on one day. `unit_price` is per `per` units (1M tokens / 1000 requests)."""

    model: ModelName
    token_type: str
    per: Decimal
    unit_price: Decimal | None           # what usage is priced at (override, else catalogue)
    list_unit_price: Decimal | None      # catalogue price
    source: str
    unpriced_reason: str | None = None

    def cost(self, quantity: int | Decimal) -> Decimal | None:
        if self.unit_price is None:
            return None
        return Decimal(quantity) * self.unit_price / self.per


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise PriceConfigError(f"{where}: {value!r} is not a price")
    try:
        d = Decimal(str(value).strip())
    except Exception:  # noqa: BLE001
        raise PriceConfigError(f"{where}: {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise PriceConfigError(f"{where}: {value!r} must be a non-negative number")
    return d


def _day(value: Any, where: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PriceConfigError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None


def parse_overrides(raw: Any) -> list[PriceOverride]:
    """Validate the `price_overrides` option; errors name the entry and field."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PriceConfigError("price_overrides must be a list of entries")
    out = []
    allowed = {"name", "provider", "model", "valid_from", "valid_to", "prices", "discount", "service_tier"}
    for i, entry in enumerate(raw):
        where = f"price_overrides[{i}]"
        if not isinstance(entry, dict):
            raise PriceConfigError(f"{where} must be a mapping")
        unknown = set(entry) - allowed
        if unknown:
            raise PriceConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if not entry.get("model"):
            raise PriceConfigError(f"{where}.model is required (a glob such as 'gpt-4o*')")
        prices = entry.get("prices") or {}
        if not isinstance(prices, dict):
            raise PriceConfigError(f"{where}.prices must map token type -> USD per 1M tokens")
        parsed = {}
        for k, v in prices.items():
            if k not in TOKEN_TYPE_INFO:
                raise PriceConfigError(f"{where}.prices: unknown token type {k!r} (known: {', '.join(TOKEN_TYPES)})")
            parsed[k] = _dec(v, f"{where}.prices.{k}")
        discount = _dec(entry["discount"], f"{where}.discount") if entry.get("discount") is not None else None
        if discount is not None and discount > 1:
            raise PriceConfigError(f"{where}.discount must be a fraction between 0 and 1")
        if not parsed and discount is None:
            raise PriceConfigError(f"{where}: give prices, a discount, or both")
        vf, vt = _day(entry.get("valid_from"), f"{where}.valid_from"), _day(entry.get("valid_to"), f"{where}.valid_to")
        if vf and vt and vt <= vf:
            raise PriceConfigError(f"{where}: valid_to must be after valid_from")
        out.append(PriceOverride(
            name=str(entry.get("name") or f"override-{i + 1}"), provider=str(entry.get("provider") or "*").lower(),
            model=str(entry["model"]), valid_from=vf, valid_to=vt, prices=parsed, discount=discount,
            service_tier=entry.get("service_tier"),
        ))
    return out


def _developer_for(model: str) -> str | None:
    m = model.lower()
    if m.startswith(("gpt", "o1", "o3", "o4", "text-embedding", "davinci", "babbage", "chatgpt", "dall-e",
                     "whisper", "tts", "omni-moderation", "codex", "computer-use")):
        return "OpenAI"
    if m.startswith("claude"):
        return "Anthropic"
    if m.startswith(("gemini", "gemma", "text-bison", "chat-bison")):
        return "Google"
    if m.startswith(("llama", "meta-llama")):
        return "Meta"
    if m.startswith(("nova", "titan")):
        return "Amazon"
    if m.startswith(("mistral", "mixtral", "codestral", "pixtral", "magistral", "ministral")):
        return "Mistral AI"
    if m.startswith(("command", "embed-")):
        return "Cohere"
    if m.startswith("deepseek"):
        return "DeepSeek"
    if m.startswith("grok"):
        return "xAI"
    return None


def _strip_date(name: str) -> tuple[str, str | None]:
    for pattern in DATE_SUFFIXES:
        m = pattern.search(name)
        if m:
            return name[: m.start()], m.group(1)
    return name, None


class PriceBook:
    """Normalises model names and prices token usage for a day; remembers every unpriced model."""

    def __init__(self, overrides: list[PriceOverride] | None = None, deployments: dict[str, str] | None = None,
                 inference_profiles: dict[str, str] | None = None):
        self.overrides = overrides or []
        self.deployments = {str(k): str(v) for k, v in (deployments or {}).items()}
        self.inference_profiles = {str(k): str(v) for k, v in (inference_profiles or {}).items()}
        self.unpriced: dict[tuple[str, str, str], str] = {}
        self._cache: dict[tuple, Price] = {}

    @classmethod
    def from_options(cls, options: dict) -> "PriceBook":
        """From a source's options: price_overrides, deployments (Azure), inference_profiles (Bedrock)."""
        for key in ("deployments", "inference_profiles"):
            if options.get(key) is not None and not isinstance(options[key], dict):
                raise PriceConfigError(f"{key} must map a name to a model id")
        return cls(parse_overrides(options.get("price_overrides")), options.get("deployments"),
                   options.get("inference_profiles"))

    # ------------------------------------------------------------------ names
    def normalise(self, provider: str | None, raw: str | None) -> ModelName:
        text = (raw or "").strip()
        provider = (provider or "").strip().lower() or None
        if not text:
            return ModelName(raw="", provider=provider or "unknown", lookup="", model_id="unknown",
                             problem="no model name reported")
        name = text
        # Gateway prefixes: openai/gpt-4o, bedrock/us.anthropic..., azure/my-deployment
        while "/" in name and not name.startswith("arn:"):
            head, rest = name.split("/", 1)
            if head.lower() in PREFIX_PROVIDERS:
                provider = provider if provider and head.lower() == "converse" else PREFIX_PROVIDERS[head.lower()]
                name = rest
            else:
                break
        if provider == "azure" or (provider is None and name in self.deployments):
            provider = "azure"
            if name in self.deployments:
                name = self.deployments[name]
        if name.startswith("arn:"):
            return self._bedrock_arn(text, name)
        if provider == "aws" or (provider is None and BEDROCK_REGION_PREFIX.match(name)) or (
                provider is None and re.match(r"^[a-z0-9]+\.[a-z0-9]", name) and name.split(".", 1)[0] in BEDROCK_DEVELOPERS):
            return self._bedrock_id(text, name)
        ft = FINE_TUNE.match(name)
        if ft:
            base, version = _strip_date(ft.group("base"))
            return ModelName(raw=text, provider=provider or "openai", lookup=name, model_id="ft:" + base,
                             version=version, developer=_developer_for(base), fine_tune=ft.group("rest") or "")
        base, version = _strip_date(name)
        dev = _developer_for(base)
        if provider is None:
            provider = {"OpenAI": "openai", "Anthropic": "anthropic", "Google": "google"}.get(dev or "", "unknown")
        return ModelName(raw=text, provider=provider, lookup=name, model_id=base, version=version, developer=dev)

    def _bedrock_arn(self, raw: str, arn: str) -> ModelName:
        m = BEDROCK_ARN.match(arn)
        if not m:
            return ModelName(raw=raw, provider="aws", lookup=arn, model_id=arn, problem=f"unrecognised model ARN {arn}")
        kind, ident = m.group("kind"), m.group("id")
        if kind in ("foundation-model", "inference-profile"):
            return self._bedrock_id(raw, ident)
        mapped = self.inference_profiles.get(arn) or self.inference_profiles.get(ident)
        if mapped:
            return self._bedrock_id(raw, mapped)
        return ModelName(raw=raw, provider="aws", lookup=arn, model_id=f"{kind}/{ident}",
                         problem=f"{kind} {ident} is not mapped to a model id (add it to the source's "
                                 "inference_profiles option)")

    def _bedrock_id(self, raw: str, ident: str) -> ModelName:
        if ident.startswith("arn:"):
            return self._bedrock_arn(raw, ident)
        bare = BEDROCK_REGION_PREFIX.sub("", ident)
        dev_key, _, model = bare.partition(".")
        if not model or dev_key not in BEDROCK_DEVELOPERS:
            dev_key, model = "", bare
        parts = BEDROCK_VERSION.match(model)
        base = parts.group("base") if parts else model
        version = "-".join(v for v in (parts.group("date"), parts.group("ver"), parts.group("tp")) if v) if parts else ""
        return ModelName(raw=raw, provider="aws", lookup=ident, model_id=base, version=version or None,
                         developer=BEDROCK_DEVELOPERS.get(dev_key) or _developer_for(base))

    # ------------------------------------------------------------------ prices
    def price(self, provider: str | None, model_ref: str | None, token_type: str, day: date,
              service_tier: str | None = None, batch: bool = False, context_window: str | None = None) -> Price:
        key = (provider, model_ref, token_type, day, service_tier, batch, context_window)
        if key not in self._cache:
            self._cache[key] = self._price(*key)
            p = self._cache[key]
            if p.unpriced_reason:
                self.unpriced.setdefault((p.model.provider, p.model.raw, token_type), p.unpriced_reason)
        return self._cache[key]

    def _price(self, provider, model_ref, token_type, day, service_tier, batch, context_window) -> Price:
        if token_type not in TOKEN_TYPE_INFO:
            raise ValueError(f"unknown token type {token_type!r}")
        m = self.normalise(provider, model_ref)
        per = TOKEN_TYPE_INFO[token_type][1]
        list_price, list_source, list_problem = self._catalogue(m, token_type, day, service_tier, batch, context_window)
        override = next((o for o in self.overrides if o.matches(m, day, service_tier)), None)
        if override is not None:
            if token_type in override.prices:
                return Price(m, token_type, per, override.prices[token_type], list_price, f"override:{override.name}")
            if override.discount is not None and list_price is not None:
                return Price(m, token_type, per, list_price * (1 - override.discount), list_price,
                             f"override:{override.name} ({override.discount} off {list_source})")
        if list_price is None:
            reason = f"unpriced model {m.provider}/{m.raw}: {list_problem}"
            return Price(m, token_type, per, None, None, "unpriced", reason)
        return Price(m, token_type, per, list_price, list_price, list_source)

    def _catalogue(self, m: ModelName, token_type: str, day: date, service_tier: str | None, batch: bool,
                   context_window: str | None) -> tuple[Decimal | None, str, str]:
        """(price per `per` units, source, problem) from genai-prices."""
        if m.problem:
            return None, "", m.problem
        from genai_prices.data_snapshot import get_snapshot
        from genai_prices.types import TieredPrices

        try:
            provider, info = get_snapshot().find_provider_model(m.lookup, None, m.provider, None)
        except LookupError as exc:
            return None, "", f"not in the genai-prices {genai_prices_version()} catalogue ({exc}); add a price override"
        ctx: dict[str, str] = {}
        if service_tier:
            ctx["service_tier"] = str(service_tier)
        if batch or (service_tier or "").lower() == "batch":
            ctx["processing"] = "batch"
        when = datetime.combine(day, time(12), tzinfo=timezone.utc)
        prices = info.get_prices(when, ctx or None)
        price_key = TOKEN_TYPE_INFO[token_type][0]
        value = getattr(prices, price_key, None)
        note = ""
        if value is None and token_type == "cache_write_5m" and m.provider in ("openai", "azure"):
            # OpenAI bills prompt-cache writes as ordinary input unless the model has a write price.
            value, note = getattr(prices, "input_mtok", None), " (cache write at input price)"
        if value is None and token_type == "cache_read" and getattr(prices, "cache_read_mtok", None) is None:
            return None, "", f"genai-prices {info.id} has no cache-read price"
        if value is None:
            return None, "", f"genai-prices {provider.id}/{info.id} has no {price_key} price"
        if isinstance(value, TieredPrices):
            large = (context_window or "").lower().startswith(("200k", ">200k")) and value.tiers
            value, note = (value.tiers[-1].price, note + " (long-context tier)") if large else (value.base, note)
        label = f"genai-prices {genai_prices_version()} {provider.id}/{info.id}"
        if ctx:
            label += " [" + ", ".join(f"{k}={v}" for k, v in sorted(ctx.items())) + "]"
        return Decimal(value), label + note, ""

    def unpriced_report(self) -> list[str]:
        return [f"{prov}/{raw} {tt}: {why}" for (prov, raw, tt), why in sorted(self.unpriced.items())]
