"""Issue 11 point 6: the demo's guardrails. The demo CUR (the shared `outputs_demo_project`) plus the demo LLM
sources (demo/generators/llm.py, the previous month) with the demo budgets file: a budget over, the planted
anomaly (a research agent's retry loop on the 18th-20th), the planted token policy violations; each alert arrives
once at a local HTTP receiver. The violation figures are recomputed here from the generator's own requests.
(Without the demo's GPU, Azure and GCP sources research spends ~61k, not ~93k: the copy's budget is 50k.)"""

from __future__ import annotations

import shutil
from datetime import date

import yaml

from apportion import steps
from apportion.demo.generators.aws_cur import demo_months
from apportion.demo.generators.llm import generate_llm_demo, requests_for
from apportion.models.config import load_config
from apportion.models.taxonomy import load_taxonomy
from tests.llm_helpers import REPO
from tests.test_guardrails_budgets import http_receiver  # noqa: F401 - the local HTTP receiver fixture

LLM_SOURCES = ("llm-gateway", "openai-org", "anthropic-org")


def test_demo_budget_anomaly_and_policy_violations_arrive_once(outputs_demo_project, http_receiver, tmp_path,  # noqa: F811
                                                               monkeypatch):
    from apportion.guardrails.run import current, current_violations, run_guardrails

    cfg_path, _ = outputs_demo_project
    root = tmp_path / "project"
    shutil.copytree(cfg_path.parent, root)  # a copy: the shared demo project stays as it is
    prev = demo_months()[0]
    today = date.today()
    generate_llm_demo(root / "demo-llm", [prev], today=today)
    shutil.copytree(REPO / "demo" / "guardrails", root / "guardrails")
    budgets = (root / "guardrails" / "budgets.yaml").read_text()
    assert "    amount: 80000\n" in budgets
    (root / "guardrails" / "budgets.yaml").write_text(budgets.replace("    amount: 80000\n", "    amount: 50000\n", 1))
    doc = yaml.safe_load((root / "apportion.yaml").read_text())
    demo = yaml.safe_load((REPO / "demo" / "apportion.yaml").read_text())
    for s in demo["sources"]:
        if s["name"] in LLM_SOURCES:
            doc["sources"].append({**s, "uri": "demo-llm/" + s["uri"].rsplit("/", 1)[-1]})
    doc["budgets"] = "guardrails/budgets.yaml"
    (root / "apportion.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(root / "apportion.yaml")
    tax = load_taxonomy(cfg.taxonomy)
    for name in LLM_SOURCES:
        src = cfg.source(name)
        steps.build_line_items(cfg, src, steps.land(cfg, src, prev))
        steps.allocate(cfg, src, prev)
    steps.build_warehouse(cfg, tax)

    budgets, anomalies, _ = current(cfg)
    # the budget over: research spends more than its budget in the previous (closed) month
    [over] = [b for b in budgets if b["budget"] == "research-monthly" and b["period"] == prev]
    assert over["actual"] > over["amount"] and over["status"] == "critical"
    # the planted anomaly: the agent loop on the 18th-20th of the previous month, one episode per series
    y, m = int(prev[:4]), int(prev[5:])
    loop = [a for a in anomalies if a["first_day"] == date(y, m, 18) and a["last_day"] == date(y, m, 20)]
    assert {(a["series_kind"], a["series"]) for a in loop} >= {("team x model", "research / claude-sonnet-4-5"),
                                                               ("team x service", "research / Claude API")}
    assert all(a["impact"] > 250 and not a["provisional"] for a in loop)

    # the planted violations, recomputed from the generator's requests of the previous month
    reqs = requests_for(prev, today=today)
    escalations = [r for r in reqs if r.profile.name == "fraud-escalation"]
    looping = [r for r in reqs if r.profile.name == "agent-loop" and r.prompt > 100_000]
    rows = {(v["policy"], v["rule"], v["month"], v["api_key"]): v for v in current_violations(cfg)}
    models = rows[("production-inference", "allowed_models", prev, "fraud-escalation")]
    assert (models["requests"], models["tokens_over"], models["team"], models["model"]) == (
        len(escalations), sum(r.prompt + r.completion for r in escalations), "finance-apps", "claude-opus-4-1")
    assert 0 < models["allowed_model_cost"] < models["cost"]  # Sonnet prices are a fifth of Opus's
    out = rows[("production-inference", "max_output_tokens", prev, "fraud-escalation")]
    assert (out["requests"], out["tokens_over"]) == (
        sum(r.completion > 2000 for r in escalations), sum(r.completion - 2000 for r in escalations if r.completion > 2000))
    big = rows[("experiments", "max_input_tokens", prev, "research-notebooks")]
    assert (big["requests"], big["tokens_over"]) == (len(looping), sum(r.prompt - 100_000 for r in looping))

    url, received = http_receiver
    monkeypatch.setenv("APPORTION_DEMO_ALERTS_URL", url)
    first = run_guardrails(cfg, tax)
    titles = [r["title"] for r in received]
    assert first["failed"] == 0 and first["sent"] == len(received) == len(set(titles))
    assert any(t.startswith(f"[critical] budget research-monthly {prev}: spent") for t in titles)
    assert any(t.startswith("[warn] spend anomaly") and f"research / claude-sonnet-4-5 {prev}-18..{prev}-20" in t
               for t in titles)
    assert any(t.startswith(f"[warn] token policy production-inference {prev}: {len(escalations)} request(s) over "
                            "allowed_models (finance-apps)") for t in titles)
    assert any(t.startswith(f"[warn] token policy experiments {prev}: {len(looping)} request(s) over "
                            "max_input_tokens (research)") for t in titles)
    # a second night sends nothing again
    again = run_guardrails(cfg, tax)
    assert (again["sent"], again["already_sent"]) == (0, first["sent"]) and len(received) == first["sent"]
