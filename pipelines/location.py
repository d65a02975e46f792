"""Build the Definitions for one apportion config (used by the code location and the CLI)."""

from __future__ import annotations

import dagster as dg

from apportion.models.config import ApportionConfig
from apportion.pipelines.assets import ledger_assets
from apportion.pipelines.resources import ApportionResource
from apportion.pipelines.schedules import nightly_schedule


def build_definitions(cfg: ApportionConfig) -> dg.Definitions:
    assets = ledger_assets(cfg)
    nightly = dg.define_asset_job(
        "nightly",
        selection=dg.AssetSelection.assets(*assets),
        description="Land, normalise and allocate every source for one billing month; publish warehouse and exports.",
        # One machine by default; on Kubernetes/ECS swap in their executors, the assets stay the same.
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
    )
    return dg.Definitions(
        assets=assets,
        jobs=[nightly],
        schedules=[nightly_schedule(nightly, cfg.open_months)],
        resources={"apportion": ApportionResource(config_path=str(cfg.config_path))},
    )

