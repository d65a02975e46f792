"""`kind: otel_genai`: OpenTelemetry GenAI spans as JSONL (OTLP/JSON and flat spans, current and deprecated names)."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

from tests.llm_helpers import build, line_items, make_config, quarantined


def kv(d):
    out = []
    for k, v in d.items():
        if isinstance(v, bool):
            out.append({"key": k, "value": {"boolValue": v}})
        elif isinstance(v, int):
            out.append({"key": k, "value": {"intValue": str(v)}})
        else:
            out.append({"key": k, "value": {"stringValue": v}})
    return out


def otlp_line(resource, spans):
    return json.dumps({"resourceSpans": [{"resource": {"attributes": kv(resource)}, "scopeSpans": [{
        "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
        "spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"eee19b7ec3c1b17{i}",
                   "name": f"chat {a.get('gen_ai.request.model')}", "kind": 3,
                   "startTimeUnixNano": str(t), "endTimeUnixNano": str(t + 10**9), "attributes": kv(a)}
                  for i, (t, a) in enumerate(spans)]}]}]})


T = 1_791_000_000 * 10**9  # 2026-10-03T...Z in ns


def test_spans_with_current_and_deprecated_attribute_names(tmp_path):
    resource = {"service.name": "support-bot", "deployment.environment": "prod", "team": "finance-apps"}
    lines = [
        otlp_line(resource, [
            (T, {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                 "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                 "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
                 "gen_ai.usage.cache_read.input_tokens": 200, "feature": "refunds"}),
            (T + 5, {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-2024-08-06",
                     "gen_ai.usage.prompt_tokens": 800, "gen_ai.usage.completion_tokens": 100}),
            (T + 9, {"http.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"}),  # not a model call
        ]),
        json.dumps({"name": "chat claude", "context": {"trace_id": "0x1", "span_id": "0x2"},
                    "start_time": "2026-10-04T08:00:00.123456Z", "end_time": "2026-10-04T08:00:02Z",
                    "attributes": {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
                                   "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 50,
                                   "gen_ai.usage.cache_read_input_tokens": 900,
                                   "gen_ai.usage.cache_creation_input_tokens": 300},
                    "resource": {"attributes": {"service.name": "research-agent", "team": "research"}}}),
        json.dumps({"name": "chat ?", "start_time": "2026-10-04T08:00:00Z",
                    "attributes": {"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 5}}),
        json.dumps({"name": "chat", "start_time": "2026-10-04T08:00:00Z",
                    "attributes": {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": "five"}}),
        "not json at all",
        json.dumps({"name": "old", "start_time": "2026-09-04T08:00:00Z",
                    "attributes": {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1}}),
    ]
    folder = tmp_path / "spans"
    folder.mkdir()
    (folder / "traces-2026-10.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    cfg = make_config(tmp_path, [{"name": "spans", "kind": "otel_genai", "uri": "spans",
                                  "options": {"start_month": "2026-09", "tag_attributes": ["feature"]}}])
    _, stats, _ = build(cfg, "spans")
    rows = line_items(cfg, "spans")
    gpt = {(json.loads(r["Tags"]).get("feature"), r["x_TokenType"]): r for r in rows if r["x_ModelId"] == "gpt-4o"}
    # input_tokens include cached ones; the deprecated prompt_tokens name is read the same way
    assert gpt[("refunds", "input")]["x_Tokens"] == 1000 and gpt[("refunds", "cache_read")]["x_Tokens"] == 200
    assert gpt[(None, "input")]["x_Tokens"] == 800 and gpt[(None, "output")]["x_Tokens"] == 100
    r = gpt[("refunds", "input")]
    assert (r["SubAccountId"], r["ProviderName"], r["x_ModelRef"], r["x_PricedCost"]) == (
        "support-bot", "OpenAI", "gpt-4o-2024-08-06", Decimal("0.0025"))
    assert json.loads(r["Tags"])["team"] == "finance-apps"
    # Anthropic instrumentation reporting input EXCLUSIVE of cache tokens (cache > input): kept as uncached
    claude = {r["x_TokenType"]: r["x_Tokens"] for r in rows if r["x_ModelId"] == "claude-haiku-4-5"}
    assert claude == {"input": 100, "cache_read": 900, "cache_write_5m": 300, "output": 50}
    reasons = sorted(q["reason"] for q in quarantined(cfg, "spans"))
    assert reasons == ["invalid token count 'five'", "malformed JSON line (Expecting value)",
                       "span has token usage but no gen_ai.request.model / gen_ai.response.model"]
    assert stats.quarantined_rows == 3 and sum(r["x_Requests"] or 0 for r in rows) == 3
