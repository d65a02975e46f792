-- Slurm sacct jobs (parsed by connectors/slurm_sacct.py) -> GPU usage line items, one per job x GPU model x UTC day,
-- plus one idle line per cluster x GPU model x day (configured capacity minus allocated GPU-hours).
-- Reads:  stg_slurm_sacct (one row per job interval x GPU model, or a bad row with `problem`), gpu_month,
--         gpu_capacity, gpu_idle_owner and the macros of sql/macros/gpu_macros.sql (run first).
-- Writes: temp view line_items_checked. Usage rows: x_CostBasis 'usage', all billed money columns 0,
--         GPU-hours in ConsumedQuantity, rate-card dollars in x_PricedCost.

create or replace temp view line_items_checked as
with

ctx as (select * from gpu_month),

src as (select * from stg_slurm_sacct),

good as (
    select s.*
    from src as s, ctx
    where s.problem is null
      and s.start_utc < ctx.month_end
      and s.end_utc > ctx.month_start
),

-- One piece per UTC day the job overlaps inside the billing month.
pieces as (
    select
        g.*,
        d.day,
        greatest(g.start_utc, d.day, ctx.month_start) as piece_start,
        least(g.end_utc, d.day + interval 1 day, ctx.month_end) as piece_end
    from good as g
    cross join ctx
    cross join lateral (
        select unnest(generate_series(
            date_trunc('day', greatest(g.start_utc, ctx.month_start)),
            least(g.end_utc, ctx.month_end) - interval 1 microsecond,
            interval 1 day)) as day
    ) as d
),

measured as (
    select
        p.*,
        p.gpu_count * (epoch_us(p.piece_end) - epoch_us(p.piece_start)) as gpu_us
    from pieces as p
    where p.piece_end > p.piece_start
),

rated as (
    select
        m.*,
        apportion_gpu_rate(m.cluster, m.gpu_model, m.day) as per_gpu_hour
    from measured as m
),

job_pieces as (
    select
        r.*,
        case
            when r.gpu_model is null
                then 'job ' || coalesce(r.job_id, '?') || ': GPU model unknown (AllocTRES has only untyped gres/gpu; '
                     || 'set partition_gpu_models or default_gpu_model)'
            when (select has_rates from ctx) and r.per_gpu_hour is null
                then 'job ' || coalesce(r.job_id, '?') || ': no rate for GPU model ' || r.gpu_model
                     || ' on cluster ' || r.cluster || ' on ' || strftime(r.day, '%Y-%m-%d')
        end as reason
    from rated as r
),

-- A job whose pieces lack a rate is quarantined once per month (first reason), not once per day.
bad_jobs as (
    select _file, _row, _part, first(reason order by day) as reason, count(*) as days
    from job_pieces
    where reason is not null
    group by _file, _row, _part
),

allocated as (
    select cluster, gpu_model, day, sum(gpu_us) as gpu_us, sum(apportion_gpu_hours(gpu_us)) as gpu_hours
    from job_pieces
    where reason is null
    group by all
),

-- Idle capacity: configured GPUs x 24 h per day, through the last day any job of the delivery ran.
coverage as (
    select least(
        (select month_end from ctx),
        date_trunc('day', max(end_utc) - interval 1 microsecond) + interval 1 day
    ) as covered_until
    from src
    where problem is null
),

capacity_days as (
    select
        c.capacity_index,
        c.cluster,
        c.gpu_model,
        c.gpus,
        d.day
    from gpu_capacity as c
    cross join ctx
    cross join coverage as cv
    cross join lateral (
        select unnest(generate_series(ctx.month_start, cv.covered_until - interval 1 day, interval 1 day)) as day
    ) as d
    where cv.covered_until is not null
      and cast(d.day as date) >= c.valid_from
      and cast(d.day as date) < c.valid_until
),

capacity as (
    select cluster, gpu_model, day, min(capacity_index) as capacity_index, sum(gpus) as gpus
    from capacity_days
    group by all
),

idle as (
    select
        c.*,
        c.gpus * cast(86400000000 as bigint) as capacity_us,
        coalesce(a.gpu_us, 0) as allocated_us,
        c.gpus * cast(86400000000 as bigint) - coalesce(a.gpu_us, 0) as idle_us,
        -- capacity minus the rounded job pieces, so allocated + idle = capacity exactly
        cast(c.gpus * 24 as decimal(38, 12)) - coalesce(a.gpu_hours, 0) as idle_hours,
        apportion_gpu_rate(c.cluster, c.gpu_model, c.day) as per_gpu_hour
    from capacity as c
    left join allocated as a using (cluster, gpu_model, day)
),

usage_rows as (
    -- jobs
    select
        'job' as kind,
        j._file, j._row, j._part, j.day,
        j.cluster, j.job_id, j.job_name, j.user_name, j.account, j.partition, j.qos, j.wckey, j.state, j.nodes,
        j.gpu_model, j.gpu_count, j.gpu_util,
        j.day as period_start,
        j.day + interval 1 day as period_end,
        apportion_gpu_hours(j.gpu_us) as gpu_hours,
        j.per_gpu_hour,
        cast(null as varchar) as reason
    from job_pieces as j
    where j.reason is null

    union all
    -- jobs without a rate or model: one quarantined row per job and month
    select
        'job', j._file, j._row, j._part, min(j.day),
        any_value(j.cluster), any_value(j.job_id), any_value(j.job_name), any_value(j.user_name),
        any_value(j.account), any_value(j.partition), any_value(j.qos), any_value(j.wckey), any_value(j.state),
        any_value(j.nodes), any_value(j.gpu_model), any_value(j.gpu_count), any_value(j.gpu_util),
        min(j.day), max(j.day) + interval 1 day,
        apportion_gpu_hours(sum(j.gpu_us)), null,
        any_value(b.reason)
    from job_pieces as j
    inner join bad_jobs as b using (_file, _row, _part)
    where j.reason is not null
    group by j._file, j._row, j._part

    union all
    -- rows the parser rejected, in the month they belong to (or every month of the file when unknown)
    select
        'bad', s._file, s._row, s._part, null,
        s.cluster, s.job_id, s.job_name, s.user_name, s.account, s.partition, s.qos, s.wckey, s.state, s.nodes,
        s.gpu_model, s.gpu_count, s.gpu_util,
        ctx.month_start, ctx.month_end,
        null, null,
        s.problem
    from src as s
    cross join ctx
    where s.problem is not null
      and (s.month_hint is null or s.month_hint = ctx.billing_month)

    union all
    -- idle capacity
    select
        'idle', 'config:capacity', i.capacity_index, 1, i.day,
        i.cluster, null, null, null, null, null, null, null, null, null,
        i.gpu_model, i.gpus, null,
        i.day, i.day + interval 1 day,
        greatest(i.idle_hours, 0),
        i.per_gpu_hour,
        case
            when i.idle_us < 0
                then 'cluster ' || i.cluster || ' ' || i.gpu_model || ' on ' || strftime(i.day, '%Y-%m-%d')
                     || ': allocated ' || cast(apportion_gpu_hours(i.allocated_us) as varchar)
                     || ' GPU-hours exceed the configured capacity of '
                     || cast(apportion_gpu_hours(i.capacity_us) as varchar)
            when (select has_rates from ctx) and i.per_gpu_hour is null
                then 'idle ' || i.cluster || ' ' || i.gpu_model || ': no rate for GPU model ' || i.gpu_model
                     || ' on cluster ' || i.cluster || ' on ' || strftime(i.day, '%Y-%m-%d')
        end
    from idle as i
    where i.idle_us <> 0
),

tagged as (
    select
        u.*,
        case when u.kind = 'idle' then io.shared else false end as idle_shared,
        case
            when u.kind = 'idle' then
                coalesce(json_merge_patch(coalesce(io.tags, '{}'::json), json_object('slurm_cluster', u.cluster)),
                         json_object('slurm_cluster', u.cluster))
            else
                nullif(to_json(map_from_entries(list_filter([
                    struct_pack(key := 'slurm_account', value := u.account),
                    struct_pack(key := 'slurm_user', value := u.user_name),
                    struct_pack(key := 'slurm_partition', value := u.partition),
                    struct_pack(key := 'slurm_qos', value := u.qos),
                    struct_pack(key := 'slurm_wckey', value := u.wckey),
                    struct_pack(key := 'slurm_cluster', value := u.cluster)
                ], lambda e: coalesce(trim(e.value), '') <> ''))), '{}')::json
        end as tags
    from usage_rows as u
    cross join gpu_idle_owner as io
)

select
    cast(0 as decimal(38, 12)) as BilledCost,
    ctx.default_cluster as BillingAccountId,
    'Slurm cluster ' || ctx.default_cluster as BillingAccountName,
    'On-premises' as BillingAccountType,
    ctx.currency as BillingCurrency,
    ctx.month_end as BillingPeriodEnd,
    ctx.month_start as BillingPeriodStart,
    'Usage' as ChargeCategory,
    case
        when t.kind = 'idle' then 'Idle GPU capacity of ' || t.cluster || ' (' || t.gpu_model || ')'
        else 'GPU allocation of Slurm job ' || coalesce(t.job_id, '?') || coalesce(' (' || t.state || ')', '')
    end as ChargeDescription,
    'Usage-Based' as ChargeFrequency,
    t.period_end as ChargePeriodEnd,
    t.period_start as ChargePeriodStart,
    t.gpu_hours as ConsumedQuantity,
    'GPU-Hours' as ConsumedUnit,
    cast(0 as decimal(38, 12)) as ContractedCost,
    cast(0 as decimal(38, 12)) as EffectiveCost,
    'On-premises' as InvoiceIssuerName,
    cast(0 as decimal(38, 12)) as ListCost,
    'Other' as PricingCategory,
    ctx.currency as PricingCurrency,
    t.gpu_hours as PricingQuantity,
    'GPU-Hours' as PricingUnit,
    'On-premises' as ProviderName,
    'On-premises' as PublisherName,
    case
        when t.kind = 'idle' then 'slurm/' || t.cluster || '/idle/' || t.gpu_model
        else 'slurm/' || t.cluster || '/' || coalesce(t.job_id, '?')
    end as ResourceId,
    case when t.kind = 'idle' then 'idle ' || t.gpu_model else t.job_name end as ResourceName,
    case when t.kind = 'idle' then 'Slurm idle capacity' else 'Slurm job' end as ResourceType,
    'Compute' as ServiceCategory,
    'Slurm' as ServiceName,
    'Other (Compute)' as ServiceSubcategory,
    'gpu:' || coalesce(t.gpu_model, 'unknown') as SkuId,
    'GPU-Hours' as SkuMeter,
    json_object('GpuCount', t.gpu_count, 'x_GpuModel', t.gpu_model) as SkuPriceDetails,
    case when t.kind = 'idle' then null else t.account end as SubAccountId,
    case when t.kind = 'idle' then null else t.account end as SubAccountName,
    case when t.kind = 'idle' then null else 'Slurm Account' end as SubAccountType,
    apportion_sorted_json(t.tags) as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    row_number() over (order by t.kind = 'idle', t._file, t._row, t._part, t.day) as x_LineId,
    t._file as x_SourceFile,
    t._row as x_SourceRow,
    t.cluster || ':' || coalesce(t.job_id, 'idle-' || t.gpu_model) || ':' || coalesce(t.gpu_model, '?') || ':'
        || coalesce(strftime(t.day, '%Y-%m-%d'), t.kind) as x_ProviderLineItemId,
    case when t.kind = 'idle' then 'IdleCapacity' else 'JobAllocation' end as x_LineItemType,
    'slurm' as x_ServiceCode,
    case when t.kind = 'idle' then 'gpu-idle' else 'gpu-allocated' end as x_UsageType,
    t.partition as x_Operation,
    not (t.kind = 'idle' and t.idle_shared) as x_HasResource,
    'usage' as x_CostBasis,
    cast(t.gpu_hours * t.per_gpu_hour as decimal(38, 12)) as x_PricedCost,
    t.cluster as x_Cluster,
    t.gpu_model as x_GpuModel,
    t.job_id as x_JobId,
    t.gpu_util as x_GpuUtilization,
    t.nodes as x_Node,
    t.gpu_hours as x_GpuHours,
    t.reason as x_QuarantineReason
from tagged as t
cross join ctx
cross join apportion_lineage(run_context) as lineage;
