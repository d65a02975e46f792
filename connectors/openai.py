"""OpenAI organisation Usage API and Costs API (`kind: openai`).

Landing pulls, for the billing month (UTC-midnight aligned `start_time`/`end_time`, daily buckets):

* `GET /v1/organization/usage/<endpoint>` for each of `endpoints` (default completions, embeddings),
  grouped by project, API key, model (+ batch and service tier for completions);
* `GET /v1/organization/costs` grouped by project and line item (the billed dollars).

Every page is followed through `next_page` and lands as received under `usage_<endpoint>/` and `costs/`.
The admin key comes from `OPENAI_ADMIN_KEY` (or the variable named by the `key_env` option).

Staging: usage results become usage rows (priced per token: OpenAI's `input_tokens` INCLUDES cached
and cache-write tokens, so uncached input = input - cached - cache writes; audio tokens are separate
token types), cost results become invoice rows (`amount.value` read as an exact decimal; the line item
"gpt-4o-2024-08-06, input" gives model and token direction). Unknown fields are ignored.

Options: base_url (default https://api.openai.com; `file:///dir` serves recorded pages from a folder),
key_env, endpoints, organization_id (BillingAccountId when the pages do not carry one), project_names
(project id -> name), tags (`{project_id|api_key_id|user_id: {id: {tag: value}}}`), start_month,
page_days (buckets per page, default 31), max_retries, retry_backoff, max_retry_wait, timeout,
price_overrides, deployments.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Iterable

from apportion.connectors.base import Delivery, SourceError
from apportion.connectors.llm import (
    ApiConnector,
    UsageRecord,
    as_count,
    invoice_row,
    month_bounds,
    read_delivery_json,
    usage_rows,
    utc_day,
)
from apportion.models.prices import PriceBook, split_input

USAGE_GROUP_BY = {
    "completions": ["project_id", "api_key_id", "model", "batch", "service_tier"],
    "embeddings": ["project_id", "api_key_id", "model"],
    "moderations": ["project_id", "api_key_id", "model"],
}
LINE_ITEM = re.compile(r"^(?:(?P<product>.*?)\s*\|\s*)?(?P<model>[^,|]+?),\s*(?P<direction>[a-z ]+)$", re.I)
DIRECTIONS = {"input": "input", "output": "output", "cached input": "cache_read", "input cached": "cache_read",
              "cache read": "cache_read", "cached_input": "cache_read", "cache write": "cache_write_5m",
              "audio input": "input_audio", "audio output": "output_audio"}


def _unix(d) -> int:
    return int(datetime.combine(d, time(0), tzinfo=timezone.utc).timestamp())


class OpenAIConnector(ApiConnector):
    kind = "openai"
    key_env_default = "OPENAI_ADMIN_KEY"
    default_base_url = "https://api.openai.com"

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def _window(self, month: str) -> tuple[int, int]:
        start, end = month_bounds(month)
        tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
        return _unix(start), _unix(min(end, max(tomorrow, start + timedelta(days=1))))

    def fetch(self, month: str) -> dict[str, bytes]:
        api = self.api()
        opts = self.source.options
        start, end = self._window(month)
        limit = str(int(opts.get("page_days", 31)))
        pages: dict[str, bytes] = {}
        for endpoint in opts.get("endpoints") or ["completions", "embeddings"]:
            if endpoint not in USAGE_GROUP_BY:
                raise SourceError(f"{self.source.name}: unsupported usage endpoint {endpoint!r} "
                                  f"(supported: {', '.join(USAGE_GROUP_BY)})")
            params = [("start_time", str(start)), ("end_time", str(end)), ("bucket_width", "1d"), ("limit", limit)]
            params += [("group_by", g) for g in USAGE_GROUP_BY[endpoint]]
            pages.update(self.paginate(api, f"/v1/organization/usage/{endpoint}", params, str(start),
                                       f"usage_{endpoint}"))
        params = [("start_time", str(start)), ("end_time", str(end)), ("bucket_width", "1d"),
                  ("limit", str(min(int(opts.get("page_days", 31)), 180))),
                  ("group_by", "project_id"), ("group_by", "line_item")]
        pages.update(self.paginate(api, "/v1/organization/costs", params, str(start), "costs"))
        return pages

    # ------------------------------------------------------------------ staging
    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        opts = self.source.options
        names = opts.get("project_names") or {}
        tag_maps = opts.get("tags") or {}
        docs = []
        for key, path in sorted(delivery.files):
            doc = read_delivery_json(key, path)
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
                raise SourceError(f"{key}: not an OpenAI page (no 'data' list)", file=key)
            docs.append((key, doc))
        # Usage results do not say which organisation they belong to; cost results do (undocumented field).
        self._org = opts.get("organization_id") or next(
            (r["organization_id"] for _, doc in docs for b in doc["data"] if isinstance(b, dict)
             for r in b.get("results") or [] if isinstance(r, dict) and r.get("organization_id")), "openai")
        for key, doc in docs:
            endpoint = key.split("/", 1)[0]
            row = 0
            for bucket in doc["data"]:
                if not isinstance(bucket, dict):
                    raise SourceError(f"{key}: a bucket is not an object", file=key)
                day = utc_day(bucket.get("start_time"))
                for result in bucket.get("results") or []:
                    row += 1
                    if endpoint == "costs":
                        yield self._cost_row(key, row, day, result, delivery.month, book, names, tag_maps)
                    else:
                        yield from usage_rows(self._usage(key, row, day, result, endpoint, names, tag_maps),
                                              book, delivery.month)

    def _tags(self, result: dict, tag_maps: dict) -> dict:
        tags = {}
        for field in ("project_id", "api_key_id", "user_id"):
            value = result.get(field)
            if value:
                tags[field] = value
                tags.update((tag_maps.get(field) or {}).get(value) or {})
        for field in ("service_tier", "api_source"):
            if result.get(field):
                tags[field] = result[field]
        return tags

    def _usage(self, key, row, day, r: dict, endpoint: str, names: dict, tag_maps: dict) -> UsageRecord:
        org = r.get("organization_id") or self._org
        rec = UsageRecord(file=key, row=row, day=day, provider="openai", model_ref=r.get("model"),
                          operation=endpoint.removeprefix("usage_"), billing_account_id=org,
                          sub_account_id=r.get("project_id") or "default-project",
                          sub_account_name=names.get(r.get("project_id") or "", None),
                          sub_account_type="Project", resource_id=r.get("api_key_id"),
                          resource_type="API Key" if r.get("api_key_id") else None,
                          service_tier=r.get("service_tier"), batch=bool(r.get("batch")),
                          tags=self._tags(r, tag_maps))
        try:
            total_in = as_count(r.get("input_tokens")) or 0
            cached = as_count(r.get("input_cached_tokens")) or 0
            writes = as_count(r.get("input_cache_write_tokens"))
            if writes is None:
                writes = (as_count(r.get("input_cache_write_30m_tokens")) or 0) + (
                    as_count(r.get("input_cache_write_12h_tokens")) or 0)
            audio_in = max(0, (as_count(r.get("input_audio_tokens")) or 0) - (as_count(r.get("input_cached_audio_tokens")) or 0))
            out = as_count(r.get("output_tokens")) or 0
            audio_out = as_count(r.get("output_audio_tokens")) or 0
            rec.requests = as_count(r.get("num_model_requests"))
        except (ValueError, ArithmeticError) as exc:
            rec.quarantine = f"invalid token count {exc}"
            return rec
        uncached = split_input(total_in, cached, writes, inclusive=True)
        rec.tokens = {"input": max(0, uncached - audio_in), "input_audio": audio_in, "cache_read": cached,
                      "cache_write_5m": writes, "output": max(0, out - audio_out) if audio_out <= out else out,
                      "output_audio": audio_out}
        return rec

    def _cost_row(self, key, row, day, r: dict, month: str, book: PriceBook, names: dict, tag_maps: dict) -> dict:
        amount_obj = r.get("amount") or {}
        value = amount_obj.get("value") if isinstance(amount_obj, dict) else None
        try:
            amount = Decimal(str(value)) if value is not None and not isinstance(value, bool) else None
            if amount is not None and not amount.is_finite():
                amount = None
        except ArithmeticError:
            amount = None
        line_item = r.get("line_item")
        model_ref = token_type = None
        m = LINE_ITEM.match(line_item or "")
        if m and m.group("direction").strip().lower() in DIRECTIONS:
            model_ref = m.group("model").strip()
            token_type = DIRECTIONS[m.group("direction").strip().lower()]
            if model_ref.startswith("ft-"):  # costs spell fine-tunes "ft-gpt-4o-2024-08-06"
                model_ref = "ft:" + model_ref[3:]
        quantity = r.get("quantity")
        project = r.get("project_id")
        return invoice_row(
            file=key, row=row, day=day, month=month, provider="openai", amount=amount,
            currency=amount_obj.get("currency") if isinstance(amount_obj, dict) else None, book=book,
            model_ref=model_ref, token_type=token_type, description=line_item or "OpenAI usage",
            quantity=Decimal(str(quantity)) if isinstance(quantity, (int, Decimal)) else None,
            unit=r.get("quantity_unit"),
            billing_account_id=r.get("organization_id") or self._org,
            sub_account_id=project or "default-project", sub_account_name=names.get(project or "", None),
            sub_account_type="Project", tags=self._tags(r, tag_maps), provider_line_item_id=line_item,
        )
