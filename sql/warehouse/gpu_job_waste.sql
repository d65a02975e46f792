-- Table gpu_job_waste: per month and job/pod, GPU-hours, measured utilisation, allocated-but-unused GPU-hours
-- and their priced idle cost, ranked. Reads gpu_usage (sql/warehouse/gpu_usage.sql) of the same month; computed
-- per month (apportion/steps/summaries.py, lake table summary_gpu_job_waste).
with per_job as (
    select
        x_BillingMonth,
        x_SourceName,
        x_Cluster,
        x_JobId,
        x_Team,
        x_Project,
        x_Workload,
        x_GpuModel,
        BillingCurrency,
        min(usage_date) as first_date,
        max(usage_date) as last_date,
        sum(gpu_hours) as gpu_hours,
        cast(sum(gpu_hours * utilization) filter (where utilization is not null)
             / nullif(sum(gpu_hours) filter (where utilization is not null), 0) as decimal(9, 6)) as utilization,
        cast(sum(gpu_hours * (1 - utilization)) filter (where utilization is not null) as decimal(38, 12))
            as unused_gpu_hours,
        sum(priced_cost) as priced_cost,
        cast(sum(priced_cost * (1 - utilization)) filter (where utilization is not null) as decimal(38, 12))
            as idle_cost
    from gpu_usage
    where x_UsageType = 'gpu-allocated'
    group by x_BillingMonth, x_SourceName, x_Cluster, x_JobId, x_Team, x_Project, x_Workload, x_GpuModel,
             BillingCurrency
)
select
    *,
    rank() over (partition by x_BillingMonth, BillingCurrency
                 order by coalesce(idle_cost, 0) desc, coalesce(unused_gpu_hours, 0) desc) as idle_cost_rank
from per_job
