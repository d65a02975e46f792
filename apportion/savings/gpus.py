"""Idle and oversized GPUs, from the warehouse's `gpu_usage` table (slurm_sacct / opencost / gpu_metrics).

* idle_gpus: capacity nobody held (x_UsageType 'gpu-idle'), per cluster x GPU model x owner: the saving is
  the idle GPU-hours at the rate card (their x_PricedCost), i.e. what releasing that capacity would save.
* oversized_gpus: per job, allocated GPU-hours whose measured utilisation is under the threshold. At the
  threshold the same work needs `utilisation / threshold` of the GPU-hours, so the saving is
  priced_cost x (1 - utilisation / threshold): the job could run on fewer (or smaller) GPUs.

A GPU line without a price, or a job without a utilisation measurement, is skipped with the reason.
"""

from __future__ import annotations

from decimal import Decimal

from apportion.savings.table import Finding, Results, Skip, confidence


def _has_gpu_usage(con) -> bool:
    return bool(con.execute(  # a table or a view over the lake's per-month summary (issue 10)
        "SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() UNION ALL "
        "SELECT view_name FROM duckdb_views()) WHERE n = 'gpu_usage'").fetchone()[0])


def find(con, cfg, settings, results: Results) -> None:
    if not _has_gpu_usage(con):
        return
    _idle(con, settings, results)
    _oversized(con, settings, results)


def _idle(con, settings, results: Results) -> None:
    rows = con.execute("""
        SELECT x_BillingMonth, x_SourceName, x_Cluster, x_GpuModel, x_Team, x_Project, x_Workload, BillingCurrency,
               sum(gpu_hours) AS hours, sum(priced_cost) AS cost, count(*) FILTER (WHERE priced_cost IS NULL) AS unpriced,
               min(usage_date) AS first_day, max(usage_date) AS last_day, count(DISTINCT usage_date) AS days
        FROM gpu_usage WHERE x_UsageType = 'gpu-idle'
        GROUP BY ALL ORDER BY ALL""").fetchall()
    for month, source, cluster, model, team, project, workload, ccy, hours, cost, unpriced, d0, d1, days in rows:
        scope = f"{source}: cluster {cluster} {model}"
        if unpriced or cost is None:
            results.skipped.append(Skip("idle_gpus", month, scope, "idle GPU-hours without a price (no rate card "
                                        "entry for this cluster and GPU model): not estimated"))
            continue
        if not hours:
            continue
        rate = (cost / hours).quantize(Decimal("0.000001")) if hours else None
        level, why = confidence(settings, gpu_hours=hours, days=days, cap="medium",
                                basis="assumes the idle capacity can be released or scaled down")
        results.findings.append(Finding(
            kind="idle_gpus", month=month, team=team, project=project, workload=workload, scope_type="cluster",
            scope_id=f"{cluster}/{model}", provider=source, current=f"{model} capacity", suggested="release idle capacity",
            evidence={"idle_gpu_hours": hours, "priced_cost": cost, "per_gpu_hour": rate},
            formula=f"idle GPU-hours {hours.normalize():f} at the rate card = priced cost {cost.normalize():f}",
            saving=cost, currency=ccy, confidence=level, confidence_reason=why, days_observed=days,
            period_start=str(d0), period_end=str(d1)))


def _oversized(con, settings, results: Results) -> None:
    threshold = settings.gpu_utilisation_threshold
    rows = con.execute("""
        SELECT x_BillingMonth, x_SourceName, x_Cluster, x_JobId, x_GpuModel, x_Team, x_Project, x_Workload,
               BillingCurrency, sum(gpu_hours) AS hours, sum(priced_cost) AS cost,
               count(*) FILTER (WHERE priced_cost IS NULL) AS unpriced,
               count(*) FILTER (WHERE utilization IS NULL) AS unmeasured,
               CAST(sum(gpu_hours * utilization) / nullif(sum(gpu_hours), 0) AS DECIMAL(9, 6)) AS util,
               min(usage_date), max(usage_date), count(DISTINCT usage_date)
        FROM gpu_usage WHERE x_UsageType = 'gpu-allocated'
        GROUP BY ALL ORDER BY ALL""").fetchall()
    for (month, source, cluster, job, model, team, project, workload, ccy, hours, cost, unpriced, unmeasured, util,
         d0, d1, days) in rows:
        scope = f"{source}: job {job} on {cluster} ({model})"
        if unmeasured:
            results.skipped.append(Skip("oversized_gpus", month, scope, "GPU usage without utilisation data "
                                        "(no DCGM / gres/gpuutil / gpuEfficiency for the job): not estimated"))
            continue
        if unpriced or cost is None:
            results.skipped.append(Skip("oversized_gpus", month, scope, "allocated GPU-hours without a price"))
            continue
        if util is None or util >= threshold or not hours:
            continue
        needed = util / threshold
        saving = cost * (1 - needed)
        level, why = confidence(settings, gpu_hours=hours, days=days, cap="medium",
                                basis=f"measured utilisation {util.normalize():f} under the {threshold.normalize():f} "
                                      "threshold; assumes the job's work fits on proportionally fewer or smaller GPUs")
        results.findings.append(Finding(
            kind="oversized_gpus", month=month, team=team, project=project, workload=workload, scope_type="resource",
            scope_id=f"{cluster}/{job}", provider=source, current=f"{model} x {hours.normalize():f} GPU-hours",
            suggested=f"fewer or smaller GPUs (to {threshold.normalize():f} utilisation)",
            evidence={"gpu_hours": hours, "priced_cost": cost, "utilisation": util, "threshold": threshold},
            formula=(f"priced cost {cost.normalize():f} x (1 - utilisation {util.normalize():f} / threshold "
                     f"{threshold.normalize():f})"),
            saving=saving, currency=ccy, confidence=level, confidence_reason=why, days_observed=days,
            period_start=str(d0), period_end=str(d1)))
