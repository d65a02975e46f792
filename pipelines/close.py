"""The out_month_close asset (issue 17): after the warehouse, close the months that are due
(`close_after_days`), then check that every closed month ties out: its frozen pack's control totals, the
frozen pieces, and closed + Σ restatement deltas = current (the deltas themselves are computed when the
warehouse is built, so every nightly run restates the closed months it rebuilt)."""

import dagster as dg

from apportion.pipelines.resources import ApportionResource
from apportion.pipelines.writer_lock import warehouse_writer


def close_asset(warehouse: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """out_month_close after `warehouse`, on the same partitions."""

    @dg.asset(
        name="out_month_close",
        deps=[warehouse.key],
        partitions_def=warehouse.partitions_def,
        group_name="outputs",
        kinds={"csv"},
        pool="apportion_warehouse",
        check_specs=[
            dg.AssetCheckSpec("closed_pack_ties_out", asset="out_month_close", blocking=True,
                              description="Every closed month's frozen pack ties out (control totals, frozen pieces) "
                              "and closed + Σ restatement deltas = current, per source, exactly."),
        ],
        description="Month close: closes the months due (close_after_days after month end; `apportion close` by "
        "hand) into <warehouse>/closed/<month>/ and checks the closed packs; later restatements are the "
        "warehouse's `restatements` table and restatement_deltas.csv in the month's pack (docs/close.md).",
    )
    def out_month_close(context: dg.AssetExecutionContext, apportion: ApportionResource):
        from apportion.close.store import close_month, closed_months, closed_pack_problems, due_for_close

        cfg = apportion.config()
        with warehouse_writer(cfg, context.instance, context.log.info):
            closed_now = []
            for month in due_for_close(cfg):
                close_month(cfg, month, auto=True)
                closed_now.append(month)
                context.log.info(f"closed {month} (close_after_days = {cfg.close_after_days})")
            problems = closed_pack_problems(cfg)
            if problems:  # a closed version that moved or does not tie: the run fails and says which
                yield dg.AssetCheckResult(check_name="closed_pack_ties_out", passed=False,
                                          metadata={"problems": "; ".join(problems[:10])})
                raise dg.Failure(description="closed month does not tie out: " + "; ".join(problems[:5]),
                                 allow_retries=False)
            yield dg.MaterializeResult(
                metadata={"closed_now": ", ".join(closed_now) or "none", "closed": ", ".join(closed_months(cfg)) or "none"},
                check_results=[dg.AssetCheckResult(check_name="closed_pack_ties_out", passed=True)],
            )

    return out_month_close
