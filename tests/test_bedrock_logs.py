"""`kind: bedrock_logs`: Bedrock model-invocation logs (JSON / JSON.gz) in S3, via the moto S3 server."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal

from apportion import db, steps
from tests.llm_helpers import MONTH, build, line_items, make_config, quarantined

ACCOUNT = "123456789012"
PREFIX = f"logs/AWSLogs/{ACCOUNT}/BedrockModelInvocationLogs/us-east-1"
APP_PROFILE = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:application-inference-profile/k3x9search"


def invocation(ts, model, tokens_in, tokens_out, *, role="SearchService", session="i-0abc", cache_read=None,
               cache_write=None, meta=None, one_hour=None, operation="Converse", error=None):
    inp = {"inputContentType": "application/json", "inputBodyJson": {"messages": [{"role": "user",
                                                                                  "content": [{"text": "hi"}]}]},
           "inputTokenCount": tokens_in}
    if cache_read is not None:
        inp["cacheReadInputTokenCount"] = cache_read
    if cache_write is not None:
        inp["cacheWriteInputTokenCount"] = cache_write
    out = {"outputContentType": "application/json", "outputTokenCount": tokens_out,
           "outputBodyJson": {"usage": {"inputTokens": tokens_in, "outputTokens": tokens_out}}}
    if one_hour is not None:
        out["outputBodyJson"]["usage"]["cache_creation"] = {"ephemeral_1h_input_tokens": one_hour,
                                                            "ephemeral_5m_input_tokens": (cache_write or 0) - one_hour}
    rec = {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": ts, "accountId": ACCOUNT,
           "identity": {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}"}, "region": "us-east-1",
           "requestId": f"req-{ts}-{model[-6:]}", "operation": operation, "modelId": model, "input": inp,
           "output": out}
    if meta is not None:
        rec["requestMetadata"] = meta
    if error:
        rec["errorCode"] = error
        del rec["output"]
        rec["input"].pop("inputTokenCount")
    return rec


def put_jsonl(bucket, key, records, gz=True, extra_lines=()):
    body = "\n".join([json.dumps(r) for r in records] + list(extra_lines)) + "\n"
    bucket.put(key, gzip.compress(body.encode()) if gz else body)


def test_invocation_logs_from_s3(s3_bucket, tmp_path):
    put_jsonl(s3_bucket, f"{PREFIX}/2026/10/02/09/20261002T0912Z_a1b2c3.json.gz", [
        invocation("2026-10-02T09:12:01Z", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", 1200, 300,
                   cache_read=8000, cache_write=2000, one_hour=500, meta={"team": "search", "Feature": "answers"}),
        invocation("2026-10-02T09:14:41Z", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", 800, 200,
                   cache_read=8000, meta={"team": "search", "Feature": "answers"}),
        invocation("2026-10-02T09:15:00Z", APP_PROFILE, 1000, 100, meta={"team": "search"}),
    ])
    put_jsonl(s3_bucket, f"{PREFIX}/2026/10/03/14/20261003T1400Z_d4e5f6.json", [
        invocation("2026-10-03T14:00:00Z", "amazon.nova-pro-v1:0", 5000, 1000, role="ResearchNotebook",
                   meta={"team": "research", "costCentre": "CC-42"}, operation="InvokeModel"),
        invocation("2026-10-03T14:00:05Z", "amazon.nova-pro-v1:0", 0, 0, role="ResearchNotebook",
                   meta={"team": "research", "costCentre": "CC-42"}, operation="InvokeModel",
                   error="ThrottlingException"),
        invocation("2026-10-03T14:00:09Z", "meta.llama3-70b-instruct-v1:0", "many", 3),
    ], gz=False, extra_lines=["{truncated"])
    # spilled large bodies and other months are not part of October's delivery
    s3_bucket.put(f"{PREFIX}/2026/10/03/14/data/20261003T1400Z_big.json", b'{"inputBody": "..."}')
    put_jsonl(s3_bucket, f"{PREFIX}/2026/09/30/23/x.json.gz", [
        invocation("2026-09-30T23:59:00Z", "amazon.nova-pro-v1:0", 1, 1)])
    cfg = make_config(tmp_path, [{"name": "bedrock", "kind": "bedrock_logs", "uri": f"s3://{s3_bucket.name}/logs",
                                  "options": {"endpoint_url": s3_bucket.endpoint_url,
                                              "inference_profiles": {APP_PROFILE: "us.anthropic.claude-3-5-haiku-20241022-v1:0"}}}])
    from apportion.connectors.registry import connector_for

    assert connector_for(cfg.source("bedrock")).months() == ["2026-09", "2026-10"]
    delivery, stats, alloc = build(cfg, "bedrock")
    assert len(delivery.files) == 2

    rows = line_items(cfg, "bedrock")
    assert all(r["x_CostBasis"] == "usage" and r["BilledCost"] == 0 for r in rows)
    sonnet = {r["x_TokenType"]: r for r in rows if r["x_ModelId"] == "claude-sonnet-4-5"}
    # inputTokenCount is uncached; cache writes split 5m / 1h from the response body
    assert {t: r["x_Tokens"] for t, r in sonnet.items()} == {
        "input": 2000, "cache_read": 16000, "cache_write_5m": 1500, "cache_write_1h": 500, "output": 500}
    assert sonnet["input"]["x_Requests"] == 2 and sonnet["input"]["x_PricedCost"] == Decimal("0.0066")  # $3.30/M
    r = sonnet["input"]
    assert (r["ProviderName"], r["PublisherName"], r["ServiceName"], r["SubAccountId"], r["RegionId"]) == (
        "AWS", "Anthropic", "Amazon Bedrock", ACCOUNT, "us-east-1")
    assert r["ResourceId"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/SearchService/i-0abc"
    assert json.loads(r["Tags"]) == {"team": "search", "feature": "answers", "principal": "SearchService"}
    # the application inference profile is priced as the model it was mapped to
    [haiku] = [r for r in rows if r["x_ModelId"] == "claude-3-5-haiku" and r["x_TokenType"] == "input"]
    assert haiku["x_ModelRef"] == APP_PROFILE and haiku["x_PricedCost"] == Decimal("0.0008")
    nova = {r["x_TokenType"]: r for r in rows if r["x_ModelId"] == "nova-pro"}
    assert nova["input"]["x_Tokens"] == 5000 and nova["input"]["x_Requests"] == 2  # the throttled call counts
    assert json.loads(nova["input"]["Tags"])["costcentre"] == "CC-42"
    reasons = sorted(q["reason"] for q in quarantined(cfg, "bedrock"))
    assert reasons == ["invalid token count 'many'", "malformed JSON record (Expecting property name enclosed in "
                                                      "double quotes)"]
    assert alloc.billed_cost == 0 and stats.quarantined_rows == 2
    con = db.connect()
    teams = dict(con.execute("SELECT x_ModelId, any_value(x_Team) FROM read_parquet(?) a JOIN read_parquet(?) l "
                             "USING (x_LineId) GROUP BY 1",
                             [str(steps.partition_dir(cfg, steps.ALLOCATIONS, "bedrock", MONTH) / "*.parquet"),
                              str(steps.partition_dir(cfg, steps.LINE_ITEMS, "bedrock", MONTH) / "*.parquet")]).fetchall())
    assert teams == {"claude-sonnet-4-5": "search", "claude-3-5-haiku": "search", "nova-pro": "research"}


def test_unmapped_application_profile_is_reported(s3_bucket, tmp_path):
    put_jsonl(s3_bucket, f"{PREFIX}/2026/10/05/00/a.json.gz", [invocation("2026-10-05T00:00:01Z", APP_PROFILE, 10, 10)])
    cfg = make_config(tmp_path, [{"name": "bedrock", "kind": "bedrock_logs", "uri": f"s3://{s3_bucket.name}/logs",
                                  "options": {"endpoint_url": s3_bucket.endpoint_url}}])
    _, stats, _ = build(cfg, "bedrock")
    assert stats.rows == 0 and stats.quarantined_rows == 2
    assert all("application-inference-profile k3x9search is not mapped" in q["reason"]
               for q in quarantined(cfg, "bedrock"))
