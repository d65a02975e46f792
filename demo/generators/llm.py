"""Deterministic demo of LLM spend: a LiteLLM gateway's spend logs plus OpenAI and Anthropic admin-API pages.

The story: the demo organisation sends most of its LLM traffic through a LiteLLM proxy that tags every
request with team, project, workload and feature. The proxy calls OpenAI and Anthropic with ONE key each
(so the providers' own usage reports see a single project / workspace) and Bedrock (billed in the AWS
demo CUR). The support team also calls a fine-tuned OpenAI model directly, and someone uses the Anthropic
Console; OpenAI bills a small file-search fee too. Invoices (OpenAI Costs API, Anthropic cost report)
price all of it at catalogue prices, so reconciling them against the gateway's priced usage leaves a
visible residual: the direct traffic and the fees.

Planted for the guardrails (demo/guardrails/budgets.yaml, docs/guardrails.md): on the 18th to the 20th of
every month a research notebook agent is stuck in a retry loop, re-sending a ~150k-token context 600 times a
day (`agent-loop`: a spend anomaly of ~$870 on research / Claude API, and requests over the experimental
input-token limit); the fraud team escalates cases to Claude Opus, which production inference does not allow,
with long answers (`fraud-escalation`: allowed-models and output-token violations); the catalogue
embeddings of recsys pass their monthly token quota in the second half of a full month.

Written under `<out>/`:

* `litellm/spend-logs-YYYY-MM.csv.gz`: a `LiteLLM_SpendLogs` export, one row per request;
* `openai/v1/organization/usage/{completions,embeddings}/<start_time>.json` (completions in two pages,
  the second named by its `next_page` cursor) and `openai/v1/organization/costs/<start_time>.json`;
* `anthropic/v1/organizations/{usage_report/messages,cost_report}/<starting_at>.json`.

The API folders are what `kind: openai` / `kind: anthropic` read when their `uri` is a local folder, so
`make demo` needs no server. Everything is a pure function of the seed and the months (the current month
stops at today, UTC).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from apportion.connectors.base import safe_dirname
from apportion.connectors.litellm import COLUMNS
from apportion.connectors.llm import month_bounds
from apportion.models.prices import PriceBook

GATEWAY_OPENAI_PROJECT = "proj_Gateway7Qx2"
GATEWAY_OPENAI_KEY = "key_LiteLLMProxy01"
SUPPORT_PROJECT = "proj_SupportDirect4k"
SUPPORT_KEY = "key_SupportBot02"
FINE_TUNE = "ft:gpt-4o-mini-2024-07-18:acme-demo:support-bot:Bq81xZ3d"
GATEWAY_WORKSPACE = "wrkspc_01GatewayProd"
GATEWAY_ANTHROPIC_KEY = "apikey_01LiteLLMProxy"
ORG_ID = "org-ApportionDemo0001"


@dataclass(frozen=True)
class Profile:
    """One stream of requests: who sends it, to which model, how big the requests are."""

    name: str
    team: str
    project: str
    workload: str
    feature: str
    key_alias: str
    provider: str          # LiteLLM custom_llm_provider: openai | anthropic | bedrock
    model: str
    per_day: int
    prompt: int            # mean prompt tokens (total, including cached)
    completion: int
    cache_read: float = 0.0   # share of the prompt read from cache
    cache_write: float = 0.0  # share of the prompt written to cache (Anthropic-style)
    one_hour: float = 0.0     # share of cache writes with the 1h TTL
    call_type: str = "acompletion"
    gateway: bool = True
    days: tuple[int, ...] = ()   # only on these days of the month (a planted incident); () = every day


PROFILES = (
    Profile("answers", "search", "chatbot", "inference", "answers", "search-answers", "openai",
            "gpt-4o-2024-08-06", 120, 7000, 450, cache_read=0.5),
    Profile("rerank", "search", "chatbot", "inference", "rerank", "search-rerank", "openai",
            "gpt-4o-mini-2024-07-18", 200, 2000, 60, cache_read=0.2),
    Profile("embed", "search", "recsys", "batch-scoring", "catalog-embeddings", "recsys-embed", "openai",
            "text-embedding-3-small", 40, 80000, 0, call_type="aembedding"),
    Profile("research-agent", "research", "research-sandbox", "notebooks", "lit-review", "research-notebooks",
            "anthropic", "claude-sonnet-4-5-20250929", 45, 30000, 1500, cache_read=0.7, cache_write=0.1,
            one_hour=0.3),
    Profile("fraud-triage", "finance-apps", "fraud-detection", "inference", "triage", "fraud-triage", "anthropic",
            "claude-haiku-4-5-20251001", 150, 4000, 300, cache_read=0.3, cache_write=0.05),
    Profile("serving", "ml-platform", "llm-serving", "inference", "assistant", "platform-serving", "bedrock",
            "us.anthropic.claude-sonnet-4-6", 80, 5000, 600),
    Profile("etl-extract", "data-eng", "data-lake", "etl", "doc-extract", "lake-extract", "bedrock",
            "us.amazon.nova-pro-v1:0", 90, 6000, 400),
    Profile("fraud-explain", "finance-apps", "fraud-detection", "inference", "case-summaries", "fraud-explain",
            "openai", "gpt-4o-2024-08-06", 40, 5000, 600, cache_read=0.3),
    Profile("search-agent", "search", "chatbot", "inference", "deep-answers", "search-agent", "anthropic",
            "claude-sonnet-4-5-20250929", 30, 16000, 900, cache_read=0.6, cache_write=0.08),
    # Planted for the guardrails: a notebook agent in a retry loop (an anomaly, over the experimental input
    # limit) and escalations to a model production inference does not allow (over its output limit too).
    Profile("agent-loop", "research", "research-sandbox", "notebooks", "lit-review", "research-notebooks",
            "anthropic", "claude-sonnet-4-5-20250929", 600, 150000, 2000, days=(18, 19, 20)),
    Profile("fraud-escalation", "finance-apps", "fraud-detection", "inference", "escalations", "fraud-escalation",
            "anthropic", "claude-opus-4-1-20250805", 6, 9000, 2600),
    # Direct traffic the gateway never sees (only the providers' reports and invoices do).
    Profile("support-direct", "finance-apps", "chatbot", "inference", "support", "-", "openai", FINE_TUNE, 80,
            1500, 250, gateway=False),
    Profile("console", "research", "research-sandbox", "notebooks", "console", "-", "anthropic",
            "claude-opus-4-1-20250805", 5, 8000, 1200, gateway=False),
)


@dataclass
class Request:
    profile: Profile
    request_id: str
    start: datetime
    prompt: int          # total input (uncached + cache read + cache write)
    cache_read: int
    cache_write: int
    cache_write_1h: int
    completion: int


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random("|".join(str(p) for p in (seed, *parts)))


def _days(month: str, today: date) -> list[date]:
    start, end = month_bounds(month)
    last = min(end - timedelta(days=1), today)
    return [start + timedelta(days=i) for i in range((last - start).days + 1)]


def requests_for(month: str, *, seed: int = 7, today: date | None = None) -> list[Request]:
    """Every request of the month (gateway and direct), deterministic."""
    today = today or datetime.now(timezone.utc).date()
    out = []
    for day in _days(month, today):
        weekday_factor = 0.6 if day.weekday() >= 5 else 1.0
        for p in PROFILES:
            if p.days and day.day not in p.days:
                continue
            rng = _rng(seed, month, p.name, day.isoformat())
            n = max(1, round(p.per_day * weekday_factor * rng.uniform(0.8, 1.2)))
            for i in range(n):
                prompt = max(50, int(rng.gauss(p.prompt, p.prompt * 0.25)))
                read = int(prompt * p.cache_read * rng.uniform(0.7, 1.0))
                write = int(prompt * p.cache_write * rng.uniform(0.5, 1.0))
                write_1h = int(write * p.one_hour)
                completion = max(0, int(rng.gauss(p.completion, p.completion * 0.3))) if p.completion else 0
                start = datetime.combine(day, time(0), tzinfo=timezone.utc) + timedelta(
                    seconds=int(86400 * (i + rng.random()) / n))
                out.append(Request(p, f"chatcmpl-{_rng(seed, month, p.name, day, i).getrandbits(64):016x}", start,
                                   prompt, read, write, write_1h, completion))
    return out


# ------------------------------------------------------------------ LiteLLM spend logs
def _spend_row(r: Request, book: PriceBook) -> dict:
    p = r.profile
    if p.provider == "openai":
        usage = {"prompt_tokens": r.prompt, "completion_tokens": r.completion, "total_tokens": r.prompt + r.completion,
                 "prompt_tokens_details": {"cached_tokens": r.cache_read, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
    else:
        usage = {"prompt_tokens": r.prompt, "completion_tokens": r.completion, "total_tokens": r.prompt + r.completion,
                 "cache_read_input_tokens": r.cache_read, "cache_creation_input_tokens": r.cache_write,
                 "cache_creation": {"ephemeral_5m_input_tokens": r.cache_write - r.cache_write_1h,
                                    "ephemeral_1h_input_tokens": r.cache_write_1h},
                 "prompt_tokens_details": {"cached_tokens": r.cache_read}}
    team_id = f"team-{p.team}"
    metadata = {
        "user_api_key": hashlib.sha256(p.key_alias.encode()).hexdigest(), "user_api_key_alias": p.key_alias,
        "user_api_key_team_id": team_id, "user_api_key_team_alias": p.team, "user_api_key_user_id": None,
        "spend_logs_metadata": {"project": p.project, "workload": p.workload},
        "usage_object": usage, "status": "success",
        "cost_breakdown": {"total_cost": 0.0},  # LiteLLM's own estimate: not used
    }
    model_group = {"openai": "", "anthropic": "", "bedrock": "bedrock-"}[p.provider] + p.model.split("-20")[0]
    return {
        "request_id": r.request_id, "call_type": p.call_type, "api_key": metadata["user_api_key"], "spend": 0.0,
        "total_tokens": r.prompt + r.completion, "prompt_tokens": r.prompt, "completion_tokens": r.completion,
        "startTime": r.start.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "endTime": (r.start + timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "model": p.model, "model_id": f"{p.provider}-{p.name}", "model_group": model_group,
        "custom_llm_provider": p.provider, "api_base": "", "user": "", "metadata": json.dumps(metadata),
        "cache_hit": "False", "request_tags": json.dumps([f"team:{p.team}", f"feature:{p.feature}"]),
        "team_id": team_id, "organization_id": "", "end_user": "", "status": "success", "session_id": "",
    }


def write_litellm(out: Path, month: str, reqs: list[Request], book: PriceBook) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in reqs:
        if r.profile.gateway:
            w.writerow(_spend_row(r, book))
    path = out / "litellm" / f"spend-logs-{month}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
    return path


# ------------------------------------------------------------------ provider pages
def _unix(d: date) -> int:
    return int(datetime.combine(d, time(0), tzinfo=timezone.utc).timestamp())


def _money(d: Decimal, places: str = "0.000001") -> Decimal:
    return d.quantize(Decimal(places), rounding=ROUND_HALF_EVEN)


def _write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=lambda o: float(o) if isinstance(o, Decimal) else str(o)))
    return path


def _tokens(r: Request) -> dict[str, int]:
    """Token types of a request (uncached input excludes cache reads and writes)."""
    return {"input": r.prompt - r.cache_read - r.cache_write, "cache_read": r.cache_read,
            "cache_write_5m": r.cache_write - r.cache_write_1h, "cache_write_1h": r.cache_write_1h,
            "output": r.completion}


def write_openai(out: Path, month: str, days: list[date], reqs: list[Request], book: PriceBook) -> list[Path]:
    root = out / "openai" / "v1" / "organization"
    start = str(_unix(days[0]))
    usage: dict = {}
    costs: dict = {}
    for r in reqs:
        p = r.profile
        if p.provider != "openai":
            continue
        day = r.start.date()
        project, key = (GATEWAY_OPENAI_PROJECT, GATEWAY_OPENAI_KEY) if p.gateway else (SUPPORT_PROJECT, SUPPORT_KEY)
        endpoint = "embeddings" if p.call_type == "aembedding" else "completions"
        u = usage.setdefault((endpoint, day, project, key, p.model), {"input": 0, "cached": 0, "output": 0, "n": 0})
        u["input"] += r.prompt
        u["cached"] += r.cache_read
        u["output"] += r.completion
        u["n"] += 1
        for t, n in _tokens(r).items():
            if n:
                label = {"input": "input", "cache_read": "cached input", "output": "output"}[t]
                amount = book.price("openai", p.model, t, day).cost(n)
                c = costs.setdefault((day, project, f"{p.model.replace('ft:', 'ft-').split(':')[0]}, {label}"),
                                     Decimal(0))
                costs[(day, project, f"{p.model.replace('ft:', 'ft-').split(':')[0]}, {label}")] = c + amount
    for day in days:  # the file-search tool fee: billed, never in token usage
        costs[(day, None, "assistants api | file search")] = Decimal("0.25")

    def bucket(day, results):
        return {"object": "bucket", "start_time": _unix(day), "end_time": _unix(day + timedelta(days=1)),
                "results": results}

    files = []
    for endpoint in ("completions", "embeddings"):
        per_day = {d: [] for d in days}
        for (ep, day, project, key, model), u in sorted(usage.items(), key=lambda kv: (kv[0][1], kv[0][2:])):
            if ep != endpoint:
                continue
            res = {"object": f"organization.usage.{endpoint}.result", "input_tokens": u["input"],
                   "num_model_requests": u["n"], "project_id": project, "user_id": None, "api_key_id": key,
                   "model": model, "batch": False if endpoint == "completions" else None}
            if endpoint == "completions":
                res.update(input_cached_tokens=u["cached"], output_tokens=u["output"], input_audio_tokens=0,
                           output_audio_tokens=0, service_tier="default", api_source=None)
            per_day[day].append(res)
        buckets = [bucket(d, per_day[d]) for d in days]
        folder = root / "usage" / endpoint
        if endpoint == "completions" and len(buckets) > 1:
            half = len(buckets) // 2
            cursor = f"page_{month.replace('-', '')}_{half:02d}"
            files.append(_write(folder / f"{start}.json", {"object": "page", "data": buckets[:half], "has_more": True,
                                                          "next_page": cursor}))
            files.append(_write(folder / f"{safe_dirname(cursor)}.json",
                                {"object": "page", "data": buckets[half:], "has_more": False, "next_page": None}))
        else:
            files.append(_write(folder / f"{start}.json", {"object": "page", "data": buckets, "has_more": False,
                                                          "next_page": None}))
    per_day = {d: [] for d in days}
    for (day, project, line_item), amount in sorted(costs.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])):
        per_day[day].append({"object": "organization.costs.result",
                             "amount": {"value": _money(amount), "currency": "usd"}, "line_item": line_item,
                             "project_id": project, "organization_id": ORG_ID})
    files.append(_write(root / "costs" / f"{start}.json", {"object": "page", "data": [bucket(d, per_day[d]) for d in days],
                                                         "has_more": False, "next_page": None}))
    return files


ANTHROPIC_NAMES = {"claude-sonnet-4-5": "Claude Sonnet 4.5", "claude-haiku-4-5": "Claude Haiku 4.5",
                   "claude-opus-4-1": "Claude Opus 4.1"}
COST_TOKEN_TYPES = {"input": ("uncached_input_tokens", "Input Tokens"),
                    "cache_read": ("cache_read_input_tokens", "Cache Read"),
                    "cache_write_5m": ("cache_creation.ephemeral_5m_input_tokens", "Cache Write (5m)"),
                    "cache_write_1h": ("cache_creation.ephemeral_1h_input_tokens", "Cache Write (1h)"),
                    "output": ("output_tokens", "Output Tokens")}


def write_anthropic(out: Path, month: str, days: list[date], reqs: list[Request], book: PriceBook) -> list[Path]:
    root = out / "anthropic" / "v1" / "organizations"
    first = safe_dirname(f"{days[0].isoformat()}T00:00:00Z")
    usage: dict = {}
    costs: dict = {}
    for r in reqs:
        p = r.profile
        if p.provider != "anthropic":
            continue
        day = r.start.date()
        workspace, key = (GATEWAY_WORKSPACE, GATEWAY_ANTHROPIC_KEY) if p.gateway else (None, None)
        u = usage.setdefault((day, workspace or "", key or "", p.model), {t: 0 for t in COST_TOKEN_TYPES})
        for t, n in _tokens(r).items():
            u[t] += n
            if n:
                cents = book.price("anthropic", p.model, t, day).cost(n) * 100
                k = (day, workspace or "", p.model, t)
                costs[k] = costs.get(k, Decimal(0)) + cents

    def bucket(day, results):
        return {"starting_at": f"{day.isoformat()}T00:00:00Z",
                "ending_at": f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z", "results": results}

    per_day = {d: [] for d in days}
    for (day, workspace, key, model), u in sorted(usage.items()):
        per_day[day].append({
            "uncached_input_tokens": u["input"],
            "cache_creation": {"ephemeral_1h_input_tokens": u["cache_write_1h"],
                               "ephemeral_5m_input_tokens": u["cache_write_5m"]},
            "cache_read_input_tokens": u["cache_read"], "output_tokens": u["output"],
            "server_tool_use": {"web_search_requests": 0}, "api_key_id": key or None,
            "workspace_id": workspace or None, "model": model, "service_tier": "standard",
            "context_window": "0-200k", "inference_geo": "global"})
    files = [_write(root / "usage_report" / "messages" / f"{first}.json",
                    {"data": [bucket(d, per_day[d]) for d in days], "has_more": False, "next_page": None})]
    per_day = {d: [] for d in days}
    for (day, workspace, model, t), cents in sorted(costs.items()):
        name = ANTHROPIC_NAMES[model.rsplit("-", 1)[0]]
        token_type, label = COST_TOKEN_TYPES[t]
        per_day[day].append({"currency": "USD", "amount": str(_money(cents, "0.0001")), "workspace_id": workspace or None,
                             "description": f"{name} Usage - {label}", "cost_type": "tokens",
                             "context_window": "0-200k", "model": model, "service_tier": "standard",
                             "token_type": token_type, "inference_geo": "global"})
    files.append(_write(root / "cost_report" / f"{first}.json",
                        {"data": [bucket(d, per_day[d]) for d in days], "has_more": False, "next_page": None}))
    return files


def generate_llm_demo(out_dir: str | Path, months: list[str], *, seed: int = 7, today: date | None = None) -> list[Path]:
    """Write the gateway export and the provider pages for each month; returns the files written."""
    out = Path(out_dir)
    today = today or datetime.now(timezone.utc).date()
    book = PriceBook()
    files: list[Path] = []
    for month in months:
        days = _days(month, today)
        if not days:
            continue
        reqs = requests_for(month, seed=seed, today=today)
        files.append(write_litellm(out, month, reqs, book))
        files += write_openai(out, month, days, reqs, book)
        files += write_anthropic(out, month, days, reqs, book)
    return files
