"""Shared machinery of the LLM sources: openai, anthropic, litellm, bedrock_logs, otel_genai.

Every LLM source turns what it landed into *staged rows* (one per day x model x token type x
attribution key, see `UsageRecord.rows` / `invoice_row`) priced with `models.prices.PriceBook`, and
`sql/line_items/llm_usage.sql` maps them to FOCUS line items:

* usage rows (x_CostBasis 'usage': usage APIs, gateway and invocation logs, spans): BilledCost =
  EffectiveCost = ListCost = ContractedCost = 0, the priced estimate in x_PricedCost;
* invoice rows (x_CostBasis 'invoice': OpenAI Costs API, Anthropic cost report): the billed dollars.

API sources land the response pages as received (`ApiConnector.land`), with retries on 429
(Retry-After) and 5xx; the admin key is read from the environment and never appears in a log line,
an error or a landed file. A `file://` base_url serves the pages from a folder instead (demo, replays):
page `<path>/<cursor or first-page key>.json`.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa

from apportion.connectors.base import Connector, Delivery, SourceError, safe_dirname
from apportion.connectors.http import open_url
from apportion.models.prices import PROVIDER_DISPLAY, TOKEN_TYPE_INFO, TOKEN_TYPES, PriceBook, PriceConfigError

CENT = Decimal("0.000000000001")

STAGE_SCHEMA = pa.schema([
    ("_file", pa.string()), ("_row", pa.int64()), ("_ord", pa.int32()),
    ("cost_basis", pa.string()), ("charge_day", pa.string()),
    ("llm_provider", pa.string()), ("provider_name", pa.string()), ("publisher_name", pa.string()),
    ("invoice_issuer", pa.string()), ("service_name", pa.string()),
    ("billing_account_id", pa.string()), ("billing_account_name", pa.string()),
    ("sub_account_id", pa.string()), ("sub_account_name", pa.string()), ("sub_account_type", pa.string()),
    ("resource_id", pa.string()), ("resource_type", pa.string()), ("region_id", pa.string()),
    ("model_ref", pa.string()), ("model_id", pa.string()), ("operation", pa.string()),
    ("token_type", pa.string()), ("tokens", pa.int64()), ("quantity", pa.string()), ("consumed_unit", pa.string()),
    ("pricing_quantity", pa.string()), ("pricing_unit", pa.string()),
    ("requests", pa.int64()), ("service_tier", pa.string()),
    ("tags", pa.string()), ("billed_cost", pa.string()), ("currency", pa.string()), ("description", pa.string()),
    ("provider_line_item_id", pa.string()), ("sku_id", pa.string()), ("sku_meter", pa.string()),
    ("sku_price_id", pa.string()), ("sku_price_details", pa.string()),
    ("list_unit_price", pa.string()), ("contracted_unit_price", pa.string()), ("priced_cost", pa.string()),
    ("price_source", pa.string()), ("quarantine", pa.string()),
])


# ------------------------------------------------------------------ months
def month_bounds(month: str) -> tuple[date, date]:
    y, m = int(month[:4]), int(month[5:7])
    start = date(y, m, 1)
    end = date(y + (m == 12), m % 12 + 1, 1)
    return start, end


def month_of_day(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def months_between(first: str, last: str) -> list[str]:
    out, (y, m) = [], (int(first[:4]), int(first[5:7]))
    while f"{y:04d}-{m:02d}" <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def configured_months(options: dict, default_back: int = 2) -> list[str]:
    """Months an API/database source can be asked for: `start_month` (or N months back) to this month (UTC)."""
    today = datetime.now(timezone.utc).date()
    this = month_of_day(today)
    start = options.get("start_month")
    if not start:
        y, m = today.year, today.month - default_back
        while m < 1:
            y, m = y - 1, m + 12
        start = f"{y:04d}-{m:02d}"
    end = options.get("end_month") or this
    return months_between(str(start), min(str(end), this))


def utc_day(value: Any) -> date | None:
    """A UTC day from unix seconds, an ISO/RFC3339 timestamp or a date; None when unparseable."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc).date()
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if text.isdigit():
        n = int(text)
        if n > 10**17:  # nanoseconds
            n //= 10**9
        elif n > 10**14:  # microseconds
            n //= 10**6
        elif n > 10**11:  # milliseconds
            n //= 10**3
        return utc_day(n)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).date()


def as_count(value: Any) -> int | None:
    """A non-negative integer count; None when absent; ValueError when present but not a count."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            n = value
        else:
            d = Decimal(str(value).strip())
            if not d.is_finite() or d != d.to_integral_value():
                raise ValueError
            n = int(d)
        if n < 0:
            raise ValueError
    except (ValueError, ArithmeticError):
        raise ValueError(repr(value)) from None
    return n


def tags_json(tags: dict[str, Any] | None) -> str | None:
    clean = {}
    for k, v in (tags or {}).items():
        if k is None or v is None:
            continue
        key = str(k).strip().lower()
        val = v if isinstance(v, str) else json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        if key and val.strip() != "":
            clean[key] = val
    return json.dumps(dict(sorted(clean.items())), ensure_ascii=False) if clean else None


def _q(d: Decimal | None) -> str | None:
    return None if d is None else str(d.quantize(CENT, rounding=ROUND_HALF_EVEN))


def _plain(d: Decimal | None) -> str | None:
    if d is None:
        return None
    return format(d.normalize(), "f")


# ------------------------------------------------------------------ staged rows
@dataclass
class UsageRecord:
    """Usage of one model on one day by one attribution key, in our token types (already de-duplicated:
    `input` is uncached input whatever the provider's convention)."""

    file: str
    row: int
    day: date | None
    provider: str | None
    model_ref: str | None
    tokens: dict[str, int] = field(default_factory=dict)
    requests: int | None = None
    service_tier: str | None = None
    batch: bool = False
    context_window: str | None = None
    operation: str | None = None
    billing_account_id: str | None = None
    billing_account_name: str | None = None
    sub_account_id: str | None = None
    sub_account_name: str | None = None
    sub_account_type: str | None = None
    resource_id: str | None = None
    resource_type: str | None = None
    region: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    service_name: str | None = None
    quarantine: str | None = None

    def key(self) -> tuple:
        return (self.file, self.day, self.provider, self.model_ref, self.service_tier, self.batch, self.context_window,
                self.operation, self.billing_account_id, self.billing_account_name, self.sub_account_id,
                self.sub_account_name, self.sub_account_type, self.resource_id, self.resource_type, self.region,
                tags_json(self.tags), self.service_name)


class Aggregator:
    """Sums per-request records to day x model x attribution key; bad records pass through one by one."""

    def __init__(self) -> None:
        self._groups: dict[tuple, UsageRecord] = {}
        self.bad: list[UsageRecord] = []

    def add(self, rec: UsageRecord) -> None:
        if rec.quarantine:
            self.bad.append(rec)
            return
        k = rec.key()
        g = self._groups.get(k)
        if g is None:
            self._groups[k] = UsageRecord(**{**asdict(rec), "tokens": dict(rec.tokens)})
            return
        g.row = min(g.row, rec.row)
        for t, n in rec.tokens.items():
            g.tokens[t] = g.tokens.get(t, 0) + n
        if rec.requests is not None:
            g.requests = (g.requests or 0) + rec.requests

    def records(self) -> Iterator[UsageRecord]:
        yield from self._groups.values()
        yield from self.bad


def _base_row(file: str, row: int, ord_: int, basis: str, day: date | None, provider: str | None) -> dict:
    return {"_file": file, "_row": row, "_ord": ord_, "cost_basis": basis,
            "charge_day": day.isoformat() if day else None, "llm_provider": provider,
            "provider_name": PROVIDER_DISPLAY.get(provider or "", provider)}


def _sku_details(model, token_type: str | None, service_tier: str | None, batch: bool) -> str:
    info = TOKEN_TYPE_INFO.get(token_type or "")
    details = {
        "ModelDeveloper": model.developer if model else None,
        "ModelId": model.model_id if model else None,
        "ModelVersion": model.version if model else None,
        "TokenDirection": info[2] if info else None,
        "TokenCacheAction": info[3] if info else None,
        "x_CacheTtl": {"cache_write_5m": "5m", "cache_write_1h": "1h"}.get(token_type or ""),
        "x_ModelRef": model.raw if model else None,
        "x_FineTune": model.fine_tune if model else None,
        "x_ServiceTier": service_tier,
        "x_Batch": True if batch else None,
    }
    return json.dumps({k: v for k, v in details.items() if v not in (None, "")}, ensure_ascii=False)


def usage_rows(rec: UsageRecord, book: PriceBook, month: str) -> list[dict]:
    """One staged row per token type with a non-zero count (requests on the first one)."""
    start, end = month_bounds(month)
    reason = rec.quarantine
    if reason is None and rec.day is None:
        reason = "missing or unparseable timestamp"
    if reason is None and not (start <= rec.day < end):
        reason = f"usage on {rec.day.isoformat()} is outside billing month {month}"
    model = book.normalise(rec.provider, rec.model_ref)
    provider = model.provider
    common = {
        "publisher_name": model.developer or PROVIDER_DISPLAY.get(provider, provider),
        "invoice_issuer": PROVIDER_DISPLAY.get(provider, provider),
        "service_name": rec.service_name or _service_name(provider),
        "billing_account_id": rec.billing_account_id, "billing_account_name": rec.billing_account_name,
        "sub_account_id": rec.sub_account_id, "sub_account_name": rec.sub_account_name,
        "sub_account_type": rec.sub_account_type, "resource_id": rec.resource_id, "resource_type": rec.resource_type,
        "region_id": rec.region, "model_ref": rec.model_ref, "model_id": model.model_id, "operation": rec.operation,
        "service_tier": rec.service_tier, "tags": tags_json(rec.tags), "currency": "USD",
    }
    if reason is not None:
        return [{**_base_row(rec.file, rec.row, 0, "usage", rec.day, provider), **common, "quarantine": reason,
                 "requests": rec.requests}]
    types = [t for t in TOKEN_TYPES if rec.tokens.get(t)]
    if not types:
        if not rec.requests:
            return []
        types = ["input"]
    rows = []
    for i, t in enumerate(types):
        n = rec.tokens.get(t, 0)
        p = book.price(rec.provider, rec.model_ref, t, rec.day, rec.service_tier, rec.batch, rec.context_window)
        is_tokens = t != "web_search"
        meter = TOKEN_TYPE_INFO[t][4]
        rows.append({
            **_base_row(rec.file, rec.row, i, "usage", rec.day, provider), **common,
            "token_type": t, "tokens": n if is_tokens else None, "quantity": str(n),
            "consumed_unit": "Tokens" if is_tokens else "Requests",
            "pricing_quantity": _plain(Decimal(n) / p.per),
            "pricing_unit": "1000000 Tokens" if is_tokens else "1000 Requests",
            "requests": (rec.requests if i == 0 else 0) if rec.requests is not None else None,
            "description": f"{model.model_id} {meter}",
            "sku_id": f"{model.model_id}-{t}", "sku_meter": meter,
            "sku_price_id": f"{provider}:{model.lookup}:{t}:{rec.service_tier or 'default'}" + (":batch" if rec.batch else ""),
            "sku_price_details": _sku_details(model, t, rec.service_tier, rec.batch),
            "list_unit_price": _plain(p.list_unit_price), "contracted_unit_price": _plain(p.unit_price),
            "priced_cost": _q(p.cost(n)), "price_source": p.source, "quarantine": p.unpriced_reason,
        })
    return rows


def invoice_row(*, file: str, row: int, ord_: int = 0, day: date | None, month: str, provider: str,
                amount: Decimal | None, currency: str | None, book: PriceBook, model_ref: str | None = None,
                token_type: str | None = None, description: str | None = None, quantity: Decimal | None = None,
                unit: str | None = None, billing_account_id: str | None = None, billing_account_name: str | None = None,
                sub_account_id: str | None = None, sub_account_name: str | None = None,
                sub_account_type: str | None = None, service_tier: str | None = None, tags: dict | None = None,
                provider_line_item_id: str | None = None, quarantine: str | None = None) -> dict:
    """A billed line (Costs API / cost report): BilledCost = amount, x_CostBasis 'invoice'."""
    start, end = month_bounds(month)
    if quarantine is None and amount is None:
        quarantine = "missing or non-numeric amount"
    if quarantine is None and day is None:
        quarantine = "missing or unparseable bucket start"
    if quarantine is None and not (start <= day < end):
        quarantine = f"cost on {day.isoformat()} is outside billing month {month}"
    model = book.normalise(provider, model_ref) if model_ref else None
    return {
        **_base_row(file, row, ord_, "invoice", day, provider),
        "publisher_name": (model.developer if model else None) or PROVIDER_DISPLAY.get(provider, provider),
        "invoice_issuer": PROVIDER_DISPLAY.get(provider, provider), "service_name": _service_name(provider),
        "billing_account_id": billing_account_id, "billing_account_name": billing_account_name,
        "sub_account_id": sub_account_id, "sub_account_name": sub_account_name, "sub_account_type": sub_account_type,
        "model_ref": model_ref, "model_id": model.model_id if model else None, "token_type": token_type,
        "quantity": _plain(quantity), "consumed_unit": unit, "service_tier": service_tier,
        "tags": tags_json(tags), "billed_cost": _q(amount), "currency": (currency or "USD").upper(),
        "description": description, "provider_line_item_id": provider_line_item_id,
        "sku_id": f"{model.model_id}-{token_type}" if model and token_type else None,
        "sku_meter": TOKEN_TYPE_INFO[token_type][4] if token_type in TOKEN_TYPE_INFO else description,
        "sku_price_details": _sku_details(model, token_type, service_tier, False) if model else None,
        "quarantine": quarantine,
    }


def _service_name(provider: str | None) -> str:
    return {"openai": "OpenAI API", "anthropic": "Claude API", "aws": "Amazon Bedrock",
            "azure": "Azure OpenAI Service", "google": "Vertex AI"}.get(provider or "", f"{provider} API")


# ------------------------------------------------------------------ connector base
class LlmConnector(Connector):
    """Base of the LLM kinds: subclasses yield staged rows; this registers them as `stg_llm` with prices."""

    line_items_sql = "llm_usage.sql"

    def price_book(self) -> PriceBook:
        try:
            return PriceBook.from_options(self.source.options)
        except PriceConfigError as exc:
            raise SourceError(f"{self.source.name}: {exc}") from None

    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        raise NotImplementedError

    def stage_sql(self, con, delivery: Delivery) -> str:
        book = self.price_book()
        rows = list(self.staged_rows(delivery, book))
        table = pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)
        con.register("stg_llm_arrow", table)
        con.execute("CREATE OR REPLACE TEMP TABLE stg_llm AS SELECT * FROM stg_llm_arrow")
        con.unregister("stg_llm_arrow")
        self.unpriced = book.unpriced_report()
        return "stg_llm"

    def file_select(self, con, key: str, path: Path, idx: int) -> str:
        # Called by the ledger only to locate an unreadable file after a failed build; staging is in Python.
        return "SELECT 1"


def read_delivery_json(key: str, path: Path) -> Any:
    try:
        return json.loads(path.read_bytes(), parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{key} is not valid JSON ({exc})", file=key) from None


# ------------------------------------------------------------------ landing API pages
def land_pages(connector: Connector, month: str, raw_root: Path, pages: dict[str, bytes], layout: str) -> Delivery:
    """Write fetched pages (key -> bytes as received) as the month's delivery; same content = same delivery."""
    from apportion.connectors.cloudfiles import land_blobs

    return land_blobs(connector, month, raw_root, pages, layout, prefix="api")


class HttpApi:
    """GET JSON pages with retries. 429 waits Retry-After; 5xx and network errors back off exponentially.

    The secret headers are never put into a message; any text that might echo them is scrubbed.
    """

    def __init__(self, base_url: str, headers: dict[str, str], source: str, *, max_retries: int = 5,
                 backoff: float = 1.0, max_wait: float = 120.0, timeout: float = 60.0, secrets: tuple[str, ...] = ()):
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.source = source
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.timeout = float(timeout)
        self.secrets = tuple(s for s in secrets if s)
        self.sleep = time.sleep
        self.is_file = self.base_url.startswith("file://")

    def _scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def _scrub_bytes(self, body: bytes) -> bytes:
        """A page that echoes the key (a proxy's debug page, a misbehaving server) lands without it."""
        for s in self.secrets:
            body = body.replace(s.encode(), b"***")
        return body

    def get(self, path: str, params: list[tuple[str, str]], file_key: str) -> bytes:
        """The body of one page, as received. `file_key` names the page in a file:// folder."""
        if self.is_file:
            root = Path(urllib.parse.unquote(urllib.parse.urlparse(self.base_url).path))
            page = root / path.strip("/") / (safe_dirname(file_key) + ".json")
            if not page.is_file():
                raise SourceError(f"{self.source}: page {path} {file_key} not found under {root}", file=str(page))
            return page.read_bytes()
        query = urllib.parse.urlencode(params)
        url = f"{self.base_url}{path}?{query}"
        shown = f"GET {path}?{query}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * (2 ** attempt)
            try:
                req = urllib.request.Request(url, headers={**self.headers, "Accept": "application/json",
                                                           "User-Agent": "apportion"})
                with open_url(req, timeout=self.timeout) as resp:
                    return self._scrub_bytes(resp.read())
            except urllib.error.HTTPError as exc:
                status = exc.code
                body = exc.read()[:300].decode("utf-8", "replace") if exc.fp else ""
                last = f"HTTP {status}"
                if status == 429:
                    wait = _retry_after(exc.headers.get("Retry-After"), wait)
                elif status < 500 and status not in (408, 409):
                    detail = self._scrub(" ".join(body.split()))[:200]
                    raise SourceError(f"{self.source}: {shown} failed: HTTP {status}"
                                      + (f" ({detail})" if detail else "")) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = self._scrub(type(exc).__name__ + ": " + str(getattr(exc, "reason", exc)))[:200]
            if attempt < self.max_retries:
                self.sleep(min(wait, self.max_wait))
        raise SourceError(f"{self.source}: {shown} did not arrive after {self.max_retries + 1} attempts "
                          f"(last: {last}; the source's max_retries option allows {self.max_retries} retries); "
                          "the month is not built")


def _retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return default


class ApiConnector(LlmConnector):
    """An admin usage/cost API: months are configured, landing fetches every page of the month."""

    key_env_default = ""
    default_base_url = ""

    def months(self) -> list[str]:
        return configured_months(self.source.options)

    def api(self) -> HttpApi:
        opts = self.source.options
        base = self.base_url()
        secret = ""
        if not base.startswith("file://"):
            env = str(opts.get("key_env") or self.key_env_default)
            secret = os.environ.get(env, "")
            if not secret:
                raise SourceError(f"{self.source.name}: environment variable {env} is not set "
                                  "(the admin key comes from the environment, never from the config)")
        return HttpApi(base, self.auth_headers(secret) if secret else {}, self.source.name,
                       max_retries=opts.get("max_retries", 5), backoff=opts.get("retry_backoff", 1.0),
                       max_wait=opts.get("max_retry_wait", 120.0), timeout=opts.get("timeout", 60.0),
                       secrets=(secret,))

    def base_url(self) -> str:
        """`base_url` option; else an http(s) `uri`; else `uri` is a local folder of recorded pages (file://)."""
        if self.source.options.get("base_url"):
            return str(self.source.options["base_url"])
        uri = self.source.uri or ""
        scheme = urllib.parse.urlparse(uri).scheme
        if scheme in ("http", "https", "file"):
            return uri
        if scheme in ("", None) or len(scheme) == 1:
            return Path(uri).resolve().as_uri()
        return self.default_base_url

    def auth_headers(self, secret: str) -> dict[str, str]:
        raise NotImplementedError

    def fetch(self, month: str) -> dict[str, bytes]:
        raise NotImplementedError

    def land(self, month: str, raw_root: Path) -> Delivery:
        return land_pages(self, month, raw_root, self.fetch(month), layout=f"{self.kind}-api")

    def paginate(self, api: HttpApi, path: str, params: list[tuple[str, str]], first_key: str, prefix: str,
                 max_pages: int = 10_000) -> dict[str, bytes]:
        """Follow `next_page` until `has_more` is false; pages land as `<prefix>/page-NNNN.json`."""
        pages: dict[str, bytes] = {}
        cursor = None
        for n in range(1, max_pages + 1):
            page_params = params + ([("page", cursor)] if cursor else [])
            body = api.get(path, page_params, cursor or first_key)
            key = f"{prefix}/page-{n:04d}.json"
            try:
                doc = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SourceError(f"{self.source.name}: {path} page {n} is not JSON ({exc})", file=key) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
                raise SourceError(f"{self.source.name}: {path} page {n} has no 'data' list", file=key)
            pages[key] = body
            cursor = doc.get("next_page")
            if not doc.get("has_more") or not cursor:
                return pages
        raise SourceError(f"{self.source.name}: {path} returned more than {max_pages} pages")
