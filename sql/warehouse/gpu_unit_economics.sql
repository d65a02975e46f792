-- Table gpu_unit_economics: per month, team, workload and GPU model. Reads gpu_usage of the same month;
-- computed per month (apportion/steps/summaries.py, lake table summary_gpu_unit_economics).
select
    x_BillingMonth,
    x_Team,
    x_Workload,
    x_GpuModel,
    BillingCurrency,
    sum(gpu_hours) filter (where x_UsageType = 'gpu-allocated') as allocated_gpu_hours,
    coalesce(sum(gpu_hours) filter (where x_UsageType = 'gpu-idle'), 0) as idle_gpu_hours,
    sum(gpu_hours) as gpu_hours,
    coalesce(sum(gpu_hours) filter (where x_UsageType = 'gpu-allocated' and utilization is not null), 0)
        as measured_gpu_hours,
    cast(sum(gpu_hours * utilization) filter (where x_UsageType = 'gpu-allocated' and utilization is not null)
         / nullif(sum(gpu_hours) filter (where x_UsageType = 'gpu-allocated' and utilization is not null), 0)
         as decimal(9, 6)) as utilization,
    cast(sum(gpu_hours * (1 - utilization)) filter (where x_UsageType = 'gpu-allocated' and utilization is not null)
         as decimal(38, 12)) as unused_gpu_hours,
    sum(priced_cost) as priced_cost,
    cast(coalesce(sum(priced_cost) filter (where x_UsageType = 'gpu-idle'), 0)
         + coalesce(sum(priced_cost * (1 - utilization))
                    filter (where x_UsageType = 'gpu-allocated' and utilization is not null), 0)
         as decimal(38, 12)) as idle_cost,
    cast(sum(priced_cost) / nullif(sum(gpu_hours), 0) as decimal(38, 6)) as cost_per_gpu_hour,
    count(distinct x_JobId) filter (where x_UsageType = 'gpu-allocated') as jobs
from gpu_usage
group by all
