"""Anthropic Admin API usage and cost reports (`kind: anthropic`).

Landing pulls, for the billing month (daily buckets, RFC 3339 `starting_at`/`ending_at` at UTC midnight):

* `GET /v1/organizations/usage_report/messages` grouped by workspace, API key, model, service tier and
  context window: uncached input, cache creation (5m / 1h), cache read, output tokens, web searches;
* `GET /v1/organizations/cost_report` grouped by workspace and description: the billed dollars.
  Amounts are decimal strings in CENTS ("123.45" = $1.2345) and are divided by 100 exactly.

Pages follow `next_page` and land as received under `usage_messages/` and `cost_report/`. Headers:
`x-api-key` from `ANTHROPIC_ADMIN_KEY` (or the `key_env` option) and `anthropic-version: 2023-06-01`.

Anthropic's `uncached_input_tokens` EXCLUDE cache reads and cache creation, so they are priced as they
are (the opposite of OpenAI). The usage report carries no request counts: x_Requests is null.
A null workspace is the Default workspace; a null API key is Console/Workbench usage.

Options: base_url (default https://api.anthropic.com; `file:///dir` for recorded pages), key_env,
organization_id, workspace_names (id -> name), tags (`{workspace_id|api_key_id: {id: {tag: value}}}`),
start_month, page_days, max_retries, retry_backoff, max_retry_wait, timeout, price_overrides.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
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
from apportion.models.prices import PriceBook

USAGE_GROUP_BY = ["workspace_id", "api_key_id", "model", "service_tier", "context_window"]
COST_TOKEN_TYPES = {
    "uncached_input_tokens": "input", "output_tokens": "output", "cache_read_input_tokens": "cache_read",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
}
DEFAULT_WORKSPACE = "default"


class AnthropicConnector(ApiConnector):
    kind = "anthropic"
    key_env_default = "ANTHROPIC_ADMIN_KEY"
    default_base_url = "https://api.anthropic.com"

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"x-api-key": secret, "anthropic-version": "2023-06-01"}

    def fetch(self, month: str) -> dict[str, bytes]:
        api = self.api()
        start, end = month_bounds(month)
        from datetime import datetime, timezone

        tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
        end = min(end, max(tomorrow, start + timedelta(days=1)))
        starting_at, ending_at = f"{start.isoformat()}T00:00:00Z", f"{end.isoformat()}T00:00:00Z"
        limit = str(min(int(self.source.options.get("page_days", 31)), 31))
        base = [("starting_at", starting_at), ("ending_at", ending_at), ("bucket_width", "1d"), ("limit", limit)]
        pages = self.paginate(api, "/v1/organizations/usage_report/messages",
                              base + [("group_by[]", g) for g in USAGE_GROUP_BY], starting_at, "usage_messages")
        pages.update(self.paginate(api, "/v1/organizations/cost_report",
                                   base + [("group_by[]", "workspace_id"), ("group_by[]", "description")],
                                   starting_at, "cost_report"))
        return pages

    # ------------------------------------------------------------------ staging
    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        for key, path in sorted(delivery.files):
            doc = read_delivery_json(key, path)
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
                raise SourceError(f"{key}: not an Anthropic report page (no 'data' list)", file=key)
            report = key.split("/", 1)[0]
            row = 0
            for bucket in doc["data"]:
                if not isinstance(bucket, dict):
                    raise SourceError(f"{key}: a bucket is not an object", file=key)
                day = utc_day(bucket.get("starting_at"))
                for result in bucket.get("results") or []:
                    row += 1
                    if report == "cost_report":
                        yield self._cost_row(key, row, day, result, delivery.month, book)
                    else:
                        yield from usage_rows(self._usage(key, row, day, result), book, delivery.month)

    def _attribution(self, r: dict) -> dict:
        opts = self.source.options
        workspace = r.get("workspace_id") or DEFAULT_WORKSPACE
        names = opts.get("workspace_names") or {}
        tag_maps = opts.get("tags") or {}
        tags = {"workspace_id": workspace}
        tags.update((tag_maps.get("workspace_id") or {}).get(workspace) or {})
        if r.get("api_key_id"):
            tags["api_key_id"] = r["api_key_id"]
            tags.update((tag_maps.get("api_key_id") or {}).get(r["api_key_id"]) or {})
        for field in ("service_tier", "context_window", "inference_geo"):
            if r.get(field):
                tags[field] = r[field]
        return {"billing_account_id": opts.get("organization_id") or "anthropic", "sub_account_id": workspace,
                "sub_account_name": names.get(workspace, "Default" if workspace == DEFAULT_WORKSPACE else None),
                "sub_account_type": "Workspace", "tags": tags}

    def _usage(self, key, row, day, r: dict) -> UsageRecord:
        rec = UsageRecord(file=key, row=row, day=day, provider="anthropic", model_ref=r.get("model"),
                          operation="messages", service_tier=r.get("service_tier"),
                          batch=(r.get("service_tier") or "") == "batch", context_window=r.get("context_window"),
                          resource_id=r.get("api_key_id"), resource_type="API Key" if r.get("api_key_id") else None,
                          **self._attribution(r))
        try:
            creation = r.get("cache_creation") or {}
            if not isinstance(creation, dict):
                raise ValueError(repr(creation))
            tool = r.get("server_tool_use") or {}
            rec.tokens = {
                "input": as_count(r.get("uncached_input_tokens")) or 0,
                "cache_write_5m": as_count(creation.get("ephemeral_5m_input_tokens")) or 0,
                "cache_write_1h": as_count(creation.get("ephemeral_1h_input_tokens")) or 0,
                "cache_read": as_count(r.get("cache_read_input_tokens")) or 0,
                "output": as_count(r.get("output_tokens")) or 0,
                "web_search": as_count(tool.get("web_search_requests") if isinstance(tool, dict) else None) or 0,
            }
        except (ValueError, ArithmeticError) as exc:
            rec.quarantine = f"invalid token count {exc}"
        return rec

    def _cost_row(self, key, row, day, r: dict, month: str, book: PriceBook) -> dict:
        amount = None
        raw = r.get("amount")
        if isinstance(raw, dict):  # tolerate {"value": ..., "currency": ...}
            raw = raw.get("value")
        if raw is not None and not isinstance(raw, bool):
            try:
                cents = Decimal(str(raw).strip())
                amount = cents / 100 if cents.is_finite() else None
            except InvalidOperation:
                amount = None
        cost_type = r.get("cost_type")
        token_type = COST_TOKEN_TYPES.get(r.get("token_type") or "")
        if cost_type == "web_search":
            token_type = "web_search"
        attribution = self._attribution(r)
        return invoice_row(
            file=key, row=row, day=day, month=month, provider="anthropic", amount=amount,
            currency=r.get("currency") or "USD", book=book, model_ref=r.get("model"), token_type=token_type,
            description=r.get("description") or cost_type or "Claude API usage",
            service_tier=r.get("service_tier"), provider_line_item_id=r.get("description"), **attribution,
        )
