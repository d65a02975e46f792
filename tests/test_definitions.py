"""The code location loads, and its asset graph is what we expect (a change here is deliberate)."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from apportion.demo import DEMO_CONFIG
from apportion.models.config import load_config
from apportion.pipelines.location import build_definitions
from apportion.pipelines.partitions import open_months


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
    # one place where the month's sources meet: allocations wait for core_month_line_items, not for every
    # source's line items (no full mesh: 2 edges per source instead of one per pair)
    per_source = [e for n in names for e in (
        (f"core_allocations_{n}", "out_warehouse"),
        (f"raw_{n}", f"core_line_items_{n}"),
        (f"core_line_items_{n}", f"core_allocations_{n}"),
        (f"core_line_items_{n}", "core_month_line_items"),
        ("core_month_line_items", f"core_allocations_{n}"),
    )]
    assert edges == sorted(per_source + [
        ("out_finance_exports", "out_report"),
        ("out_warehouse", "out_finance_exports"),
        ("out_warehouse", "out_guardrails"),
        ("out_warehouse", "out_month_close"),
    ])
    assert len(edges) <= 5 * len(names) + 4
    checks = sorted(k.to_user_string() for k in graph.asset_check_keys)
    assert checks == sorted([f"core_allocations_{n}:allocation_ties_out" for n in names] + [
        "out_warehouse:allocation_coverage",
        "out_warehouse:warehouse_ties_out",
        "out_guardrails:no_new_anomaly",
        "out_guardrails:within_budget",
        "out_month_close:closed_pack_ties_out",
    ])
    job = defs.resolve_job_def("nightly")
    assert job.partitions_def is not None
    assert {"sources", "publish", "export_month"} <= {j.name for j in defs.resolve_all_job_defs()}
    assert defs.resolve_schedule_def("nightly").cron_schedule == "0 5 * * *"


def _project_with_months(tmp_path, *months):
    from tests.test_allocation import write_delivery

    for month in months:
        write_delivery(tmp_path / "bucket", month=month)
    (tmp_path / "taxonomy.yaml").write_text(DEMO_CONFIG.with_name("taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws\n    kind: aws_cur\n    uri: bucket/export\n")
    return load_config(tmp_path / "apportion.yaml")


def test_nightly_schedule_requests_the_open_months(tmp_path):
    defs = build_definitions(_project_with_months(tmp_path, "2025-11", "2025-12"))
    schedule = defs.resolve_schedule_def("nightly")
    when = datetime(2026, 1, 15, 5, tzinfo=timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["2025-12-01", "2026-01-01"]
    assert open_months(when, 3) == ["2025-11", "2025-12", "2026-01"]
    # a month before the first one any source has is not requested (it is not a partition)
    early = datetime(2025, 11, 15, 5, tzinfo=timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=early, repository_def=defs.get_repository_def())
    assert [r.partition_key for r in schedule.evaluate_tick(ctx).run_requests] == ["2025-11-01"]


def test_partitions_start_at_the_first_month_a_source_has(tmp_path):
    _project_with_months(tmp_path, "2025-03", "2025-05")
    defs = build_definitions(load_config(tmp_path / "apportion.yaml"))
    keys = defs.resolve_job_def("nightly").partitions_def.get_partition_keys()
    assert keys[0] == "2025-03-01" and "2018-01-01" not in keys
    # a month the CLI is asked for before the first one becomes a partition too (it fails with the source's reason)
    keys = build_definitions(load_config(tmp_path / "apportion.yaml"), ("2025-01",)).resolve_job_def(
        "nightly").partitions_def.get_partition_keys()
    assert keys[0] == "2025-01-01"


def test_make_dev_prints_the_address_and_takes_the_port():
    makefile = (DEMO_CONFIG.parent.parent / "Makefile").read_text()
    dev = makefile.split("\ndev:", 1)[1].split("\n\n", 1)[0]
    assert "PORT" in dev and "http://" in dev and "-p $(PORT)" in dev
