-- Report, AI unit economics: GPU-hours and cost per team and GPU model for one billing month
-- (getvariable('report_month')).
--
-- GPU rows: ConsumedUnit 'GPU-Hours' (scheduler and cluster sources), or instance-hours of an instance
-- with GPUs (SkuPriceDetails.GpuCount > 0, e.g. p5/g5 lines of a cloud bill) x GpuCount.
-- GPU model: x_GpuModel, SkuPriceDetails.x_GpuModel / GpuModel, else the instance type.
-- Utilisation: x_GpuUtilization (0..1) weighted by GPU-hours, where measured.
-- {{x_...}} placeholders are those optional x_ columns, or NULL when the warehouse has no such column.
-- The two bases are reported apart and never added up: 'invoice' rows are billed cloud instances
-- (cost = EffectiveCost), 'usage' rows are measured GPU-hours (cost = x_PricedCost, rate card or the
-- share of the bill they attribute). Each allocation piece carries its share (x_AllocatedRatio).
with

gpu_lines as (
    select
        x_SourceName,
        x_BillingMonth,
        x_LineId,
        BillingCurrency,
        coalesce(x_CostBasis, 'invoice') as basis,
        coalesce(
            nullif({x_gpu_model}, ''),
            nullif(SkuPriceDetails ->> '$.x_GpuModel', ''),
            nullif(SkuPriceDetails ->> '$.GpuModel', ''),
            nullif(x_InstanceType, ''),
            nullif(SkuPriceDetails ->> '$.InstanceType', ''),
            'unknown'
        ) as gpu_model,
        CASE
            WHEN lower(replace(replace(ConsumedUnit, '-', ''), ' ', '')) IN ('gpuhours', 'gpuhour', 'gpuhrs')
                THEN CAST(ConsumedQuantity AS DOUBLE)
            ELSE CAST(ConsumedQuantity AS DOUBLE) * TRY_CAST(SkuPriceDetails ->> '$.GpuCount' AS DOUBLE)
        END as gpu_hours,
        x_PricedCost,
        CAST({x_gpu_utilization} AS DOUBLE) as utilization
    from line_items
    where x_BillingMonth = getvariable('report_month')
        and ConsumedQuantity is not null
        -- a commitment negation line repeats the quantity of the usage it cancels: count usage once
        and coalesce(x_LineItemType, '') not ilike '%negation%'
        -- utilisation samples (DCGM, nvidia-smi) measure GPUs already counted by the scheduler rows
        and coalesce(x_UsageType, '') <> 'gpu-observed'
        and (
            lower(replace(replace(ConsumedUnit, '-', ''), ' ', '')) IN ('gpuhours', 'gpuhour', 'gpuhrs')
            or (lower(ConsumedUnit) IN ('hrs', 'hours', 'hour', 'h')
                and coalesce(TRY_CAST(SkuPriceDetails ->> '$.GpuCount' AS DOUBLE), 0) > 0)
        )
)

select
    a.x_Team as team,
    g.gpu_model,
    g.basis,
    g.BillingCurrency as currency,
    -- display figures (DOUBLE): exact money stays in the finance pack
    sum(g.gpu_hours * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE)) as gpu_hours,
    sum(CASE WHEN g.basis = 'usage' THEN CAST(g.x_PricedCost AS DOUBLE) * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE)
             ELSE CAST(a.EffectiveCost AS DOUBLE) END) as cost,
    sum(g.gpu_hours * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE) * g.utilization)
        / nullif(sum(g.gpu_hours * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE)) filter (where g.utilization is not null), 0)
        as utilization
from gpu_lines as g
inner join allocations as a
    on a.x_SourceName = g.x_SourceName and a.x_BillingMonth = g.x_BillingMonth and a.x_LineId = g.x_LineId
group by all
order by gpu_hours desc
