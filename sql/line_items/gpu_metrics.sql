-- GPU utilisation samples (parsed by connectors/gpu_metrics.py) -> observed GPU-hours and their utilisation,
-- one line item per UTC day x GPU series (host, GPU, pod / Slurm job).
-- Reads:  stg_gpu_metrics (one row per sample, or a bad sample with `problem`), gpu_month (sql/macros/gpu_macros.sql).
-- Writes: temp view line_items_checked. Rows are usage rows (x_CostBasis 'usage', no money) with
--         x_UsageType 'gpu-observed' and ConsumedUnit 'GPU-Hours (observed)': they measure, they never
--         add to allocated GPU-hours.

create or replace temp view line_items_checked as
with

ctx as (select * from gpu_month),

good as (
    select
        s.*,
        coalesce(s.uuid, s.gpu, '?') as gpu_key,
        coalesce(s.pod, s.hpc_job) as job_key
    from stg_gpu_metrics as s
    where s.problem is null
),

-- Per series, the best metric present: GR_ENGINE_ACTIVE, else GPU_UTIL, else nvidia-smi.
best as (
    select
        g.*,
        min(g.metric_rank) over (partition by g.host, g.gpu_key, g.namespace, g.job_key) as best_rank
    from good as g
),

series as (
    select
        b.*,
        epoch_us(lead(b.ts) over w) - epoch_us(b.ts) as gap_us
    from best as b
    where b.metric_rank = b.best_rank
    window w as (partition by b.host, b.gpu_key, b.namespace, b.job_key order by b.ts, b._file, b._row)
),

medians as (
    select host, gpu_key, namespace, job_key, median(gap_us) filter (where gap_us > 0) as median_us
    from series
    group by all
),

-- Each sample stands for the time to the next sample (at most twice the median interval); the last one
-- for one median interval; a lone sample for the configured scrape interval.
weighted as (
    select
        s.*,
        cast(case
            when s.gap_us is null then coalesce(m.median_us, (select scrape_interval_seconds from ctx) * 1000000)
            else least(s.gap_us, 2 * coalesce(m.median_us, s.gap_us))
        end as bigint) as dur_us
    from series as s
    left join medians as m
        on m.host is not distinct from s.host and m.gpu_key = s.gpu_key
        and m.namespace is not distinct from s.namespace and m.job_key is not distinct from s.job_key
),

in_month as (
    select w.*, date_trunc('day', w.ts) as day
    from weighted as w, ctx
    where w.ts >= ctx.month_start and w.ts < ctx.month_end
),

daily as (
    select
        day, host, gpu_key, namespace, job_key,
        any_value(uuid) as uuid,
        any_value(gpu) as gpu,
        max(gpu_model) as gpu_model,
        any_value(pod) as pod,
        any_value(hpc_job) as hpc_job,
        max(tags) as tags,
        min(_file) as _file,
        min(_row) as _row,
        min(best_rank) as metric_rank,
        sum(dur_us) as observed_us,
        sum(util * dur_us) / nullif(sum(dur_us), 0) as util
    from in_month
    group by all
),

rows_out as (
    select
        'observed' as kind, d._file, d._row, d.day, d.host, d.gpu_key, d.uuid, d.gpu, d.gpu_model, d.namespace,
        d.pod, d.hpc_job, d.job_key, d.tags, d.metric_rank,
        apportion_gpu_hours(d.observed_us) as gpu_hours,
        cast(round(d.util, 6) as decimal(9, 6)) as util,
        cast(null as varchar) as reason
    from daily as d

    union all
    select
        'bad', s._file, s._row, coalesce(date_trunc('day', s.ts), ctx.month_start), s.host,
        coalesce(s.uuid, s.gpu, '?'), s.uuid, s.gpu, s.gpu_model, s.namespace, s.pod, s.hpc_job,
        coalesce(s.pod, s.hpc_job), s.tags, s.metric_rank, null, null, s.problem
    from stg_gpu_metrics as s
    cross join ctx
    where s.problem is not null
      and (s.ts is null or (s.ts >= ctx.month_start and s.ts < ctx.month_end))
)

select
    cast(0 as decimal(38, 12)) as BilledCost,
    ctx.default_cluster as BillingAccountId,
    'GPU cluster ' || ctx.default_cluster as BillingAccountName,
    'GPU Cluster' as BillingAccountType,
    ctx.currency as BillingCurrency,
    ctx.month_end as BillingPeriodEnd,
    ctx.month_start as BillingPeriodStart,
    'Usage' as ChargeCategory,
    'GPU utilisation of ' || coalesce(r.host, '?') || ' GPU ' || r.gpu_key
        || coalesce(' for ' || r.job_key, '') || ' ('
        || case r.metric_rank when 1 then 'DCGM_FI_PROF_GR_ENGINE_ACTIVE' when 2 then 'DCGM_FI_DEV_GPU_UTIL'
                else 'nvidia-smi utilization.gpu' end || ')' as ChargeDescription,
    'Usage-Based' as ChargeFrequency,
    r.day + interval 1 day as ChargePeriodEnd,
    r.day as ChargePeriodStart,
    r.gpu_hours as ConsumedQuantity,
    'GPU-Hours (observed)' as ConsumedUnit,
    cast(0 as decimal(38, 12)) as ContractedCost,
    cast(0 as decimal(38, 12)) as EffectiveCost,
    'On-premises' as InvoiceIssuerName,
    cast(0 as decimal(38, 12)) as ListCost,
    'On-premises' as ProviderName,
    'NVIDIA DCGM' as PublisherName,
    'gpu/' || ctx.default_cluster || '/' || coalesce(r.host, '?') || '/' || r.gpu_key as ResourceId,
    coalesce(r.host, '?') || ' GPU ' || coalesce(r.gpu, r.gpu_key) as ResourceName,
    'GPU' as ResourceType,
    'Compute' as ServiceCategory,
    'GPU telemetry' as ServiceName,
    'Other (Compute)' as ServiceSubcategory,
    'gpu:' || coalesce(r.gpu_model, 'unknown') as SkuId,
    'GPU utilisation' as SkuMeter,
    json_object('GpuCount', 1, 'x_GpuModel', r.gpu_model) as SkuPriceDetails,
    r.namespace as SubAccountId,
    r.namespace as SubAccountName,
    case when r.namespace is not null then 'Kubernetes Namespace' end as SubAccountType,
    apportion_sorted_json(coalesce(json_merge_patch(r.tags::json, json_object('gpu_cluster', ctx.default_cluster)),
                                   json_object('gpu_cluster', ctx.default_cluster))) as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    row_number() over (order by r.kind, r.day, r.host, r.gpu_key, r.namespace, r.job_key, r._file, r._row) as x_LineId,
    r._file as x_SourceFile,
    r._row as x_SourceRow,
    'UtilizationSample' as x_LineItemType,
    'dcgm' as x_ServiceCode,
    'gpu-observed' as x_UsageType,
    true as x_HasResource,
    'usage' as x_CostBasis,
    ctx.default_cluster as x_Cluster,
    r.gpu_model as x_GpuModel,
    r.job_key as x_JobId,
    r.util as x_GpuUtilization,
    r.host as x_Node,
    r.reason as x_QuarantineReason
from rows_out as r
cross join ctx
cross join apportion_lineage(run_context) as lineage;
