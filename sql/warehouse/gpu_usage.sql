-- Table gpu_usage: every GPU allocation piece of the month (GPU unit economics: GPU-hours, utilisation, waste
-- and $ per GPU-hour per team, workload and GPU model build on it: gpu_job_waste.sql, gpu_unit_economics.sql).
-- Reads:  line_items (GPU rows of slurm_sacct / opencost / gpu_metrics sources), allocations (x_Team, x_Project,
--         x_Workload of every piece).
-- Computed per month (apportion/steps/summaries.py, lake table summary_gpu_usage).
-- GPU-hours come from allocation rows only (x_UsageType 'gpu-allocated' / 'gpu-idle', ConsumedUnit 'GPU-Hours');
-- 'gpu-observed' rows (DCGM, nvidia-smi) only lend their utilisation, joined on (cluster, job/pod, day).
-- Money here is x_PricedCost (rate card / OpenCost estimate), never billed money: cloud dollars stay on the
-- invoice lines and reach teams through split rules.

with

gpu_lines as (
    select
        x_SourceName, x_SourceKind, x_BillingMonth, x_LineId, x_UsageType, x_Cluster, x_GpuModel, x_JobId, x_Node,
        ResourceId, BillingCurrency, ChargePeriodStart,
        cast(date_trunc('day', ChargePeriodStart) as date) as usage_date,
        ConsumedQuantity as gpu_hours,
        x_PricedCost as priced_cost,
        x_GpuUtilization as own_utilization
    from line_items
    where x_UsageType in ('gpu-allocated', 'gpu-idle')
      and ConsumedUnit = 'GPU-Hours'
      and ConsumedQuantity is not null
),

observed as (
    select
        x_Cluster,
        x_JobId,
        cast(date_trunc('day', ChargePeriodStart) as date) as usage_date,
        sum(ConsumedQuantity) as observed_gpu_hours,
        sum(ConsumedQuantity * x_GpuUtilization) / nullif(sum(ConsumedQuantity), 0) as utilization
    from line_items
    where x_UsageType = 'gpu-observed'
      and x_JobId is not null
      and x_GpuUtilization is not null
    group by all
),

pieces as (
    select
        g.*,
        a.x_PieceId,
        coalesce(a.x_AllocatedRatio, 1) as ratio,
        a.x_Team,
        a.x_Project,
        a.x_Workload,
        o.utilization as observed_utilization
    from gpu_lines as g
    inner join allocations as a using (x_SourceName, x_BillingMonth, x_LineId)
    left join observed as o
        on g.x_UsageType = 'gpu-allocated'
        and o.x_Cluster = g.x_Cluster and o.x_JobId = g.x_JobId and o.usage_date = g.usage_date
)

select
    x_BillingMonth,
    x_SourceName,
    x_SourceKind,
    x_LineId,
    x_PieceId,
    usage_date,
    x_UsageType,
    x_Cluster,
    coalesce(x_GpuModel, 'unknown') as x_GpuModel,
    x_JobId,
    x_Node,
    ResourceId,
    x_Team,
    x_Project,
    x_Workload,
    BillingCurrency,
    cast(gpu_hours * ratio as decimal(38, 12)) as gpu_hours,
    cast(priced_cost * ratio as decimal(38, 12)) as priced_cost,
    cast(case when x_UsageType = 'gpu-idle' then 0 else coalesce(own_utilization, observed_utilization) end
         as decimal(9, 6)) as utilization,
    case
        when x_UsageType = 'gpu-idle' then 'idle capacity'
        when own_utilization is not null then 'source'
        when observed_utilization is not null then 'gpu_metrics'
    end as utilization_from
from pieces
