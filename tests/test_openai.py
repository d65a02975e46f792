"""`kind: openai`: Usage API + Costs API through a real local HTTP server replaying recorded pages."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from apportion import steps
from apportion.connectors.base import SourceError
from tests.conftest import ReplayResponse
from tests.llm_helpers import FIXTURES, MONTH, build, dsum, line_items, make_config, quarantined

PAGES = FIXTURES / "openai"
SECRET = "sk-admin-TESTSECRET-0123456789abcdef"
START = int(datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp())
END = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())
CURSOR = "page_AAAAAGdGxdEAAAAAZ0gcqw=="
COMPLETIONS, EMBEDDINGS, COSTS = ("/v1/organization/usage/completions", "/v1/organization/usage/embeddings",
                                  "/v1/organization/costs")


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


def serve_recorded(api, first=None):
    api.route(COMPLETIONS, None, *(first or []), page("usage_completions_p1.json"))
    api.route(COMPLETIONS, CURSOR, page("usage_completions_p2.json"))
    api.route(EMBEDDINGS, None, page("usage_embeddings.json"))
    api.route(COSTS, None, page("costs.json"))


def config(tmp_path, base_url, **options):
    opts = {"base_url": base_url, "start_month": "2026-09", "retry_backoff": 0.01, "max_retries": 3,
            "project_names": {"proj_SearchAbc123": "Search", "proj_SupportXyz789": "Support"},
            "tags": {"project_id": {"proj_SearchAbc123": {"team": "search", "project": "chatbot"},
                                    "proj_SupportXyz789": {"team": "finance-apps"}}}}
    opts.update(options)
    return make_config(tmp_path, [{"name": "openai-org", "kind": "openai", "uri": "https://api.openai.com", "options": opts}])


@pytest.fixture
def admin_key(monkeypatch):
    monkeypatch.setenv("OPENAI_ADMIN_KEY", SECRET)
    return SECRET


def test_pages_land_as_received_and_become_usage_and_invoice_rows(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api)
    cfg = config(tmp_path, llm_api.url)
    delivery, stats, alloc = build(cfg, "openai-org")

    # the raw zone holds every page byte for byte
    landed = {p.relative_to(delivery.local_dir).as_posix(): p.read_bytes()
              for p in Path(delivery.local_dir).rglob("*.json") if p.name != "delivery.json"}
    assert landed == {
        "usage_completions/page-0001.json": page("usage_completions_p1.json"),
        "usage_completions/page-0002.json": page("usage_completions_p2.json"),
        "usage_embeddings/page-0001.json": page("usage_embeddings.json"),
        "costs/page-0001.json": page("costs.json"),
    }
    # requests: admin key as bearer, UTC-midnight window, daily buckets, grouping, cursor on page 2
    reqs = llm_api.requests
    assert [r["path"] for r in reqs] == [COMPLETIONS, COMPLETIONS, EMBEDDINGS, COSTS]
    assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in reqs)
    q = reqs[0]["query"]
    assert ("start_time", str(START)) in q and ("end_time", str(END)) in q and ("bucket_width", "1d") in q
    assert {v for k, v in q if k == "group_by"} == {"project_id", "api_key_id", "model", "batch", "service_tier"}
    assert ("page", CURSOR) in reqs[1]["query"]
    assert {v for k, v in reqs[3]["query"] if k == "group_by"} == {"project_id", "line_item"}

    rows = line_items(cfg, "openai-org")
    invoice = [r for r in rows if r["x_CostBasis"] == "invoice"]
    usage = [r for r in rows if r["x_CostBasis"] == "usage"]
    costs = json.loads(page("costs.json"), parse_float=Decimal)
    billed = sum(Decimal(str(r["amount"]["value"])) for b in costs["data"] for r in b["results"])
    assert dsum(invoice, "BilledCost") == billed.quantize(Decimal("1e-12")) == stats.billed_cost
    assert alloc.billed_cost == stats.billed_cost
    assert all(r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"] == 0 for r in usage)
    assert all(r["x_PricedCost"] is not None and r["x_PricedCost"] >= 0 for r in usage)

    # gpt-4o on day 1: input_tokens 1,250,000 INCLUDE 400,000 cached
    day1 = {r["x_TokenType"]: r for r in usage if r["x_ModelRef"] == "gpt-4o-2024-08-06"
            and r["ChargePeriodStart"].day == 1}
    assert {t: r["x_Tokens"] for t, r in day1.items()} == {"input": 850_000, "cache_read": 400_000, "output": 180_000}
    assert {t: r["x_PricedCost"] for t, r in day1.items()} == {
        "input": Decimal("2.125"), "cache_read": Decimal("0.5"), "output": Decimal("1.8")}
    assert [day1[t]["x_Requests"] for t in ("input", "cache_read", "output")] == [900, 0, 0]
    r = day1["cache_read"]
    assert (r["ConsumedUnit"], r["PricingUnit"], r["ConsumedQuantity"], r["PricingQuantity"]) == (
        "Tokens", "1000000 Tokens", Decimal(400_000), Decimal("0.4"))
    assert (r["ServiceCategory"], r["ServiceSubcategory"], r["ProviderName"], r["x_LlmProvider"]) == (
        "AI and Machine Learning", "Generative AI", "OpenAI", "openai")
    assert (r["ListUnitPrice"], r["x_ModelId"], r["SkuMeter"], r["x_UsageType"]) == (
        Decimal("1.25"), "gpt-4o", "Cache Read Input Tokens", "gpt-4o:cache_read")
    details = json.loads(r["SkuPriceDetails"])
    assert details["ModelId"] == "gpt-4o" and details["ModelVersion"] == "2024-08-06"
    assert details["TokenDirection"] == "Input" and details["TokenCacheAction"] == "Read"
    assert (r["SubAccountId"], r["SubAccountName"], r["ResourceId"], r["BillingAccountId"]) == (
        "proj_SearchAbc123", "Search", "key_SearchProd01", "org-AcmeCorp1234")
    assert json.loads(r["Tags"])["team"] == "search"

    # fine-tunes are priced as fine-tunes; embeddings priced; batch flagged
    ft = [r for r in usage if r["x_ModelId"] == "ft:gpt-4o" and r["x_TokenType"] == "input"]
    assert ft and all(r["ContractedUnitPrice"] == Decimal("3.75") for r in ft)
    emb = [r for r in usage if r["x_ModelId"] == "text-embedding-3-small"]
    assert [(r["x_TokenType"], r["x_Tokens"], r["x_PricedCost"], r["x_Operation"]) for r in emb] == [
        ("input", 5_000_000, Decimal("0.1"), "embeddings")]
    batch = [r for r in usage if r["x_ModelId"] == "gpt-4o-mini"]
    assert all(json.loads(r["SkuPriceDetails"]).get("x_Batch") is True for r in batch)

    # invoice lines carry model and token direction parsed from the line item
    inv = {(r["x_ModelRef"], r["x_TokenType"], r["ChargePeriodStart"].day): r["BilledCost"] for r in invoice}
    assert inv[("gpt-4o-2024-08-06", "input", 1)] == Decimal("3.125")
    assert inv[("ft:gpt-4o-2024-08-06", "output", 3)] == Decimal("1.05")
    assert inv[(None, None, 2)] == Decimal("0.0725")  # "assistants api | file search"

    # the unknown model is reported (quarantined with the reason), never priced at zero
    # (and so is a token type the catalogue has no price for: cached input of the fine-tune)
    q = quarantined(cfg, "openai-org")
    assert sorted((r["x_SourceFile"], r["x_SourceRow"], r["reason"]) for r in q) == [
        ("usage_completions/page-0001.json", 6, "unpriced model openai/gpt-imaginary-2026-01-01: not in the "
         "genai-prices 0.2.3 catalogue (Unable to find model with model_ref='gpt-imaginary-2026-01-01' in openai); "
         "add a price override")] * 2 + [
        ("usage_completions/page-0002.json", 1, "unpriced model openai/ft:gpt-4o-2024-08-06:acme-corp:support-bot:"
         "9xK2abCd: genai-prices ft:gpt-4o has no cache-read price")]
    assert stats.quarantined_rows == 3
    assert not any(r["x_ModelRef"] == "gpt-imaginary-2026-01-01" for r in rows)


def test_a_negotiated_price_override_prices_what_the_catalogue_lacks(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api)
    cfg = config(tmp_path, llm_api.url, price_overrides=[
        {"name": "ft-cached", "provider": "openai", "model": "ft:gpt-4o*", "prices": {"cache_read": "1.875"}},
        {"name": "acme-gpt4o", "provider": "openai", "model": "gpt-4o", "valid_from": "2026-10-02",
         "prices": {"input": "2.00", "output": "8.00"}}])
    _, stats, _ = build(cfg, "openai-org")
    assert stats.quarantined_rows == 2  # only the unknown model is left
    rows = {(r["x_ModelId"], r["x_TokenType"], r["ChargePeriodStart"].day): r for r in line_items(cfg, "openai-org")
            if r["x_CostBasis"] == "usage"}
    ft = rows[("ft:gpt-4o", "cache_read", 3)]
    assert (ft["x_PricedCost"], ft["x_PriceSource"]) == (Decimal("0.1875"), "override:ft-cached")
    day1, day2 = rows[("gpt-4o", "input", 1)], rows[("gpt-4o", "input", 2)]
    assert day1["x_PriceSource"].startswith("genai-prices") and day2["x_PriceSource"] == "override:acme-gpt4o"
    assert (day2["ContractedUnitPrice"], day2["ListUnitPrice"]) == (Decimal("2.00"), Decimal("2.5"))


def test_429_and_5xx_are_retried(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api, first=[ReplayResponse(429, {"error": {"message": "Rate limit"}}, {"Retry-After": "0"}),
                                   ReplayResponse(502, "<html>bad gateway</html>"),
                                   ReplayResponse(500, {"error": {"message": "oops"}})])
    cfg = config(tmp_path, llm_api.url)
    delivery = steps.land(cfg, cfg.source("openai-org"), MONTH)
    assert [r["path"] for r in llm_api.requests].count(COMPLETIONS) == 5  # 3 failures + page 1 + page 2
    assert len(delivery.objects) == 4


def test_a_page_that_never_arrives_fails_the_month_without_leaking_the_key(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api)
    llm_api.route(COMPLETIONS, CURSOR, ReplayResponse(503, {"error": f"upstream saw key {SECRET}"}))
    cfg = config(tmp_path, llm_api.url, max_retries=2)
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with pytest.raises(SourceError) as err:
            steps.land(cfg, cfg.source("openai-org"), MONTH)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    message = str(err.value)
    assert "GET /v1/organization/usage/completions" in message and "page=page_AAAA" in message
    assert "did not arrive after 3 attempts (last: HTTP 503; the source's max_retries option allows 2 retries)" in message
    assert SECRET not in message and SECRET not in logged.getvalue()
    month_dir = cfg.raw / "openai-org" / MONTH
    assert not (month_dir / "LANDED").exists()


def test_client_errors_fail_at_once_and_scrub_the_key(tmp_path, llm_api, admin_key):
    llm_api.route(COMPLETIONS, None, ReplayResponse(401, {"error": {"message": f"Incorrect API key {SECRET}"}}))
    cfg = config(tmp_path, llm_api.url)
    with pytest.raises(SourceError) as err:
        steps.land(cfg, cfg.source("openai-org"), MONTH)
    assert "HTTP 401" in str(err.value) and SECRET not in str(err.value) and "***" in str(err.value)
    assert len(llm_api.requests) == 1


def test_missing_admin_key_is_a_clear_error(tmp_path, llm_api, monkeypatch):
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    cfg = config(tmp_path, llm_api.url)
    with pytest.raises(SourceError, match="environment variable OPENAI_ADMIN_KEY is not set"):
        steps.land(cfg, cfg.source("openai-org"), MONTH)
    assert llm_api.requests == []


def test_malformed_results_are_quarantined_and_bad_pages_fail(tmp_path, llm_api, admin_key):
    bad_usage = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": START, "end_time": START + 86400, "results": [
            {"object": "organization.usage.completions.result", "input_tokens": "lots", "output_tokens": 5,
             "num_model_requests": 1, "model": "gpt-4o-2024-08-06", "project_id": "proj_x"},
            {"object": "organization.usage.completions.result", "input_tokens": 10, "output_tokens": -5,
             "num_model_requests": 1, "model": "gpt-4o-2024-08-06", "project_id": "proj_x"}]}]}
    bad_costs = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"object": "bucket", "start_time": START, "end_time": START + 86400, "results": [
            {"object": "organization.costs.result", "amount": {"value": "n/a", "currency": "usd"},
             "line_item": "gpt-4o-2024-08-06, input", "project_id": "proj_x"},
            {"object": "organization.costs.result", "amount": {"value": 1.5, "currency": "usd"},
             "line_item": "gpt-4o-2024-08-06, output", "project_id": "proj_x"}]}]}
    llm_api.route(COMPLETIONS, None, bad_usage)
    llm_api.route(EMBEDDINGS, None, {"object": "page", "data": [], "has_more": False, "next_page": None})
    llm_api.route(COSTS, None, bad_costs)
    cfg = config(tmp_path, llm_api.url)
    _, stats, _ = build(cfg, "openai-org")
    reasons = sorted(r["reason"] for r in quarantined(cfg, "openai-org"))
    assert reasons == ["invalid token count 'lots'", "invalid token count -5", "missing or non-numeric amount"]
    assert stats.rows == 1 and stats.billed_cost == Decimal("1.5")

    llm_api.route(COMPLETIONS, None, "<html>maintenance</html>")
    with pytest.raises(SourceError, match="page 1 is not JSON"):
        steps.land(cfg, cfg.source("openai-org"), MONTH)


def test_same_pages_reuse_the_delivery(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api)
    cfg = config(tmp_path, llm_api.url)
    first = steps.land(cfg, cfg.source("openai-org"), MONTH)
    again = steps.land(cfg, cfg.source("openai-org"), MONTH)
    assert again.delivery_id == first.delivery_id and again.reused


def test_file_base_url_serves_recorded_pages_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    root = tmp_path / "recorded"
    for path, key, name in [(COMPLETIONS, str(START), "usage_completions_p1.json"),
                            (COMPLETIONS, CURSOR, "usage_completions_p2.json"),
                            (EMBEDDINGS, str(START), "usage_embeddings.json"), (COSTS, str(START), "costs.json")]:
        dest = root / path.strip("/") / (key.replace("=", "=") + ".json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(page(name))
    cfg = config(tmp_path, root.as_uri())
    _, stats, _ = build(cfg, "openai-org")
    assert stats.rows > 20 and stats.quarantined_rows == 3
