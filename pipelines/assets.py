"""The asset graph: per source, raw -> core line items -> core allocations; then the warehouse and exports.

Source x month partitions are independent (each writes only its own lake folder), so they can run
on separate machines with Dagster's Kubernetes/ECS executors. The warehouse is the single writer:
its steps wait in the `apportion_warehouse` pool and hold the warehouse writer lock (pipelines/writer_lock.py).
"""


import dagster as dg

from apportion import steps
from apportion.connectors.base import SourceError
from apportion.models.config import ApportionConfig, SourceConfig
from apportion.pipelines.guardrails import guardrails_asset
from apportion.pipelines.partitions import month_of
from apportion.pipelines.resources import ApportionResource
from apportion.pipelines.writer_lock import warehouse_writer
from apportion.steps.summaries import summarise


def asset_name(source: SourceConfig) -> str:
    return source.name.replace("-", "_")


def line_items_key(source: SourceConfig) -> dg.AssetKey:
    return dg.AssetKey(f"core_line_items_{asset_name(source)}")


MONTH_LINE_ITEMS = dg.AssetKey("core_month_line_items")


def source_assets(source: SourceConfig, billing_months: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """raw -> line items -> allocations for one source. Allocation also reads the other sources' line
    items of the month (split rules may weigh this source's invoice lines by their usage): it waits for
    `core_month_line_items`, the one place where the month's sources meet."""
    name = asset_name(source)
    group = f"source_{name}"

    @dg.asset(
        name=f"raw_{name}",
        partitions_def=billing_months,
        group_name=group,
        kinds={"s3" if source.uri.startswith("s3://") else "file"},
        description=f"The provider's current delivery of {source.name} ({source.kind}) for the billing month, "
        "landed byte for byte in the raw zone with a delivery record (keys, sizes, etags, delivery id).",
    )
    def raw(context: dg.AssetExecutionContext, apportion: ApportionResource) -> dg.MaterializeResult:
        cfg = apportion.config()
        month = month_of(context.partition_key)
        try:
            delivery = steps.land(cfg, cfg.source(source.name), month)
        except SourceError as exc:
            steps.quarantine_file(cfg, cfg.source(source.name), month, exc)
            raise dg.Failure(description=f"{source.name} {month}: {exc}", allow_retries=False) from None
        return dg.MaterializeResult(
            metadata={
                "delivery_id": delivery.delivery_id,
                "layout": delivery.layout,
                "objects": len(delivery.objects),
                "bytes": sum(o["size"] for o in delivery.objects),
                "reused": delivery.reused,
            }
        )

    @dg.asset(
        name=f"core_line_items_{name}",
        deps=[raw.key],
        partitions_def=billing_months,
        group_name=group,
        kinds={"duckdb", "parquet"},
        description=f"FOCUS 1.2 line items of {source.name} for the billing month (Parquet in the lake); "
        "rows that fail validation are quarantined with file, row and reason.",
    )
    def line_items(context: dg.AssetExecutionContext, apportion: ApportionResource) -> dg.MaterializeResult:
        cfg = apportion.config()
        month = month_of(context.partition_key)
        src = cfg.source(source.name)
        try:
            stats = steps.build_line_items(cfg, src, steps.current_delivery(cfg, src, month))
            steps.publish_raw_current(cfg, src, month)  # raw on object storage: its CURRENT object (issue 13)
        except SourceError as exc:
            steps.quarantine_file(cfg, src, month, exc)
            raise dg.Failure(description=f"{source.name} {month}: {exc}", allow_retries=False) from None
        if stats.quarantined_rows:
            context.log.warning(
                f"{source.name} {month}: {stats.quarantined_rows} rows quarantined: {stats.quarantine_reasons}"
            )
        return dg.MaterializeResult(
            metadata={
                "rows": stats.rows,
                "billed_cost": str(stats.billed_cost),
                "effective_cost": str(stats.effective_cost),
                "quarantined_rows": stats.quarantined_rows,
                "delivery_id": stats.delivery_id,
            }
        )

    @dg.asset(
        name=f"core_allocations_{name}",
        deps=[line_items.key, MONTH_LINE_ITEMS],
        partitions_def=billing_months,
        group_name=group,
        kinds={"duckdb", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                "allocation_ties_out",
                asset=f"core_allocations_{name}",
                blocking=True,
                description="Pieces sum exactly to their line item; Σ allocations = Σ line items for the month.",
            )
        ],
        description=f"Every line item of {source.name} attributed to project, team and workload, "
        "with the tag or rule that decided each.",
    )
    def allocations(context: dg.AssetExecutionContext, apportion: ApportionResource):
        cfg = apportion.config()
        month = month_of(context.partition_key)
        try:
            stats = steps.allocate(cfg, cfg.source(source.name), month, apportion.taxonomy())
        except steps.ExactnessError as exc:
            yield dg.AssetCheckResult(check_name="allocation_ties_out", passed=False, metadata={"error": str(exc)})
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        summarise(cfg, source.name, month)  # the month's summaries, once (apportion/steps/summaries.py)
        yield dg.MaterializeResult(
            metadata={"pieces": stats.pieces, "billed_cost": str(stats.billed_cost),
                      "effective_cost": str(stats.effective_cost)},
            check_results=[
                dg.AssetCheckResult(
                    check_name="allocation_ties_out",
                    passed=True,
                    metadata={"billed_cost": str(stats.billed_cost), "effective_cost": str(stats.effective_cost)},
                )
            ],
        )

    return [raw, line_items, allocations]


def ledger_assets(cfg: ApportionConfig, billing_months: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    enabled = [s for s in cfg.sources if s.enabled]
    per_source = [a for s in enabled for a in source_assets(s, billing_months)]
    allocation_keys = [a.key for a in per_source if a.key.path[-1].startswith("core_allocations_")]

    @dg.asset(
        key=MONTH_LINE_ITEMS,
        deps=[line_items_key(s) for s in enabled],
        partitions_def=billing_months,
        group_name="core",
        kinds={"parquet"},
        description="The month's line items of every source, ready together: split rules may weigh one "
        "source's invoice lines by another's usage, so every allocation of the month starts from here.",
    )
    def month_line_items(context: dg.AssetExecutionContext, apportion: ApportionResource) -> dg.MaterializeResult:
        cfg = apportion.config()
        month = month_of(context.partition_key)
        built = {s.name: steps.partition_dir(cfg, steps.LINE_ITEMS, s.name, month).exists()
                 for s in cfg.sources if s.enabled}
        return dg.MaterializeResult(metadata={"sources_built": sum(built.values()),
                                              "missing": ", ".join(n for n, ok in built.items() if not ok) or "none"})

    @dg.asset(
        name="out_warehouse",
        deps=allocation_keys,
        partitions_def=billing_months,
        group_name="outputs",
        kinds={"duckdb"},
        pool="apportion_warehouse",
        check_specs=[
            dg.AssetCheckSpec("warehouse_ties_out", asset="out_warehouse", blocking=True,
                              description="Per source and month, Σ allocations = Σ line items, exactly, and both "
                              "come from the same delivery; checked before the file is published."),
            dg.AssetCheckSpec("allocation_coverage", asset="out_warehouse",
                              description="Warns when spend-weighted coverage of a dimension is below the threshold."),
        ],
        description="apportion.duckdb rebuilt from the whole lake into a staged file, checked (ties out, one "
        "delivery per source and month), then published atomically: a file that fails a check is never "
        "published; analysts holding the previous file keep reading it; nobody sees a half-built file.",
    )
    def warehouse(context: dg.AssetExecutionContext, apportion: ApportionResource):
        cfg = apportion.config()
        with warehouse_writer(cfg, context.instance, context.log.info) as lock:
            for leftover in steps.clean_leftovers(cfg):
                context.log.info(f"removed the leftover of an interrupted run: {leftover}")
            steps.sync_raw_records(cfg)  # raw on object storage: every month's landing records (issue 13)
            try:
                counts = steps.build_warehouse(cfg, apportion.taxonomy())
            except steps.WarehouseNotPublished as exc:
                yield dg.AssetCheckResult(check_name="warehouse_ties_out", passed=False,
                                          metadata={"ties_out": str(exc.ties[:5]), "mixed_deliveries": str(exc.mixed[:5])})
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            if cfg.publish_to:  # a copy of the published file on the object store (issue 13)
                context.log.info(f"published a copy to {steps.publish_warehouse(cfg)}")
            low = steps.low_coverage(cfg, month_of(context.partition_key), cfg.coverage_threshold)
            yield dg.MaterializeResult(
                metadata={**{f"rows_{k}": v for k, v in counts.items()}, "path": str(cfg.duckdb_path),
                          "writer_lock": lock["lock"], "writer_lock_waited_seconds": round(lock["waited_seconds"], 1)},
                check_results=[
                    # checked on the staged file before it replaced the published one (build_warehouse)
                    dg.AssetCheckResult(check_name="warehouse_ties_out", passed=True),
                    dg.AssetCheckResult(
                        check_name="allocation_coverage",
                        passed=not low,
                        severity=dg.AssetCheckSeverity.WARN,
                        metadata={"threshold": cfg.coverage_threshold,
                                  "below": "; ".join(f"{s} {d}: {c:.1%}" for s, d, c in low) or "none"},
                    ),
                ],
            )

    @dg.asset(
        name="out_finance_exports",
        deps=[warehouse.key],
        partitions_def=billing_months,
        group_name="outputs",
        kinds={"csv"},
        description="The month's finance pack: allocation by team, project and workload, line-level "
        "allocation, untagged spend and control totals that tie to the bill.",
    )
    def finance_exports(context: dg.AssetExecutionContext, apportion: ApportionResource) -> dg.MaterializeResult:
        cfg = apportion.config()
        out = steps.export_month(cfg, month_of(context.partition_key))
        return dg.MaterializeResult(metadata={"path": str(out), "files": sorted(p.name for p in out.iterdir())})

    @dg.asset(
        name="out_report",
        deps=[finance_exports.key],
        partitions_def=billing_months,
        group_name="outputs",
        kinds={"html"},
        description="The static HTML report (<warehouse>/report/index.html): spend by team and provider, untagged "
        "spend and coverage, AI unit economics, links to the finance pack. Self-contained, works offline.",
    )
    def report(context: dg.AssetExecutionContext, apportion: ApportionResource) -> dg.MaterializeResult:
        from apportion.report import write_report

        out = write_report(apportion.config())  # the index + the pages whose data changed (issue 10)
        return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out))})

    return [*per_source, month_line_items, warehouse, finance_exports, report, guardrails_asset(warehouse),
            __import__("apportion.pipelines.close").pipelines.close.close_asset(warehouse)]  # issue 17
