-- GPU unit economics from the published warehouse: GPU-hours, utilisation, waste and $ per GPU-hour per
-- team, workload and GPU model per month; waste per job; the top jobs by idle cost.
-- Reads:  line_items (GPU rows of slurm_sacct / opencost / gpu_metrics sources), allocations (x_Team, x_Project,
--         x_Workload of every piece).
-- Writes: tables gpu_usage, gpu_unit_economics, gpu_job_waste and view gpu_top_idle_jobs.
-- GPU-hours come from allocation rows only (x_UsageType 'gpu-allocated' / 'gpu-idle', ConsumedUnit 'GPU-Hours');
-- 'gpu-observed' rows (DCGM, nvidia-smi) only lend their utilisation, joined on (cluster, job/pod, day).
-- Money here is x_PricedCost (rate card / OpenCost estimate), never billed money: cloud dollars stay on the
-- invoice lines and reach teams through split rules.

create or replace table gpu_usage as
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
from pieces;

create or replace table gpu_job_waste as
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
from per_job;

create or replace view gpu_top_idle_jobs as
select *
from gpu_job_waste
where idle_cost_rank <= 20 and coalesce(unused_gpu_hours, 0) > 0
order by x_BillingMonth, BillingCurrency, idle_cost_rank;

create or replace table gpu_unit_economics as
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
order by all;

comment on table gpu_usage is 'Every GPU allocation piece (jobs, pods, idle capacity) with its team, project, workload and utilisation (the row''s own, else DCGM/nvidia-smi of the same cluster, job/pod and day).';
comment on table gpu_job_waste is 'Per month and job/pod: GPU-hours, measured utilisation, allocated-but-unused GPU-hours and their priced idle cost, ranked.';
comment on view gpu_top_idle_jobs is 'The 20 jobs/pods per month and currency with the highest idle cost (allocated but unused GPU-hours x price).';
comment on table gpu_unit_economics is 'GPU unit economics per month, team, workload and GPU model: allocated, idle and measured GPU-hours, utilisation, unused GPU-hours, priced and idle cost, $ per GPU-hour.';
comment on column gpu_usage.usage_date is 'UTC day of the usage.';
comment on column gpu_usage.gpu_hours is 'GPU-hours of this piece (x_GpuHours x x_AllocatedRatio).';
comment on column gpu_usage.priced_cost is 'x_PricedCost of this piece: rate card or OpenCost estimate, not billed money.';
comment on column gpu_usage.utilization is 'Average GPU utilisation 0..1 (0 for idle capacity; null when not measured).';
comment on column gpu_usage.utilization_from is 'source (the row''s own), gpu_metrics (joined DCGM/nvidia-smi rows) or idle capacity.';
comment on column gpu_job_waste.first_date is 'First UTC day of the job in the month.';
comment on column gpu_job_waste.last_date is 'Last UTC day of the job in the month.';
comment on column gpu_job_waste.gpu_hours is 'Allocated GPU-hours of the job in the month.';
comment on column gpu_job_waste.utilization is 'GPU-hour-weighted utilisation over the measured GPU-hours (null when none was measured).';
comment on column gpu_job_waste.unused_gpu_hours is 'Allocated but unused GPU-hours: measured GPU-hours x (1 - utilisation).';
comment on column gpu_job_waste.priced_cost is 'Priced cost of the job''s GPU-hours (rate card / OpenCost).';
comment on column gpu_job_waste.idle_cost is 'Priced cost of the unused GPU-hours.';
comment on column gpu_job_waste.idle_cost_rank is 'Rank by idle cost within month and currency (1 = most wasteful).';
comment on column gpu_unit_economics.allocated_gpu_hours is 'GPU-hours held by jobs and pods.';
comment on column gpu_unit_economics.idle_gpu_hours is 'Idle capacity GPU-hours attributed to this team (cluster owner) or shared.';
comment on column gpu_unit_economics.gpu_hours is 'Allocated + idle GPU-hours.';
comment on column gpu_unit_economics.measured_gpu_hours is 'Allocated GPU-hours with a measured utilisation.';
comment on column gpu_unit_economics.utilization is 'GPU-hour-weighted utilisation of the measured GPU-hours (0..1).';
comment on column gpu_unit_economics.unused_gpu_hours is 'Allocated but unused GPU-hours (waste).';
comment on column gpu_unit_economics.priced_cost is 'Priced cost of all GPU-hours (rate card / OpenCost estimate), not billed money.';
comment on column gpu_unit_economics.idle_cost is 'Priced cost of idle capacity plus of allocated-but-unused GPU-hours.';
comment on column gpu_unit_economics.cost_per_gpu_hour is 'priced_cost / gpu_hours.';
comment on column gpu_unit_economics.jobs is 'Distinct jobs/pods.';
