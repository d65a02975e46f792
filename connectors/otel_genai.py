"""OpenTelemetry GenAI spans as JSON lines (`kind: otel_genai`).

`uri` is a folder (s3://, file:// or a path) of `*.jsonl`, `*.json` or `*.jsonl.gz` files. Two line
shapes are read:

* OTLP/JSON as the Collector's file exporter writes it: one `{"resourceSpans": [...]}` per line, attributes
  as `[{"key": ..., "value": {"stringValue" | "intValue" | ...}}]`, times in `startTimeUnixNano`;
* one flat span per line (the SDK's `span.to_json()` shape): `{"name", "start_time", "attributes": {...},
  "resource": {"attributes": {...}}}`.

A span counts when it carries token usage: `gen_ai.usage.input_tokens` / `output_tokens` (or the
deprecated `gen_ai.usage.prompt_tokens` / `completion_tokens`), `gen_ai.usage.cache_read.input_tokens`,
`gen_ai.usage.cache_creation.input_tokens` (and their older `*_input_tokens` spellings). The model is
`gen_ai.response.model`, else `gen_ai.request.model`; the provider `gen_ai.provider.name` (or the deprecated
`gen_ai.system`). Input tokens follow the semantic conventions (they include cached tokens) unless the
cache counts exceed them. Tags = resource attributes plus the span attributes named in `tag_attributes`.
Spans are summed per day x model x tags. Options: tag_attributes, operations (only these
`gen_ai.operation.name` values), price_overrides, deployments, inference_profiles.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator

from apportion.connectors.base import Delivery, DeliveryPlan, SourceError
from apportion.connectors.llm import Aggregator, LlmConnector, UsageRecord, as_count, month_bounds, usage_rows, utc_day
from apportion.models.prices import PriceBook

SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
PROVIDERS = {
    "openai": "openai", "anthropic": "anthropic", "aws.bedrock": "aws", "aws_bedrock": "aws", "bedrock": "aws",
    "azure.ai.openai": "azure", "az.ai.openai": "azure", "azure.ai.inference": "azure", "az.ai.inference": "azure",
    "gcp.vertex_ai": "google", "gcp.gemini": "google", "gcp.gen_ai": "google", "vertex_ai": "google",
    "gemini": "google", "mistral_ai": "mistral", "cohere": "cohere", "groq": "groq", "deepseek": "deepseek",
    "x_ai": "x-ai", "xai": "x-ai",
}
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
              "gen_ai.usage.input_tokens.cached")
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")


def _any_value(v: Any) -> Any:
    """OTLP/JSON AnyValue -> Python."""
    if not isinstance(v, dict):
        return v
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"]) if str(v["intValue"]).lstrip("-").isdigit() else v["intValue"]
    if "arrayValue" in v:
        return [_any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv.get("key"): _any_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    return None


def _attrs(items: Any) -> dict:
    if isinstance(items, dict):
        return items
    if isinstance(items, list):
        return {kv.get("key"): _any_value(kv.get("value")) for kv in items if isinstance(kv, dict)}
    return {}


def _first(attrs: dict, names: tuple[str, ...]):
    for n in names:
        if attrs.get(n) is not None:
            return attrs[n]
    return None


class OtelGenAIConnector(LlmConnector):
    kind = "otel_genai"

    def _files(self) -> list:
        objects, _ = self.store.list("")
        return [o for o in objects if o.key.lower().endswith(SUFFIXES)]

    def months(self) -> list[str]:
        from apportion.connectors.llm import configured_months

        return configured_months(self.source.options)

    def plan(self, month: str) -> DeliveryPlan:
        files = self._files()
        if not files:
            raise SourceError(f"no span files (*.jsonl, *.json, *.jsonl.gz) under {self.source.uri}")
        h = hashlib.sha1("".join(f"{o.key}\0{o.etag}\0" for o in sorted(files, key=lambda o: o.key)).encode())
        return DeliveryPlan(month, "spans-" + h.hexdigest()[:16], files, None, "otel-jsonl")

    def staged_rows(self, delivery: Delivery, book: PriceBook) -> Iterable[dict]:
        start, end = month_bounds(delivery.month)
        agg = Aggregator()
        for key, path in sorted(delivery.files):
            for rec in self._spans(key, path):
                if rec.day is not None and not (start <= rec.day < end) and rec.quarantine is None:
                    continue
                agg.add(rec)
        for rec in agg.records():
            yield from usage_rows(rec, book, delivery.month)

    def _lines(self, key: str, path: Path) -> Iterator[tuple[int, str]]:
        try:
            raw = path.read_bytes()
            if path.name.lower().endswith(".gz"):
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8-sig")
        except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
            raise SourceError(f"cannot read {key}: {exc}", file=key) from None
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield i, line

    def _spans(self, key: str, path: Path) -> Iterator[UsageRecord]:
        for row_no, line in self._lines(key, path):
            try:
                doc = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                yield UsageRecord(file=key, row=row_no, day=None, provider=None, model_ref=None,
                                  quarantine=f"malformed JSON line ({exc.msg})")
                continue
            if not isinstance(doc, dict):
                yield UsageRecord(file=key, row=row_no, day=None, provider=None, model_ref=None,
                                  quarantine="line is not a JSON object")
                continue
            if "resourceSpans" in doc:
                for rs in doc.get("resourceSpans") or []:
                    resource = _attrs(((rs or {}).get("resource") or {}).get("attributes"))
                    for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                        for span in (ss or {}).get("spans") or []:
                            rec = self._record(key, row_no, _attrs(span.get("attributes")), resource,
                                               span.get("startTimeUnixNano"))
                            if rec is not None:
                                yield rec
            else:
                resource = _attrs((doc.get("resource") or {}).get("attributes"))
                rec = self._record(key, row_no, _attrs(doc.get("attributes")), resource,
                                   doc.get("start_time") or doc.get("startTime") or doc.get("startTimeUnixNano"))
                if rec is not None:
                    yield rec

    def _record(self, key, row_no, attrs: dict, resource: dict, start) -> UsageRecord | None:
        usage_keys = INPUT + OUTPUT + CACHE_READ + CACHE_WRITE
        if not any(attrs.get(k) is not None for k in usage_keys):
            return None  # not a model call (or a parent span without usage)
        ops = self.source.options.get("operations")
        if ops and attrs.get("gen_ai.operation.name") not in ops:
            return None
        provider_raw = str(_first(attrs, ("gen_ai.provider.name", "gen_ai.system")) or "").lower()
        tags = {str(k): v for k, v in resource.items() if isinstance(v, (str, int, float, bool, Decimal))}
        for name in self.source.options.get("tag_attributes") or []:
            if attrs.get(name) is not None:
                tags[name] = attrs[name]
        rec = UsageRecord(file=key, row=row_no, day=utc_day(start), provider=PROVIDERS.get(provider_raw),
                          model_ref=_first(attrs, ("gen_ai.response.model", "gen_ai.request.model")), requests=1,
                          operation=attrs.get("gen_ai.operation.name"),
                          service_tier=_first(attrs, ("gen_ai.openai.response.service_tier",
                                                      "gen_ai.openai.request.service_tier")),
                          sub_account_id=str(resource.get("service.name") or "unknown-service"),
                          sub_account_type="Service", billing_account_id=provider_raw or None,
                          tags={k: str(v) for k, v in tags.items()})
        if provider_raw and rec.provider is None:
            rec.provider = provider_raw
        try:
            total_in = as_count(_first(attrs, INPUT)) or 0
            cache_read = as_count(_first(attrs, CACHE_READ)) or 0
            cache_write = as_count(_first(attrs, CACHE_WRITE)) or 0
            output = as_count(_first(attrs, OUTPUT)) or 0
        except ValueError as exc:
            rec.quarantine = f"invalid token count {exc}"
            return rec
        from apportion.models.prices import split_input

        rec.tokens = {"input": split_input(total_in, cache_read, cache_write, inclusive=True),
                      "cache_read": cache_read, "cache_write_5m": cache_write, "output": output}
        if not rec.model_ref:
            rec.quarantine = "span has token usage but no gen_ai.request.model / gen_ai.response.model"
        return rec
