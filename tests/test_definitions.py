"""The code location loads, and its asset graph is what we expect (a change here is deliberate)."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from apportion.demo import DEMO_CONFIG
from apportion.models.config import load_config
from apportion.pipelines.location import build_definitions
from apportion.pipelines.schedules import open_months


def test_demo_code_location_asset_graph():
    defs = build_definitions(load_config(DEMO_CONFIG))
    graph = defs.resolve_asset_graph()
    edges = sorted(
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    )
    # every demo source has raw -> line items -> allocations -> warehouse; the outputs follow
    names = [s.name.replace("-", "_") for s in load_config(DEMO_CONFIG).sources]
    assert {"aws_main", "llm_gateway", "openai_org", "anthropic_org"} <= set(names)
    # (split rules weigh a source's lines by other sources' usage: allocations wait for every source's line items)
    per_source = [e for n in names for e in (
        (f"core_allocations_{n}", "out_warehouse"),
        (f"raw_{n}", f"core_line_items_{n}"),
        *((f"core_line_items_{m}", f"core_allocations_{n}") for m in names),
    )]
    assert edges == sorted(per_source + [
        ("out_finance_exports", "out_report"),
        ("out_warehouse", "out_finance_exports"),
    ])
    checks = sorted(k.to_user_string() for k in graph.asset_check_keys)
    assert checks == sorted([f"core_allocations_{n}:allocation_ties_out" for n in names] + [
        "out_warehouse:allocation_coverage",
        "out_warehouse:warehouse_ties_out",
    ])
    job = defs.resolve_job_def("nightly")
    assert job.partitions_def is not None and job.partitions_def.get_partition_keys()[0] == "2018-01-01"
    assert defs.resolve_schedule_def("nightly").cron_schedule == "0 5 * * *"


def test_nightly_schedule_requests_the_open_months():
    defs = build_definitions(load_config(DEMO_CONFIG))
    schedule = defs.resolve_schedule_def("nightly")
    when = datetime(2026, 1, 15, 5, tzinfo=timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["2025-12-01", "2026-01-01"]
    assert open_months(when, 3) == ["2025-11", "2025-12", "2026-01"]
