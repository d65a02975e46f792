"""LLM usage per scope from the warehouse (usage rows of the LLM sources), and prices from the catalogue
with each source's own `price_overrides` (models/prices.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from apportion.models.prices import MILLION, PriceBook, PriceConfigError

INPUT_TYPES = ("input", "cache_read", "cache_write_5m", "cache_write_1h")


@dataclass
class Scope:
    month: str
    source: str
    provider: str
    model_id: str
    model_ref: str
    team: str | None
    project: str | None
    workload: str | None
    resource: str | None
    currency: str
    tokens: dict[str, Decimal] = field(default_factory=dict)
    requests: Decimal = Decimal(0)
    first_day: date | None = None
    last_day: date | None = None
    days: int = 0

    @property
    def input_total(self) -> Decimal:
        return sum((self.tokens.get(t, Decimal(0)) for t in INPUT_TYPES), Decimal(0))

    def label(self) -> str:
        return f"{self.source}: {self.provider}/{self.model_id}" + (f" key {self.resource}" if self.resource else "") \
            + f" ({self.team}/{self.project}/{self.workload})"


def scopes(con) -> list[Scope]:
    rows = con.execute("""
        SELECT x_BillingMonth, x_SourceName, x_LlmProvider, x_ModelId, min(x_ModelRef), sv_team, sv_project,
               sv_workload, ResourceId, BillingCurrency, x_TokenType,
               sum(CAST(x_Tokens AS DECIMAL(38, 12)) * sv_ratio), sum(CAST(coalesce(x_Requests, 0) AS DECIMAL(38, 12)) * sv_ratio),
               min(CAST(ChargePeriodStart AS DATE)), max(CAST(ChargePeriodStart AS DATE)),
               count(DISTINCT CAST(ChargePeriodStart AS DATE))
        FROM sv_pieces
        WHERE x_CostBasis = 'usage' AND x_TokenType IS NOT NULL AND x_LlmProvider IS NOT NULL AND x_ModelId IS NOT NULL
        GROUP BY x_BillingMonth, x_SourceName, x_LlmProvider, x_ModelId, sv_team, sv_project, sv_workload, ResourceId,
                 BillingCurrency, x_TokenType
        ORDER BY ALL""").fetchall()
    out: dict[tuple, Scope] = {}
    for month, src, prov, mid, mref, team, project, workload, res, ccy, ttype, toks, reqs, d0, d1, days in rows:
        key = (month, src, prov, mid, team, project, workload, res, ccy)
        s = out.get(key)
        if s is None:
            s = out[key] = Scope(month, src, prov, mid, mref, team, project, workload, res, ccy)
        s.tokens[ttype] = s.tokens.get(ttype, Decimal(0)) + (toks or Decimal(0))
        s.requests += reqs or Decimal(0)
        s.first_day = d0 if s.first_day is None else min(s.first_day, d0)
        s.last_day = d1 if s.last_day is None else max(s.last_day, d1)
        s.days = max(s.days, days)
    return list(out.values())


class Prices:
    """Per-source price books (the source's overrides, else the catalogue); prices per 1M tokens."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.books: dict[str, PriceBook] = {}

    def book(self, source: str) -> PriceBook:
        if source not in self.books:
            try:
                options = self.cfg.source(source).options
            except KeyError:
                options = {}
            try:
                self.books[source] = PriceBook.from_options(options)
            except PriceConfigError:
                self.books[source] = PriceBook()
        return self.books[source]

    def per_million(self, source: str, provider: str, model_ref: str, token_type: str, day: date
                    ) -> tuple[Decimal | None, str]:
        """(USD per 1M tokens or None, source or reason)."""
        p = self.book(source).price(provider, model_ref, token_type, day)
        if p.unit_price is None:
            return None, p.unpriced_reason or "no price"
        return p.unit_price * MILLION / p.per, p.source

    def known(self, source: str, provider: str, model: str, day: date) -> str | None:
        """None when the catalogue (or an override) prices the model's input and output, else why not."""
        for t in ("input", "output"):
            price, why = self.per_million(source, provider, model, t, day)
            if price is None:
                return why
        return None
