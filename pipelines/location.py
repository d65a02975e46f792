"""Build the Definitions for one apportion config (used by the code location and the CLI)."""

from __future__ import annotations

import dagster as dg

from apportion.models.config import ApportionConfig
from apportion.pipelines.assets import ledger_assets
from apportion.pipelines.partitions import billing_months_for
from apportion.pipelines.resources import ApportionResource
from apportion.pipelines.schedules import nightly_schedule

OUTPUTS = dg.AssetSelection.groups("outputs")


def build_definitions(cfg: ApportionConfig, extra_months: tuple[str, ...] = ()) -> dg.Definitions:
    """`extra_months`: months the caller will run although no source lists them yet (the CLI's --month)."""
    partitions = billing_months_for(cfg, extra_months)
    assets = ledger_assets(cfg, partitions)
    everything = dg.AssetSelection.assets(*assets)
    # One machine by default; on Kubernetes/ECS swap in their executors, the assets stay the same.
    executor = dg.multiprocess_executor.configured({"max_concurrent": 2})
    nightly = dg.define_asset_job(
        "nightly", selection=everything, executor_def=executor,
        description="Land, normalise and allocate every source for one billing month; publish warehouse and exports.")
    sources = dg.define_asset_job(
        "sources", selection=everything - OUTPUTS, executor_def=executor,
        description="Land, normalise and allocate every source for one billing month (a backfill runs this per "
                    "month, then `publish` once).")
    publish = dg.define_asset_job(
        "publish", selection=OUTPUTS,
        description="Build and publish the warehouse from the lake, then the month's finance pack and the report.")
    export = dg.define_asset_job(
        "export_month", selection=dg.AssetSelection.assets("out_finance_exports"),
        description="The finance pack of one month from the published warehouse.")
    report = dg.define_asset_job(
        "report", selection=dg.AssetSelection.assets("out_report"),
        description="The HTML report from the published warehouse (after a backfill's finance packs).")
    return dg.Definitions(
        assets=assets,
        jobs=[nightly, sources, publish, export, report],
        schedules=[nightly_schedule(nightly, cfg.open_months, partitions)],
        resources={"apportion": ApportionResource(config_path=str(cfg.config_path))},
    )
