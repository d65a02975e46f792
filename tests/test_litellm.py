"""`kind: litellm`: LiteLLM proxy spend logs from a REAL PostgreSQL server (started by the suite) and CSV exports."""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from apportion import db, steps
from apportion.connectors.base import SourceError
from apportion.models._yaml import ConfigError
from tests.llm_helpers import MONTH, build, line_items, make_config, quarantined

PROMPT = "PII: alice@example.com asked about her invoice"


def spend_row(request_id, start, model, provider, prompt, completion, *, team="team-a1", team_alias="search",
              key_alias="search-prod", usage=None, tags=None, extra=None, user="alice@acme.example",
              call_type="acompletion", model_group=None, status="success"):
    metadata = {"user_api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                "user_api_key_alias": key_alias, "user_api_key_team_id": team, "user_api_key_team_alias": team_alias,
                "user_api_key_user_id": user, "spend_logs_metadata": extra, "usage_object": usage or {
                    "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
                "additional_usage_values": {}, "status": status}
    return {"request_id": request_id, "call_type": call_type, "api_key": "88dc28d0f030c55e", "spend": 0.0123,
            "total_tokens": prompt + completion, "prompt_tokens": prompt, "completion_tokens": completion,
            "startTime": start, "endTime": start, "model": model, "model_group": model_group or model,
            "custom_llm_provider": provider, "api_base": "https://api.example", "user": user,
            "metadata": json.dumps(metadata), "cache_hit": "False", "request_tags": json.dumps(tags or []),
            "team_id": team, "end_user": "", "status": status,
            "messages": json.dumps([{"role": "user", "content": PROMPT}]),
            "response": json.dumps({"choices": [{"message": {"content": "Your invoice ..."}}]})}


ROWS = [
    # two gpt-4o requests of the same team/key/tags on Oct 3 -> one group; prompt_tokens INCLUDE cached tokens
    spend_row("r1", "2026-10-03 09:00:00.120", "gpt-4o-2024-08-06", "openai", 1000, 200,
              usage={"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 400}},
              tags=["team:search", "feature:answers", "beta"], extra={"project": "chatbot"}),
    spend_row("r2", "2026-10-03 17:30:00.000", "gpt-4o-2024-08-06", "openai", 3000, 100,
              tags=["team:search", "feature:answers", "beta"], extra={"project": "chatbot"}),
    # Anthropic through LiteLLM: prompt_tokens = uncached 500 + cache read 800 + cache write 200 (100 of them 1h)
    spend_row("r3", "2026-10-04 10:00:00", "claude-sonnet-4-5-20250929", "anthropic", 1500, 300,
              usage={"prompt_tokens": 1500, "completion_tokens": 300, "cache_read_input_tokens": 800,
                     "cache_creation_input_tokens": 200,
                     "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 100}},
              team="team-b2", team_alias="research", key_alias="research-notebooks", tags=["workload:notebooks"]),
    # Bedrock through LiteLLM: priced as AWS (regional cross-region profile)
    spend_row("r4", "2026-10-04 11:00:00", "us.anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock", 2000, 500,
              team="team-b2", team_alias="research", key_alias="research-notebooks"),
    # an embedding call and a model the catalogue does not know
    spend_row("r5", "2026-10-05 08:00:00", "text-embedding-3-small", "openai", 50_000, 0, call_type="aembedding"),
    spend_row("r6", "2026-10-05 08:00:01", "my-finetuned-llama", "openai", 10, 10),
    # other months: not this partition
    spend_row("r7", "2026-09-30 23:59:59.999", "gpt-4o-2024-08-06", "openai", 999, 1),
    spend_row("r8", "2026-11-01 00:00:00", "gpt-4o-2024-08-06", "openai", 999, 1),
]


def insert(dsn: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    with psycopg.connect(dsn, autocommit=True) as con:
        with con.cursor() as cur:
            cur.executemany(
                'INSERT INTO "LiteLLM_SpendLogs" (' + ", ".join(f'"{c}"' for c in cols) + ") VALUES ("
                + ", ".join(["%s"] * len(cols)) + ")", [[r[c] for c in cols] for r in rows])


def pg_config(tmp_path, uri, **options):
    return make_config(tmp_path, [{"name": "gateway", "kind": "litellm", "uri": uri,
                                   "options": {"start_month": "2026-10", "retry_backoff": 0.01, **options}}])


def test_spend_logs_from_postgres(tmp_path, litellm_db):
    insert(litellm_db, ROWS)
    cfg = pg_config(tmp_path, litellm_db)
    delivery, stats, alloc = build(cfg, "gateway")

    # the month's rows land as the server's own CSV; prompts and responses are never read
    [(key, path)] = delivery.files
    assert key == f"LiteLLM_SpendLogs/{MONTH}.csv"
    landed = path.read_text()
    assert PROMPT not in landed and "messages" not in landed.splitlines()[0]
    assert {r["request_id"] for r in csv.DictReader(io.StringIO(landed))} == {"r1", "r2", "r3", "r4", "r5", "r6"}

    rows = line_items(cfg, "gateway")
    assert all(r["x_CostBasis"] == "usage" and r["BilledCost"] == 0 for r in rows)
    by = {(r["x_ModelId"], r["x_TokenType"]): r for r in rows}
    # r1 + r2 summed: prompt 4000 of which 400 cached
    assert by[("gpt-4o", "input")]["x_Tokens"] == 3600 and by[("gpt-4o", "cache_read")]["x_Tokens"] == 400
    assert by[("gpt-4o", "output")]["x_Tokens"] == 300
    assert [by[("gpt-4o", t)]["x_Requests"] for t in ("input", "cache_read", "output")] == [2, 0, 0]
    assert by[("gpt-4o", "input")]["x_PricedCost"] == Decimal("0.009")  # 3600 x $2.50/M
    tags = json.loads(by[("gpt-4o", "input")]["Tags"])
    assert tags == {"team": "search", "feature": "answers", "project": "chatbot", "key_alias": "search-prod",
                    "user": "alice@acme.example", "model_group": "gpt-4o-2024-08-06", "request_tags": "beta"}
    r = by[("gpt-4o", "input")]
    assert (r["SubAccountId"], r["SubAccountName"], r["ResourceId"], r["ProviderName"], r["x_Operation"]) == (
        "team-a1", "search", "search-prod", "OpenAI", "acompletion")
    # Anthropic: uncached = 1500 - 800 - 200; 5m and 1h writes priced separately
    assert {t: by[("claude-sonnet-4-5", t)]["x_Tokens"] for t in
            ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")} == {
        "input": 500, "cache_read": 800, "cache_write_5m": 100, "cache_write_1h": 100, "output": 300}
    assert by[("claude-sonnet-4-5", "cache_write_1h")]["x_PricedCost"] == Decimal("0.0006")
    # Bedrock model through the gateway bills as AWS
    haiku = by[("claude-3-5-haiku", "input")]
    assert (haiku["ProviderName"], haiku["x_LlmProvider"], haiku["PublisherName"]) == ("AWS", "aws", "Anthropic")
    assert by[("text-embedding-3-small", "input")]["x_Operation"] == "aembedding"
    # unknown model: reported with the reason, never priced at zero
    [q] = [q for q in quarantined(cfg, "gateway") if "my-finetuned-llama" in q["reason"]][:1]
    assert q["reason"].startswith("unpriced model openai/my-finetuned-llama") and stats.quarantined_rows == 2
    # allocation: team from the LiteLLM team alias / request tags, project from spend_logs_metadata
    con = db.connect()
    got = con.execute(
        "SELECT DISTINCT x_Team, x_Project FROM read_parquet(?) WHERE x_Team = 'search'",
        [str(steps.partition_dir(cfg, steps.ALLOCATIONS, "gateway", MONTH) / "*.parquet")]).fetchall()
    assert set(got) == {("search", "chatbot"), ("search", "untagged")}  # the embedding call has no project tag


def write_csv(path: Path, rows: list[dict], headers: dict | None = None) -> None:
    cols = [c for c in rows[0] if c not in ("messages", "response")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([(headers or {}).get(c, c) for c in cols])
    for r in rows:
        w.writerow([r[c] for c in cols])
    data = buf.getvalue().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def test_spend_logs_from_csv_exports_with_bad_rows(tmp_path):
    bad = [
        {**spend_row("b1", "2026-10-06 10:00:00", "gpt-4o-mini", "openai", 10, 10), "metadata": "{not json"},
        {**spend_row("b2", "2026-10-06 10:00:00", "gpt-4o-mini", "openai", 10, 10), "prompt_tokens": "ten"},
        {**spend_row("b3", "yesterday", "gpt-4o-mini", "openai", 10, 10)},
    ]
    write_csv(tmp_path / "exports" / "spend-2026-10a.csv.gz", ROWS[:4])
    # a second export with differently spelled headers ("Start Time", "Prompt Tokens")
    write_csv(tmp_path / "exports" / "more" / "spend-2026-10b.csv", ROWS[4:] + bad,
              headers={"startTime": "Start Time", "prompt_tokens": "Prompt Tokens", "request_tags": "Request Tags"})
    cfg = pg_config(tmp_path, "exports")
    delivery, stats, _ = build(cfg, "gateway")
    assert sorted(k for k, _ in delivery.files) == ["more/spend-2026-10b.csv", "spend-2026-10a.csv.gz"]
    reasons = {(q["x_SourceFile"], q["x_SourceRow"]): q["reason"] for q in quarantined(cfg, "gateway")}
    assert reasons[("more/spend-2026-10b.csv", 5)] == "malformed metadata JSON"
    assert reasons[("more/spend-2026-10b.csv", 6)] == "invalid token count 'ten'"
    assert reasons[("more/spend-2026-10b.csv", 7)] == "missing or unparseable timestamp"
    assert reasons[("more/spend-2026-10b.csv", 2)].startswith("unpriced model openai/my-finetuned-llama")
    rows = line_items(cfg, "gateway")
    assert sum(r["x_Requests"] or 0 for r in rows) == 5  # r1..r5 (r6 unpriced, r7/r8 other months)
    lineage = {(r["x_ModelId"], r["x_SourceFile"], r["x_SourceRow"]) for r in rows if r["x_TokenType"] == "input"}
    assert ("gpt-4o", "spend-2026-10a.csv.gz", 1) in lineage  # a group points at its first raw row


def test_password_in_uri_is_rejected_and_unreachable_database_fails_clearly(tmp_path, postgres_server):
    with pytest.raises(ConfigError, match="carries credentials inside the URI") as err:  # refused at config load
        pg_config(tmp_path, "postgresql://litellm:hunter2@127.0.0.1:5432/litellm")
    assert "hunter2" not in str(err.value)
    from tests.conftest import _free_port

    cfg = pg_config(tmp_path, f"postgresql://apportion@127.0.0.1:{_free_port()}/litellm", max_retries=1,
                    connect_timeout=2)
    with pytest.raises(SourceError, match="cannot reach the LiteLLM database after 2 attempts"):
        steps.land(cfg, cfg.source("gateway"), MONTH)


def test_dsn_from_environment(tmp_path, litellm_db, monkeypatch):
    insert(litellm_db, ROWS[:2])
    monkeypatch.setenv("LITELLM_DATABASE_URL", litellm_db)
    cfg = pg_config(tmp_path, "postgresql://from-env", dsn_env="LITELLM_DATABASE_URL")
    _, stats, _ = build(cfg, "gateway")
    assert stats.rows == 3 and stats.quarantined_rows == 0
