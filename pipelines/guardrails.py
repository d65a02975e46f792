"""The out_guardrails asset: after the warehouse, send the guardrail alerts (once each) and warn in Dagster
when a budget is over or a new anomaly appeared (WARN asset checks: they alert, they do not block)."""

import dagster as dg

from apportion.pipelines.resources import ApportionResource
from apportion.pipelines.writer_lock import warehouse_writer


def guardrails_asset(warehouse: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """out_guardrails after `warehouse`, on the same partitions."""

    @dg.asset(
        name="out_guardrails",
        deps=[warehouse.key],
        partitions_def=warehouse.partitions_def,
        group_name="outputs",
        kinds={"duckdb"},
        pool="apportion_warehouse",
        check_specs=[
            dg.AssetCheckSpec("within_budget", asset="out_guardrails",
                              description="Warns when a budget's actual spend crossed a threshold this period."),
            dg.AssetCheckSpec("no_new_anomaly", asset="out_guardrails",
                              description="Warns when a spend anomaly (not provisional, not dismissed) was alerted "
                              "for the first time by this run."),
        ],
        description="Budgets, forecasts, anomalies and token policy violations from the published warehouse; each "
        "alert (budget x threshold x period, anomaly, or token policy x rule x month x team) is sent once through its "
        "channels; failed sends are retried next run.",
    )
    def out_guardrails(context: dg.AssetExecutionContext, apportion: ApportionResource):
        from apportion.guardrails.run import run_guardrails

        cfg = apportion.config()
        with warehouse_writer(cfg, context.instance, context.log.info):
            result = run_guardrails(cfg, apportion.taxonomy())
        yield dg.MaterializeResult(
            metadata={"sent": result["sent"], "failed": result["failed"], "already_sent": result["already_sent"],
                      "new_token_policy_violations": "; ".join(result["new_policy_violations"]) or "none"},
            check_results=[
                dg.AssetCheckResult(check_name="within_budget", passed=not result["over_budget"],
                                    severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"over": "; ".join(result["over_budget"]) or "none"}),
                dg.AssetCheckResult(check_name="no_new_anomaly", passed=not result["new_anomalies"],
                                    severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"new": "; ".join(result["new_anomalies"]) or "none"}),
            ],
        )

    return out_guardrails
