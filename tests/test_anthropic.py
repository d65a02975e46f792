"""`kind: anthropic`: Admin usage report + cost report through a real local HTTP server replaying recorded pages."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from apportion import steps
from apportion.connectors.base import SourceError
from tests.conftest import ReplayResponse
from tests.llm_helpers import FIXTURES, MONTH, build, dsum, line_items, make_config, quarantined

PAGES = FIXTURES / "anthropic"
SECRET = "sk-ant-admin01-TESTSECRET-abcdef0123456789"
USAGE, COST = "/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"
CURSOR = "page_MjAyNi0xMC0wM1QwMDowMDowMFo="


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


def serve_recorded(api, first=None):
    api.route(USAGE, None, *(first or []), page("usage_messages_p1.json"))
    api.route(USAGE, CURSOR, page("usage_messages_p2.json"))
    api.route(COST, None, page("cost_report.json"))


def config(tmp_path, base_url, **options):
    opts = {"base_url": base_url, "retry_backoff": 0.01, "max_retries": 3, "organization_id": "org-acme",
            "workspace_names": {"wrkspc_01Search": "Search", "wrkspc_01Research": "Research"},
            "tags": {"workspace_id": {"wrkspc_01Search": {"team": "search"}, "wrkspc_01Research": {"team": "research"}},
                     "api_key_id": {"apikey_01SearchAgent": {"workload": "inference", "project": "chatbot"}}}}
    opts.update(options)
    return make_config(tmp_path, [{"name": "claude", "kind": "anthropic", "uri": "https://api.anthropic.com", "options": opts}])


@pytest.fixture
def admin_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_ADMIN_KEY", SECRET)
    return SECRET


def test_usage_and_cost_reports_become_priced_usage_and_invoice_rows(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api, first=[ReplayResponse(429, {"type": "error", "error": {"type": "rate_limit_error"}},
                                                  {"Retry-After": "0"}),
                                   ReplayResponse(529, {"type": "error", "error": {"type": "overloaded_error"}})])
    cfg = config(tmp_path, llm_api.url)
    delivery, stats, alloc = build(cfg, "claude")

    landed = {p.relative_to(delivery.local_dir).as_posix(): p.read_bytes()
              for p in Path(delivery.local_dir).rglob("*.json") if p.name != "delivery.json"}
    assert landed == {"usage_messages/page-0001.json": page("usage_messages_p1.json"),
                      "usage_messages/page-0002.json": page("usage_messages_p2.json"),
                      "cost_report/page-0001.json": page("cost_report.json")}
    reqs = llm_api.requests
    assert [r["path"] for r in reqs] == [USAGE, USAGE, USAGE, USAGE, COST]  # 429, 529, page 1, page 2, cost
    assert all(r["headers"]["x-api-key"] == SECRET and r["headers"]["anthropic-version"] == "2023-06-01"
               for r in reqs)
    q = reqs[2]["query"]
    assert ("starting_at", "2026-10-01T00:00:00Z") in q and ("ending_at", "2026-11-01T00:00:00Z") in q
    assert [v for k, v in q if k == "group_by[]"] == ["workspace_id", "api_key_id", "model", "service_tier",
                                                      "context_window"]
    assert ("page", CURSOR) in reqs[3]["query"]

    rows = line_items(cfg, "claude")
    usage = [r for r in rows if r["x_CostBasis"] == "usage"]
    invoice = [r for r in rows if r["x_CostBasis"] == "invoice"]
    assert stats.quarantined_rows == 0 and not quarantined(cfg, "claude")

    # cost report amounts are CENTS as decimal strings
    cents = sum(Decimal(r["amount"]) for b in json.loads(page("cost_report.json"))["data"] for r in b["results"])
    assert dsum(invoice, "BilledCost") == cents / 100 == stats.billed_cost == alloc.billed_cost
    code = [r for r in invoice if r["ChargeDescription"] == "Code Execution Usage"]
    assert code[0]["BilledCost"] == Decimal("0.123456")
    web = [r for r in invoice if r["x_TokenType"] == "web_search"]
    assert web[0]["BilledCost"] == Decimal("0.40")

    # uncached input EXCLUDES cache reads/creation: each token type is priced on its own
    day1 = {r["x_TokenType"]: r for r in usage if r["ChargePeriodStart"].day == 1 and r["x_ModelId"] == "claude-sonnet-4-5"}
    assert {t: (r["x_Tokens"], r["x_PricedCost"]) for t, r in day1.items()} == {
        "input": (1_500_000, Decimal("4.5")),
        "cache_write_5m": (200_000, Decimal("0.75")),
        "cache_write_1h": (50_000, Decimal("0.3")),
        "cache_read": (3_000_000, Decimal("0.9")),
        "output": (250_000, Decimal("3.75")),
        "web_search": (None, Decimal("0.4")),
    }
    ws = day1["web_search"]
    assert (ws["ConsumedQuantity"], ws["ConsumedUnit"], ws["PricingUnit"]) == (Decimal(40), "Requests", "1000 Requests")
    details = json.loads(day1["cache_write_1h"]["SkuPriceDetails"])
    assert (details["TokenCacheAction"], details["x_CacheTtl"], details["ModelVersion"]) == ("Write", "1h", "20250929")
    assert all(r["x_Requests"] is None for r in usage)  # the usage report has no request counts
    r = day1["input"]
    assert (r["SubAccountId"], r["SubAccountName"], r["SubAccountType"], r["ResourceId"], r["BillingAccountId"]) == (
        "wrkspc_01Search", "Search", "Workspace", "apikey_01SearchAgent", "org-acme")
    assert json.loads(r["Tags"])["team"] == "search" and json.loads(r["Tags"])["project"] == "chatbot"

    # long-context requests use the long-context tier; a null workspace is the Default workspace
    long = [r for r in usage if r["x_ModelId"] == "claude-sonnet-4-5" and r["ChargePeriodStart"].day == 2
            and r["x_TokenType"] == "input"]
    assert long[0]["ContractedUnitPrice"] == Decimal("6") and "long-context tier" in long[0]["x_PriceSource"]
    console = [r for r in usage if r["x_ModelId"] == "claude-opus-4-1"]
    assert {r["SubAccountId"] for r in console} == {"default"} and {r["ResourceId"] for r in console} == {None}

    # allocation picks the team from the workspace tags
    assert alloc.billed_cost == stats.billed_cost


def test_page_that_never_arrives_fails_the_month(tmp_path, llm_api, admin_key):
    serve_recorded(llm_api)
    llm_api.route(COST, None, ReplayResponse(500, {"type": "error", "error": {"type": "api_error"}}))
    cfg = config(tmp_path, llm_api.url, max_retries=1)
    with pytest.raises(SourceError) as err:
        steps.land(cfg, cfg.source("claude"), MONTH)
    assert "GET /v1/organizations/cost_report" in str(err.value) and "after 2 attempts" in str(err.value)
    assert SECRET not in str(err.value)
    assert not (cfg.raw / "claude" / MONTH / "LANDED").exists()


def test_malformed_cost_and_usage_results_are_quarantined(tmp_path, llm_api, admin_key):
    day = {"starting_at": "2026-10-05T00:00:00Z", "ending_at": "2026-10-06T00:00:00Z"}
    llm_api.route(USAGE, None, {"data": [{**day, "results": [
        {"uncached_input_tokens": "12k", "output_tokens": 3, "model": "claude-haiku-4-5-20251001"},
        {"uncached_input_tokens": 10, "output_tokens": 3, "model": "claude-haiku-4-5-20251001",
         "cache_creation": "n/a"},
        {"uncached_input_tokens": 10, "output_tokens": 3, "model": "claude-imaginary-9"}]}],
        "has_more": False, "next_page": None})
    llm_api.route(COST, None, {"data": [{**day, "results": [
        {"amount": "twelve", "currency": "USD", "description": "Claude Haiku 4.5 Usage - Input Tokens"},
        {"amount": "250", "currency": "USD", "description": "Claude Haiku 4.5 Usage - Output Tokens"}]},
        {"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-02T00:00:00Z", "results": [
            {"amount": "1", "currency": "USD", "description": "next month"}]}],
        "has_more": False, "next_page": None})
    cfg = config(tmp_path, llm_api.url)
    _, stats, _ = build(cfg, "claude")
    reasons = sorted(r["reason"] for r in quarantined(cfg, "claude"))
    assert reasons[0] == "cost on 2026-11-01 is outside billing month 2026-10"
    assert reasons[1] == "invalid token count '12k'"
    assert reasons[2] == "invalid token count 'n/a'"
    assert reasons[3] == "missing or non-numeric amount"
    assert reasons[4].startswith("unpriced model anthropic/claude-imaginary-9") and len(reasons) == 6
    assert stats.billed_cost == Decimal("2.5")
