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
    min_percent: Decimal = Field(Decimal("0.2"), ge=0, description="... and at least this share of expected.")
    baseline_days: int = Field(28, ge=7, le=120, description="History the seasonal baseline uses.")
    min_history_days: int = Field(14, ge=7, le=120, description="Fewer days of history: no detection, said so.")
    provisional_days: int = Field(2, ge=0, le=10, description="The last days of a feed lag: marked provisional.")
    contributors_for: int = Field(25, ge=0, le=1000, description="Top contributors are looked up for this many "
                                  "episodes, the largest impact first (each lookup scans the window's pieces).")
    lookback_days: int = Field(92, ge=7, le=730, description="Episodes are looked for in the last this many days "
                               "(plus the baseline before them): a nightly run costs the same whatever the history.")
    channels: list[str] = Field(default_factory=list)

    _i = field_validator("min_impact", mode="before")(lambda cls, v: _exact(v))
    _p = field_validator("min_percent", mode="before")(lambda cls, v: _ratio(v))


class GuardrailsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    channels: dict[str, str] = Field(default_factory=dict, description="Name -> apprise URL (${ENV} for secrets).")
    budgets: list[Budget] = Field(default_factory=list)
    anomalies: AnomalySettings = Field(default_factory=AnomalySettings)
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for b in self.budgets:
            if b.name in seen:
                raise ValueError(f"budget name {b.name!r} is used twice")
            seen.add(b.name)
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
            allowed = tax.dimensions[key].allowed
            for v in b.values(key):
                if allowed and v not in allowed and v not in ("untagged", "shared"):
                    add(("budgets", i, "scope", key), f"unknown {key} {v!r} (allowed: {', '.join(allowed)})")
        for j, ch in enumerate(b.channels):
            if ch not in g.channels:
                p = channel_problem(ch)
                if p:
                    add(("budgets", i, "channels", j), f"{p}; or the name of one of `channels`")
        if b.effective.from_ and b.effective.until and b.effective.until <= b.effective.from_:
            add(("budgets", i, "effective", "until"), "until must be after from")
    for j, ch in enumerate(g.anomalies.channels):
        if ch not in g.channels and channel_problem(ch):
            add(("anomalies", "channels", j), f"{channel_problem(ch)}; or the name of one of `channels`")
    if problems:
        raise ConfigError(path, problems)
    g.path = path
    return g
