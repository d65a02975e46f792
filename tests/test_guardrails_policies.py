"""Token policies (issue 11 point 4): per-request limits, allowed models and monthly quotas checked on a LiteLLM
spend-log export built through the real steps (land, line items, allocations, warehouse); every figure below is
computed by hand from the catalogue prices (genai-prices, asserted first); alerts go to a real local HTTP server."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal

import pytest

from apportion import steps
from apportion.guardrails.config import load_guardrails
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from apportion.models.prices import PriceBook
from apportion.models.taxonomy import load_taxonomy
from tests.llm_helpers import MONTH, REPO
from tests.test_guardrails_budgets import http_receiver  # noqa: F401 - the local HTTP receiver fixture
from tests.test_litellm import spend_row, write_csv
from tests.test_report_browser import browser, open_report  # noqa: F401 - the Chromium fixture

POLICIES = """version: 1
channels:
  hook: "${GUARDRAIL_HOOK_URL}"
token_policies:
  - name: prod-inference
    scope: {value_class: production}
    max_input_tokens: 10000
    max_output_tokens: 1000
    allowed_models: ["gpt-4o-mini*"]
    price_as: gpt-4o-mini
    channels: [hook]
  - name: experimental-quota
    scope: {value_class: experimental}
    monthly_tokens: {tokens: 10000, per: team}
    channels: [hook]
"""


def _row(rid, day, model, prompt, completion, team, key, workload):
    return spend_row(rid, f"{MONTH}-{day:02d} 10:00:00", model, "openai", prompt, completion, team=f"team-{team}",
                     team_alias=team, key_alias=key, extra={"workload": workload}, user="")


KEY_MARKUP = "<img src=x onerror=alert(1)>"
REQUESTS = [
    # search / inference (value class production): r1 is 2,000 input tokens over, r2 500 output tokens over,
    # both on gpt-4o (not allowed); r3 on gpt-4o-mini within every limit
    _row("r1", 3, "gpt-4o-2024-08-06", 12000, 500, "search", "search-prod", "inference"),
    _row("r2", 3, "gpt-4o-2024-08-06", 4000, 1500, "search", "search-prod", "inference"),
    _row("r3", 4, "gpt-4o-mini-2024-07-18", 1000, 100, "search", "search-prod", "inference"),
    # an allowed model, 200 output tokens over, through a key whose alias is markup (data: shown as text)
    _row("r8", 5, "gpt-4o-mini-2024-07-18", 1000, 1200, "search", KEY_MARKUP, "inference"),
    # research / notebooks (value class experimental), quota 10,000 tokens a month per team:
    # 6,000 (total 6,000), 6,000 (total 12,000: 2,000 over), 3,000 (all over)
    _row("r5", 2, "gpt-4o-mini-2024-07-18", 6000, 0, "research", "research-nb", "notebooks"),
    _row("r6", 6, "gpt-4o-mini-2024-07-18", 5000, 1000, "research", "research-nb", "notebooks"),
    _row("r7", 7, "gpt-4o-mini-2024-07-18", 3000, 0, "research", "research-nb", "notebooks"),
]


def policy_project(tmp_path, policies: str = POLICIES):
    write_csv(tmp_path / "exports" / f"spend-{MONTH}.csv", REQUESTS)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", tmp_path / "taxonomy.yaml")
    (tmp_path / "budgets.yaml").write_text(policies)
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nbudgets: budgets.yaml\n"
        f"sources:\n  - {{name: gateway, kind: litellm, uri: exports, options: {{start_month: '{MONTH}'}}}}\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    return cfg, load_taxonomy(cfg.taxonomy)


def build(cfg, tax):
    src = cfg.source("gateway")
    steps.build_line_items(cfg, src, steps.land(cfg, src, MONTH))
    steps.allocate(cfg, src, MONTH)
    return steps.build_warehouse(cfg, tax)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The policy project built once for the module (land, line items, allocations, warehouse)."""
    root = tmp_path_factory.mktemp("policies")
    cfg, tax = policy_project(root)
    build(cfg, tax)
    return root, cfg, tax


def test_catalogue_prices_the_figures_below_rest_on():
    book, day = PriceBook(), date(2026, 10, 3)
    assert [book.price("openai", m, t, day).unit_price for m in ("gpt-4o-2024-08-06", "gpt-4o-mini")
            for t in ("input", "output")] == [Decimal("2.5"), Decimal("10"), Decimal("0.15"), Decimal("0.6")]


def test_violations_by_hand_and_alerts_arrive_once(built, http_receiver, monkeypatch):  # noqa: F811
    from apportion.guardrails.run import current_violations, run_guardrails

    _, cfg, tax = built
    got = {(r["policy"], r["rule"], r["team"]) + (("markup",) if r["api_key"] == KEY_MARKUP else ()): r
           for r in current_violations(cfg)}
    assert set(got) == {("prod-inference", "max_input_tokens", "search"), ("prod-inference", "max_output_tokens", "search"),
                        ("prod-inference", "allowed_models", "search"), ("experimental-quota", "monthly_tokens", "research"),
                        ("prod-inference", "max_output_tokens", "search", "markup")}

    def figures(r):
        return (r["requests"], r["tokens_over"], r["cost"], r["excess_cost"], r["allowed_model_cost"])

    # r1 on gpt-4o: 12,000 x 2.5/M + 500 x 10/M = 0.030 + 0.005 = 0.035; input over 2,000 of 12,000 -> 0.030 x 2/12
    # = 0.005; on gpt-4o-mini: 12,000 x 0.15/M + 500 x 0.6/M = 0.0018 + 0.0003 = 0.0021
    r = got[("prod-inference", "max_input_tokens", "search")]
    assert figures(r) == (1, 2000, Decimal("0.035"), Decimal("0.005"), Decimal("0.0021"))
    assert (r["model"], r["api_key"], r["workload"], r["value_class"], r["allowed_model"], r["first_day"]) == (
        "gpt-4o", "search-prod", "inference", "production", "gpt-4o-mini", date(2026, 10, 3))
    # r2: 4,000 x 2.5/M + 1,500 x 10/M = 0.010 + 0.015 = 0.025; output over 500 of 1,500 -> 0.015 / 3 = 0.005;
    # on gpt-4o-mini: 4,000 x 0.15/M + 1,500 x 0.6/M = 0.0006 + 0.0009 = 0.0015
    assert figures(got[("prod-inference", "max_output_tokens", "search")]) == (
        1, 500, Decimal("0.025"), Decimal("0.005"), Decimal("0.0015"))
    # r8 on gpt-4o-mini: 1,000 x 0.15/M + 1,200 x 0.6/M = 0.00015 + 0.00072 = 0.00087; 200 of 1,200 output tokens
    # over -> 0.00072 / 6 = 0.00012; on the allowed model (the same one) 0.00087
    assert figures(got[("prod-inference", "max_output_tokens", "search", "markup")]) == (
        1, 200, Decimal("0.00087"), Decimal("0.00012"), Decimal("0.00087"))
    # r1 + r2 on a model not allowed: 12,500 + 5,500 tokens; cost 0.060, on gpt-4o-mini 0.0036, excess 0.0564
    # (r3 is on gpt-4o-mini: allowed, and within the limits)
    assert figures(got[("prod-inference", "allowed_models", "search")]) == (
        2, 18000, Decimal("0.06"), Decimal("0.0564"), Decimal("0.0036"))
    # quota 10,000 per team: r6 (6,000 tokens, 0.00075 + 0.0006 = 0.00135) is 2,000 over -> 0.00045; r7 (3,000
    # input = 0.00045) all over. 2 requests, 5,000 tokens over, cost 0.0018, excess 0.0009; no comparison model
    q = got[("experimental-quota", "monthly_tokens", "research")]
    assert figures(q) == (2, 5000, Decimal("0.0018"), Decimal("0.0009"), None)
    assert (q["first_day"], q["last_day"]) == (date(2026, 10, 6), date(2026, 10, 7))

    url, received = http_receiver
    monkeypatch.setenv("GUARDRAIL_HOOK_URL", url)
    first = run_guardrails(cfg, tax)
    assert (first["sent"], first["failed"]) == (4, 0)
    assert sorted(first["new_policy_violations"]) == [
        f"experimental-quota:monthly_tokens:{MONTH}:research", f"prod-inference:allowed_models:{MONTH}:search",
        f"prod-inference:max_input_tokens:{MONTH}:search", f"prod-inference:max_output_tokens:{MONTH}:search"]
    titles = sorted(m["title"] for m in received)
    assert titles[0] == (f"[warn] token policy experimental-quota {MONTH}: 2 request(s) over monthly_tokens (research), "
                         "excess 0.0009 USD")
    assert any("18000 tokens over, cost 0.06 USD, cost of the excess 0.0564 USD, 0.0036 USD on gpt-4o-mini"
               in m["message"] for m in received)
    # a re-run and a rebuild send nothing again
    assert run_guardrails(cfg, tax)["sent"] == 0
    build(cfg, tax)
    again = run_guardrails(cfg, tax)
    assert (again["sent"], again["already_sent"], again["new_policy_violations"]) == (0, 4, [])
    assert len(received) == 4


def test_policies_command_prints_the_violations(built, capsys):
    import json

    from apportion import cli

    tmp_path = built[0]
    assert cli.main(["policies", "--config", str(tmp_path / "apportion.yaml"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["rule"], r["requests"]) for r in rows) == [
        ("allowed_models", 2), ("max_input_tokens", 1), ("max_output_tokens", 1), ("max_output_tokens", 1),
        ("monthly_tokens", 2)]
    assert cli.main(["policies", "--config", str(tmp_path / "apportion.yaml")]) == 0
    table = capsys.readouterr().out
    # tokens over: 18,000 (models), 2,000 (input), 500 and 200 (output), 5,000 (quota); long names fold, numbers stay
    assert all(n in table for n in ("18,000", "2,000", "500", "200", "5,000", "0.06")), table


@pytest.mark.parametrize("old, new, line, key, words", [
    ("scope: {value_class: production}", "scope: {workload: infrence}", 6, "token_policies[0].scope.workload",
     "unknown workload 'infrence'"),
    ("scope: {value_class: production}", "scope: {squad: a}", 6, "token_policies[0].scope.squad", "unknown scope 'squad'"),
    ('["gpt-4o-mini*"]', '["gpt-4o-mini*", "claude-[haiku"]', 9, "token_policies[0].allowed_models[1]",
     "unclosed '['"),
    ("max_output_tokens: 1000", "max_output_tokens: -5", 8, "token_policies[0].max_output_tokens",
     "must be a positive number of tokens, not -5"),
    ("{tokens: 10000", "{tokens: -1", 14, "token_policies[1].monthly_tokens.tokens", "must be a positive number"),
    ("price_as: gpt-4o-mini", "price_as: gpt-5-imaginary", 10, "token_policies[0].price_as", "cannot be priced"),
    ("price_as: gpt-4o-mini", "price_as: gpt-4o", 10, "token_policies[0].price_as", "not one of the allowed models"),
    ('["gpt-4o-mini*"]\n    price_as: gpt-4o-mini', '["gpt-4o-mini*"]', 9, "token_policies[0].allowed_models",
     "name the model the violating requests are priced at in price_as"),
    ("channels: [hook]\n  - name: experimental-quota", "channels: [nope]\n  - name: experimental-quota", 11,
     "token_policies[0].channels[0]", "cannot be parsed"),
])
def test_bad_policy_names_file_line_and_key(tmp_path, old, new, line, key, words):
    assert old in POLICIES
    cfg, tax = policy_project(tmp_path, POLICIES.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_guardrails(cfg, tax)
    msg = str(err.value)
    assert str(tmp_path / "budgets.yaml") in msg and f"line {line}: {key}: " in msg and words in msg, msg


def test_otel_genai_spans_are_checked_request_by_request(tmp_path):
    """The same check on OpenTelemetry GenAI spans: each span is a request, read again with the connector's parser."""
    import gzip

    import duckdb

    from apportion.guardrails.config import GuardrailsFile
    from apportion.guardrails.token_policies import evaluate, load_requests
    from tests.llm_helpers import make_config
    from tests.test_otel_genai import T, otlp_line

    team = {"service.name": "support-bot", "team": "finance-apps"}
    spans = [  # 1,200 input tokens (200 of them cache reads) and 300 output; then 800 + 100
        (T, {"gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-4o-2024-08-06",
             "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300,
             "gen_ai.usage.cache_read.input_tokens": 200}),
        (T + 5, {"gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-4o-2024-08-06",
                 "gen_ai.usage.input_tokens": 800, "gen_ai.usage.output_tokens": 100}),
    ]
    (tmp_path / "spans").mkdir()
    (tmp_path / "spans" / "traces.jsonl.gz").write_bytes(gzip.compress(otlp_line(team, spans).encode()))
    cfg = make_config(tmp_path, [{"name": "spans", "kind": "otel_genai", "uri": "spans",
                                  "options": {"start_month": MONTH}}])
    src = cfg.source("spans")
    steps.build_line_items(cfg, src, steps.land(cfg, src, MONTH))
    steps.allocate(cfg, src, MONTH)
    con = duckdb.connect()
    for view, table in (("line_items", steps.LINE_ITEMS), ("allocations", steps.ALLOCATIONS)):
        glob = str(steps.partition_dir(cfg, table, "spans", MONTH) / "*.parquet")
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}')")
    checked: list[dict] = []
    reqs = load_requests(con, cfg, load_taxonomy(cfg.taxonomy), 3, checked)
    assert [(r.dims["team"], r.input_tokens, r.output_tokens) for r in reqs] == [
        ("finance-apps", 1200, 300), ("finance-apps", 800, 100)]
    assert [(c["source"], c["month"], c["requests"], c["note"]) for c in checked] == [("spans", MONTH, 2, "checked")]
    g = GuardrailsFile.model_validate({"token_policies": [{"name": "support", "scope": {"team": "finance-apps"},
                                                           "max_input_tokens": 1000}]})
    [row] = evaluate(reqs, g)
    # the first span: input cost 1,000 x 2.5/M + 200 x 1.25/M = 0.00275; 200 of 1,200 over -> 0.000458(3); its cost
    # 0.00275 + 300 x 10/M = 0.00575
    assert (row["rule"], row["requests"], row["tokens_over"], row["excess_cost"], row["cost"]) == (
        "max_input_tokens", 1, 200, Decimal("0.000458"), Decimal("0.00575"))


def test_report_panel_shows_the_violations_in_chromium(built, browser, tmp_path):  # noqa: F811
    """The report's token policy panel: the table rows and the bars (cost of the excess per policy and rule) are
    DuckDB's figures; an API key alias that is markup is shown as text."""
    import duckdb

    from apportion import cli

    root, cfg, _ = built
    out = tmp_path / "report.html"
    assert cli.main(["report", "--config", str(root / "apportion.yaml"), "--month", MONTH, "--out", str(out)]) == 0
    con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    bars = dict(con.execute("SELECT policy || ' · ' || rule, sum(excess_cost) FROM token_policy_violations "
                            "WHERE month = ? GROUP BY ALL", [MONTH]).fetchall())
    con.close()
    # by hand (above): allowed_models 0.0564, max_input 0.005, max_output 0.005 + 0.00012, quota 0.0009
    assert bars == {"prod-inference · allowed_models": Decimal("0.0564"), "prod-inference · max_input_tokens":
                    Decimal("0.005"), "prod-inference · max_output_tokens": Decimal("0.00512"),
                    "experimental-quota · monthly_tokens": Decimal("0.0009")}
    page, errors, external = open_report(browser, out)
    try:
        page.wait_for_function("() => document.querySelector('#chart-token-policies svg.main-svg')", timeout=20_000)
        drawn = page.evaluate("""() => { const d = document.getElementById('chart-token-policies').data[0];
                                         return d.y.map((y, i) => [y, d.x[i]]); }""")
        assert {y: Decimal(str(x)).quantize(Decimal("0.000001")) for y, x in drawn} == bars
        rows = page.locator("[data-testid=token-policy-violations] tbody tr")
        assert rows.count() == 5
        cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(5)]
        assert [c[4] for c in cells].count(KEY_MARKUP) == 1  # the alias as text, not an element
        assert page.locator("[data-testid=token-policy-violations] img").count() == 0
        assert errors == [] and external == []
    finally:
        page.close()
