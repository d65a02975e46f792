"""The guardrails file (`budgets:` in apportion.yaml): budgets, anomaly settings, alert channels.

Validated like the rest of the config: every problem names the file, the line and the key. Channel URLs
are apprise URLs; secrets go in `${ENV_VAR}` placeholders, expanded only when a message is sent.
"""

from __future__ import annotations

import fnmatch
import os
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from apportion.models._yaml import ConfigError, format_loc, line_of, load_yaml_with_lines, problems_from_validation
from apportion.models.config import ApportionConfig
from apportion.models.currencies import billing_currency_codes
from apportion.models.taxonomy import Taxonomy

MAX_RATIO = Decimal(10)
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LEDGER_SCOPES = ("provider", "service", "model", "source")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _exact(v: Any) -> Any:
    return Decimal(str(v)) if isinstance(v, (float, int)) and not isinstance(v, bool) else v


def _ratio(v: Any) -> Any:
    if isinstance(v, str) and v.strip().endswith("%"):
        return Decimal(v.strip()[:-1]) / 100
    return _exact(v)


class Threshold(BaseModel):
    """A share of the budget on the actual spend or on the period-end forecast, e.g. 0.8 or "80%"."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    of: Literal["actual", "forecast"] = Field(description="actual spend, or the period-end forecast")
    at: Decimal = Field(gt=0)
    severity: Literal["info", "warn", "critical"] = "warn"

    _r = field_validator("at", mode="before")(lambda cls, v: _ratio(v))

    @field_validator("at")
    @classmethod
    def _at_most_ten(cls, v: Decimal) -> Decimal:
        if v > MAX_RATIO:
            raise ValueError(f"threshold {v} is a ratio of the budget (1 = 100 %) and must be at most 10; "
                             f"did you mean {v / 100} ({v} %)?")
        return v


class Effective(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date | None = Field(None, alias="from")
    until: date | None = Field(None, description="Exclusive.")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    scope: dict[str, str | list[str]] = Field(default_factory=dict,
                                              description="Taxonomy dimension -> value(s), and/or provider, service, "
                                              "model, source (globs allowed for those four).")
    amount: Decimal = Field(gt=0)
    currency: str
    period: Literal["month", "quarter"] = "month"
    effective: Effective = Field(default_factory=Effective)
    thresholds: list[Threshold] = Field(default_factory=lambda: [Threshold(of="actual", at=Decimal(1),
                                                                           severity="critical")])
    owners: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)

    _a = field_validator("amount", mode="before")(lambda cls, v: _exact(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} must be lower-case letters, digits, '.', '-' or '_'")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in billing_currency_codes():
            raise ValueError(f"unknown currency {v!r} (an ISO 4217 code such as USD, EUR)")
        return v

    def values(self, key: str) -> list[str]:
        v = self.scope.get(key)
        return [] if v is None else [v] if isinstance(v, str) else list(v)


class AnomalySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_impact: Decimal = Field(Decimal(100), ge=0, description="Flag only when actual - expected is at least this.")
    min_percent: Decimal = Field(Decimal("0.5"), ge=0, description="... and at least this share of expected "
                                 "(bench/RESULTS.md: 50 % keeps daily noise of ~8 % quiet).")
    sigmas: Decimal = Field(Decimal(4), ge=1, le=10, description="A day counts when it is this many robust sigmas "
                            "above expected (sigma: 1.4826 x the MAD of the baseline's own errors).")
    baseline_days: int = Field(28, ge=7, le=120, description="History the seasonal baseline uses.")
    min_history_days: int = Field(14, ge=7, le=120, description="Fewer days of history: no detection, said so.")
    provisional_days: int = Field(2, ge=0, le=10, description="The last days of a feed lag: marked provisional.")
    contributors_for: int = Field(25, ge=0, le=1000, description="Top contributors are looked up for this many "
                                  "episodes, the largest impact first (a look-up scans the window's pieces; it is "
                                  "kept and reused while the window's partition versions are unchanged).")
    lookback_days: int = Field(92, ge=7, le=730, description="Episodes are looked for in the last this many days "
                               "(plus the baseline before them): a nightly run costs the same whatever the history.")
    channels: list[str] = Field(default_factory=list)

    _i = field_validator("min_impact", mode="before")(lambda cls, v: _exact(v))
    _p = field_validator("min_percent", mode="before")(lambda cls, v: _ratio(v))
    _s = field_validator("sigmas", mode="before")(lambda cls, v: _exact(v))


POLICY_SCOPES = ("team", "workload", "value_class")
GLOB_CHARS = set("*?[")


def _positive_tokens(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be a whole number of tokens, not {v!r}")
    if v <= 0:
        raise ValueError(f"must be a positive number of tokens, not {v}")
    return v


def glob_problem(pattern: str) -> str | None:
    """Why a model glob is unusable (empty, or an unclosed [...] class), or None."""
    if not pattern.strip():
        return "an empty model glob"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                return f"model glob {pattern!r} has an unclosed '['"
            i = j
        i += 1
    return None


class MonthlyQuota(BaseModel):
    """Tokens (every type: input, cache, output) a team or an API key may use per calendar month."""

    model_config = ConfigDict(extra="forbid")

    tokens: int
    per: Literal["team", "api_key"] = "team"

    _t = field_validator("tokens", mode="before")(lambda cls, v: _positive_tokens(v))


class TokenPolicy(BaseModel):
    """Limits on the LLM requests of a workload or value class, checked on the per-request logs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    scope: dict[str, str | list[str]] = Field(default_factory=dict,
                                              description="workload and/or value_class (and/or team) -> value(s).")
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    allowed_models: list[str] = Field(default_factory=list, description="Model globs, e.g. gpt-4o-mini*, claude-haiku-*.")
    price_as: str | None = Field(None, description="The allowed model the violating requests are priced at for "
                                 "comparison (default: the first allowed model that is not a glob).")
    monthly_tokens: MonthlyQuota | None = None
    severity: Literal["info", "warn", "critical"] = "warn"
    channels: list[str] = Field(default_factory=list)

    _m = field_validator("max_input_tokens", "max_output_tokens", mode="before")(
        lambda cls, v: None if v is None else _positive_tokens(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} must be lower-case letters, digits, '.', '-' or '_'")
        return v

    def values(self, key: str) -> list[str]:
        v = self.scope.get(key)
        return [] if v is None else [v] if isinstance(v, str) else list(v)

    @property
    def comparison_model(self) -> str | None:
        """The model the violating requests are priced at: price_as, else the first allowed non-glob model."""
        return self.price_as or next((m for m in self.allowed_models if not (set(m) & GLOB_CHARS)), None)


class GuardrailsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    channels: dict[str, str] = Field(default_factory=dict, description="Name -> apprise URL (${ENV} for secrets).")
    budgets: list[Budget] = Field(default_factory=list)
    anomalies: AnomalySettings = Field(default_factory=AnomalySettings)
    token_policies: list[TokenPolicy] = Field(default_factory=list)
    token_policy_months: int = Field(3, ge=1, le=36, description="Months checked against the token policies (the "
                                     "latest ones): each check re-reads those months' request logs.")
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for b in self.budgets:
            if b.name in seen:
                raise ValueError(f"budget name {b.name!r} is used twice")
            seen.add(b.name)
        seen = set()
        for p in self.token_policies:
            if p.name in seen:
                raise ValueError(f"token policy name {p.name!r} is used twice")
            seen.add(p.name)
        return self

    def channel_urls(self, names: list[str]) -> list[tuple[str, str]]:
        """(channel name, URL with placeholders) for a budget's or the anomalies' channels."""
        return [(n, self.channels.get(n, n)) for n in names]


def channel_problem(url: str) -> str | None:
    """Why apprise cannot use this URL (placeholders count as filled), or None."""
    import apprise

    if PLACEHOLDER.fullmatch(url.strip()):
        return None  # the whole URL comes from the environment: checked when it is sent
    filled = PLACEHOLDER.sub("placeholder", url)
    if "://" not in url or apprise.Apprise.instantiate(filled) is None:
        return f"channel URL {redact(url)!r} cannot be parsed (an apprise URL such as json://host/path, " \
               "slack://..., msteams://..., mailto://host?to=...)"
    userinfo = re.split(r"[/?#]", url.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[0]
    if ":" in userinfo and not PLACEHOLDER.search(userinfo.split(":", 1)[1]):
        return f"channel URL {redact(url)!r} carries a password; write it as ${{ENV_VAR}} (secrets come from the environment)"
    return None


def redact(url: str) -> str:
    """A channel URL as it may be shown or logged: a password replaced by ***."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    m = re.search(r"[/?#]", rest)
    host, sep, path = (rest[:m.start()], rest[m.start()], rest[m.start() + 1:]) if m else (rest, "", "")
    user, at, hostpart = host.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return f"{scheme}://{user}{at}{hostpart}{sep}{path}"


def expand(url: str) -> str:
    """The URL with ${VAR} replaced from the environment (KeyError naming the variable when unset)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise KeyError(f"environment variable {m.group(1)} is not set")
        return os.environ[m.group(1)]

    return PLACEHOLDER.sub(sub, url)


def _check_values(add, where: tuple, key: str, values, tax: Taxonomy) -> None:
    """Scope values of a taxonomy dimension must be among its `allowed` (or untagged / shared)."""
    allowed = tax.dimensions[key].allowed
    for v in values:
        if allowed and v not in allowed and v not in ("untagged", "shared"):
            add(where, f"unknown {key} {v!r} (allowed: {', '.join(allowed)})")


def _check_channels(add, where: tuple, channels: list[str], g: GuardrailsFile) -> None:
    """A channel is the name of one of `channels` or a usable apprise URL."""
    for j, ch in enumerate(channels):
        problem = None if ch in g.channels else channel_problem(ch)
        if problem:
            add((*where, j), f"{problem}; or the name of one of `channels`")


def _check_policy(p: TokenPolicy, i: int, tax: Taxonomy, g: GuardrailsFile, add) -> None:
    """Scope values known to the taxonomy, usable globs, a priceable comparison model, known channels."""
    for key in p.scope:
        if key not in POLICY_SCOPES or key not in tax.dimension_names:
            known = [d for d in POLICY_SCOPES if d in tax.dimension_names]
            add(("token_policies", i, "scope", key), f"unknown scope {key!r} (a token policy is scoped by "
                f"{', '.join(known)})")
            continue
        _check_values(add, ("token_policies", i, "scope", key), key, p.values(key), tax)
    if not (p.max_input_tokens or p.max_output_tokens or p.allowed_models or p.monthly_tokens):
        add(("token_policies", i, "name"), "the policy sets no limit (max_input_tokens, max_output_tokens, "
            "allowed_models or monthly_tokens)")
    for j, m in enumerate(p.allowed_models):
        problem = glob_problem(m)
        if problem:
            add(("token_policies", i, "allowed_models", j), problem)
    if p.allowed_models and p.comparison_model is None:
        add(("token_policies", i, "allowed_models"), "every allowed model is a glob: name the model the violating "
            "requests are priced at in price_as (e.g. price_as: gpt-4o-mini)")
    model = p.comparison_model
    if model:
        from apportion.models.prices import PriceBook

        book = PriceBook()
        price = book.price(None, model, "input", date.today())
        key = ("token_policies", i, "price_as" if p.price_as else "allowed_models")
        if price.unpriced_reason:
            add(key, f"{model!r} cannot be priced: {price.unpriced_reason}")
        elif p.allowed_models and not model_allowed(book, None, model, p.allowed_models):
            add(key, f"{model!r} is not one of the allowed models ({', '.join(p.allowed_models)})")
    _check_channels(add, ("token_policies", i, "channels"), p.channels, g)


def model_allowed(book, provider: str | None, model_ref: str | None, globs: list[str]) -> bool:
    """Whether a model (as reported, or its normalised id, with or without its provider) matches a glob."""
    m = book.normalise(provider, model_ref)
    names = {n.lower() for n in (m.raw, m.lookup, m.model_id) if n}
    names |= {f"{m.provider}/{n}" for n in set(names)}
    return any(fnmatch.fnmatchcase(n, g.lower()) for n in names for g in globs)


def load_guardrails(cfg: ApportionConfig, tax: Taxonomy) -> GuardrailsFile | None:
    """Read and validate the file named by `budgets:`; None when there is none."""
    path = getattr(cfg, "budgets", None)
    if not path:
        return None
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, ["line 1: the budgets file must be a mapping with budgets, channels, anomalies"])
    try:
        g = GuardrailsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, problems_from_validation(exc, lines)) from None
    problems: list[str] = []

    def add(loc: tuple, msg: str) -> None:
        line = line_of(lines, loc)
        problems.append(f"{'line %d: ' % line if line else ''}{format_loc(loc)}: {msg}")

    for name, url in g.channels.items():
        p = channel_problem(url)
        if p:
            add(("channels", name), p)
    dims = set(tax.dimension_names)
    sources = {s.name for s in cfg.sources}
    for i, b in enumerate(g.budgets):
        if cfg.reporting_currency and b.currency != cfg.reporting_currency:
            add(("budgets", i, "currency"), f"budgets are in the reporting currency {cfg.reporting_currency}, "
                f"not {b.currency}")
        for key in b.scope:
            if key in LEDGER_SCOPES:
                if key == "source":
                    for v in b.values(key):
                        if not any(fnmatch.fnmatchcase(s, v) for s in sources):
                            add(("budgets", i, "scope", key), f"no source {v!r} in the config "
                                f"(sources: {', '.join(sorted(sources))})")
                continue
            if key not in dims:
                add(("budgets", i, "scope", key), f"unknown dimension {key!r} (taxonomy dimensions: "
                    f"{', '.join(tax.dimension_names)}; or {', '.join(LEDGER_SCOPES)})")
                continue
            _check_values(add, ("budgets", i, "scope", key), key, b.values(key), tax)
        _check_channels(add, ("budgets", i, "channels"), b.channels, g)
        if b.effective.from_ and b.effective.until and b.effective.until <= b.effective.from_:
            add(("budgets", i, "effective", "until"), "until must be after from")
    _check_channels(add, ("anomalies", "channels"), g.anomalies.channels, g)
    for i, p in enumerate(g.token_policies):
        _check_policy(p, i, tax, g, add)
    if problems:
        raise ConfigError(path, problems)
    g.path = path
    return g
