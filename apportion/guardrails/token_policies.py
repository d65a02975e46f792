"""Token policies (issue 11, point 4): per workload or value class, the largest request (input and output
tokens), the models allowed, a monthly token quota per team or API key; violations from the per-request logs.

The gateway's line items are sums (day x model x key x user), so a per-request limit needs the requests
themselves: the delivery each source's current line items were built from (`<raw>/<source>/<month>`, pointer
CURRENT) is read again with the connector's own record parser (the same rows, the same token types, the same
quarantine rules), one record per request (`litellm`, `otel_genai`, `bedrock_logs`). Each request takes its
team, workload and value class from the allocation of the line item it was summed into (the taxonomy's
rules and aliases already applied), and its cost from the price catalogue (models/prices.py, the source's
price overrides included), in USD like the gateway's priced usage.

Per rule (each a row per policy, month, team, API key and model):
- max_input_tokens: input tokens (uncached + cache read + cache write) above the limit; the excess cost is
  the request's input cost x tokens over / its input tokens;
- max_output_tokens: the same on output tokens;
- allowed_models: every request on a model no glob allows; tokens over = all its tokens; the excess cost is
  its cost - the same tokens priced at the policy's comparison model (price_as);
- monthly_tokens: requests in date order (day, file, row) per team or API key; the tokens beyond the quota
  and their share of each request's cost.
allowed_model_cost = the violating requests' tokens priced at the comparison model, for every rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Iterator

from apportion.guardrails.config import GuardrailsFile, TokenPolicy, model_allowed
from apportion.models.config import ApportionConfig
from apportion.models.focus import dimension_column
from apportion.models.taxonomy import Taxonomy

REQUEST_KINDS = ("litellm", "otel_genai", "bedrock_logs")
INPUT_TYPES = ("input", "input_audio", "cache_read", "cache_write_5m", "cache_write_1h")
OUTPUT_TYPES = ("output", "output_audio")
# a token type the comparison model has no price for is priced as its plain counterpart
FALLBACK = {"input_audio": "input", "cache_read": "input", "cache_write_5m": "input", "cache_write_1h": "input",
            "output_audio": "output"}
DIMS = ("team", "workload", "value_class")


@dataclass
class Request:
    """One request, with the attribution of its line item and its catalogue cost per token type."""

    source: str
    month: str
    day: date
    order: tuple
    provider: str | None
    model_ref: str | None
    model_id: str
    tokens: dict[str, int]
    service_tier: str | None
    batch: bool
    context_window: str | None
    api_key: str | None
    dims: dict[str, str | None] = field(default_factory=dict)
    costs: dict[str, Decimal | None] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return sum(self.tokens.get(t, 0) for t in INPUT_TYPES)

    @property
    def output_tokens(self) -> int:
        return sum(self.tokens.get(t, 0) for t in OUTPUT_TYPES)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def priced(self) -> bool:
        return all(c is not None for c in self.costs.values())

    def cost_of(self, types: tuple[str, ...] | None = None) -> Decimal:
        return sum((c or Decimal(0) for t, c in self.costs.items() if types is None or t in types), Decimal(0))


def _records(connector, delivery) -> Iterator:
    """Every per-request record of a delivery, parsed by the connector (before it sums them)."""
    kind = connector.source.kind
    for key, path in sorted(delivery.files):
        if kind == "litellm":
            for row_no, row in connector._read_csv(key, path):
                yield connector._record(key, row_no, row)
        elif kind == "otel_genai":
            yield from connector._spans(key, path)
        elif kind == "bedrock_logs":
            for row_no, record, problem in connector._records(key, path):
                yield connector._record(key, row_no, record, problem)


def _attribution(con, source: str, month: str, dims: list[str]) -> dict[tuple[str, int], dict]:
    """(source file, row of the line item) -> the dimensions of its largest allocation piece."""
    cols = ", ".join(f"first(a.{dimension_column(d)} ORDER BY a.x_AllocatedRatio DESC, a.x_PieceId) AS {d}"
                     for d in dims)
    rows = con.execute(
        f"SELECT li.x_SourceFile, li.x_SourceRow{', ' + cols if cols else ''} FROM line_items AS li "
        "JOIN allocations AS a USING (x_SourceName, x_BillingMonth, x_LineId) "
        "WHERE li.x_SourceName = ? AND li.x_BillingMonth = ? GROUP BY ALL", [source, month]).fetchall()
    return {(r[0], r[1]): dict(zip(dims, r[2:])) for r in rows}


def load_requests(con, cfg: ApportionConfig, tax: Taxonomy, months: int,
                  checked: list[dict] | None = None) -> list[Request]:
    """The requests of the per-request sources in the latest `months` months built in the warehouse; each
    source x month read (or not, and why) is appended to `checked`."""
    from apportion.connectors.base import SourceError
    from apportion.connectors.llm import month_bounds
    from apportion.connectors.registry import connector_for
    from apportion.steps.land import current_delivery

    dims = [d for d in DIMS if d in tax.dimension_names]
    checked = checked if checked is not None else []
    out: list[Request] = []
    for source in cfg.sources:
        if source.kind not in REQUEST_KINDS:
            continue
        built = [r[0] for r in con.execute("SELECT DISTINCT x_BillingMonth FROM line_items WHERE x_SourceName = ? "
                                           "ORDER BY 1 DESC LIMIT ?", [source.name, months]).fetchall()]
        connector = connector_for(source)
        book = connector.price_book()
        for month in sorted(built):
            start, end = month_bounds(month)
            try:
                delivery = current_delivery(cfg, source, month, "CURRENT")
                recs = [r for r in _records(connector, delivery)
                        if r.quarantine is None and r.day is not None and start <= r.day < end]
            except (SourceError, OSError) as exc:
                checked.append({"source": source.name, "month": month, "delivery_id": None, "requests": 0,
                                "note": f"not checked: {exc}"[:500]})
                continue
            checked.append({"source": source.name, "month": month, "delivery_id": delivery.delivery_id,
                            "requests": len(recs), "note": "checked"})
            group_row: dict[tuple, int] = {}
            for r in recs:  # the line item's row is its group's first row (connectors.llm.Aggregator)
                k = r.key()
                group_row[k] = min(group_row.get(k, r.row), r.row)
            attribution = _attribution(con, source.name, month, dims)
            for r in recs:
                tokens = {t: n for t, n in r.tokens.items() if n}
                if not tokens:
                    continue
                model = book.normalise(r.provider, r.model_ref)
                req = Request(source.name, month, r.day, (r.day, source.name, r.file, r.row), r.provider, r.model_ref,
                              model.model_id, tokens, r.service_tier, r.batch, r.context_window,
                              r.resource_id or (r.tags or {}).get("key_alias"),
                              dims=attribution.get((r.file, group_row[r.key()]), {d: None for d in dims}))
                for t, n in tokens.items():
                    if t == "web_search":
                        continue
                    req.costs[t] = book.price(r.provider, r.model_ref, t, r.day, r.service_tier, r.batch,
                                              r.context_window).cost(n)
                out.append(req)
    out.sort(key=lambda r: r.order)
    return out


def _in_scope(p: TokenPolicy, r: Request) -> bool:
    return all(r.dims.get(k) in p.values(k) for k in p.scope)


def comparison_cost(book, model: str | None, r: Request) -> Decimal | None:
    """The request's tokens priced at `model` (None without one or when the catalogue cannot price it)."""
    if not model:
        return None
    total = Decimal(0)
    for t, n in r.tokens.items():
        if t not in r.costs:
            continue
        p = book.price(None, model, t, r.day, r.service_tier, r.batch, r.context_window)
        if p.unit_price is None and t in FALLBACK:
            p = book.price(None, model, FALLBACK[t], r.day, r.service_tier, r.batch, r.context_window)
        if p.unit_price is None:
            return None
        total += p.cost(n)
    return total


def violations(p: TokenPolicy, requests: list[Request], book) -> list[tuple[str, Request, int, Decimal]]:
    """(rule, request, tokens over, excess cost) for every violation of the policy (allowed_models' excess is
    filled in by `evaluate`, which knows the comparison cost)."""
    out = []
    used: dict[tuple, int] = defaultdict(int)
    for r in requests:
        if not _in_scope(p, r):
            continue
        if p.max_input_tokens and r.input_tokens > p.max_input_tokens:
            over = r.input_tokens - p.max_input_tokens
            out.append(("max_input_tokens", r, over, r.cost_of(INPUT_TYPES) * over / r.input_tokens))
        if p.max_output_tokens and r.output_tokens > p.max_output_tokens:
            over = r.output_tokens - p.max_output_tokens
            out.append(("max_output_tokens", r, over, r.cost_of(OUTPUT_TYPES) * over / r.output_tokens))
        if p.allowed_models and not model_allowed(book, r.provider, r.model_ref, p.allowed_models):
            out.append(("allowed_models", r, r.total_tokens, Decimal(0)))
        if p.monthly_tokens:
            subject = r.dims.get("team") if p.monthly_tokens.per == "team" else r.api_key
            k = (r.month, subject)
            before = used[k]
            used[k] += r.total_tokens
            over = used[k] - max(before, p.monthly_tokens.tokens)
            if over > 0:
                out.append(("monthly_tokens", r, over, r.cost_of() * over / r.total_tokens))
    return out


def limit_text(p: TokenPolicy, rule: str) -> str:
    if rule == "max_input_tokens":
        return f"{p.max_input_tokens} input tokens per request"
    if rule == "max_output_tokens":
        return f"{p.max_output_tokens} output tokens per request"
    if rule == "allowed_models":
        return ", ".join(p.allowed_models)
    return f"{p.monthly_tokens.tokens} tokens a month per {p.monthly_tokens.per}"


def evaluate(requests: list[Request], g: GuardrailsFile) -> list[dict]:
    """The token_policy_violations rows: one per policy, rule, month, source, team, workload, value class, key
    and model."""
    from apportion.models.prices import PriceBook

    book = PriceBook()
    groups: dict[tuple, dict] = {}
    for p in g.token_policies:
        model = p.comparison_model
        for rule, r, over, excess in violations(p, requests, book):
            alt = comparison_cost(book, model, r)
            if rule == "allowed_models":
                excess = r.cost_of() - alt if alt is not None else Decimal(0)
            k = (p.name, rule, r.month, r.source, r.dims.get("team"), r.dims.get("workload"),
                 r.dims.get("value_class"), r.api_key, r.model_id)
            row = groups.get(k)
            if row is None:
                row = groups[k] = {
                    "policy": p.name, "rule": rule, "month": r.month, "source": r.source, "team": k[4],
                    "workload": k[5], "value_class": k[6], "api_key": r.api_key, "model": r.model_id,
                    "limit_value": limit_text(p, rule), "requests": 0, "first_day": r.day, "last_day": r.day,
                    "tokens_over": 0, "cost": Decimal(0), "excess_cost": Decimal(0), "allowed_model": model,
                    "allowed_model_cost": Decimal(0) if model else None, "unpriced_requests": 0, "currency": "USD"}
            row["requests"] += 1
            row["last_day"] = max(row["last_day"], r.day)
            row["tokens_over"] += over
            row["cost"] += r.cost_of()
            row["excess_cost"] += excess
            if row["allowed_model_cost"] is not None:
                row["allowed_model_cost"] = None if alt is None else row["allowed_model_cost"] + alt
            row["unpriced_requests"] += not r.priced
    q = Decimal("0.000001")
    for row in groups.values():
        for c in ("cost", "excess_cost", "allowed_model_cost"):
            if row[c] is not None:
                row[c] = row[c].quantize(q)
    return sorted(groups.values(), key=lambda r: (r["month"], r["policy"], r["rule"], str(r["team"]),
                                                  str(r["api_key"]), r["model"], r["source"]))


def create_table(con, cfg: ApportionConfig, tax: Taxonomy, g: GuardrailsFile | None = None) -> int:
    from apportion.guardrails.tables import document, fill

    rows: list[dict] = []
    checked: list[dict] = []
    if g is not None and g.token_policies:
        rows = evaluate(load_requests(con, cfg, tax, g.token_policy_months, checked), g)
    for name, data in (("token_policy_checked", checked), ("token_policy_violations", rows)):
        fill(con, name, data)  # sql/guardrails/create_<name>.sql; descriptions: models/warehouse_docs.py
        document(con, name)
    return len(rows)
