-- One or more allocation pieces per line item, each with the values and reasons that decided it.
-- Reads:  month_line_items, attribution_keys, attribution (from create_attribution.sql).
-- Writes: temp view allocations_month.
-- {{dimension_columns}} / {{key_join}} are generated from validated dimension names and the key allow-list;
-- {{extra_columns}}: the line-item columns split weights read (only for the `basis` view of every source).

create or replace temp view {view} as
with

decided as (
    select
        k,
        {dimension_columns}
    from attribution
    group by k
),

keyed as (
    select
        li.*,
        ak.k
    from {line_items} as li
    inner join attribution_keys as ak
        on {key_join}
)

select
    li.x_SourceName,
    li.x_SourceKind,
    li.x_BillingMonth,
    li.x_LineId,
    -- the delivery the line came from: the warehouse refuses a month whose line items and pieces differ
    li.x_DeliveryId,
    1 as x_PieceId,
    li.BillingPeriodStart,
    li.ChargePeriodStart,
    li.ChargeCategory,
    li.ProviderName,
    li.ServiceCategory,
    li.ServiceName,
    li.SubAccountId,
    li.SubAccountName,
    li.RegionId,
    li.ResourceId,
    li.BillingCurrency,
    -- the line's identity, so the line-level finance file needs no join back to line_items
    li.InvoiceId,
    li.x_ProviderLineItemId,
    li.x_UsageType,
    li.BilledCost,
    li.EffectiveCost,
    li.ListCost,
    li.x_ReportingCurrency,
    li.x_FxRate,
    cast(1 as decimal(38, 12)) as x_AllocatedRatio,
    {dimension_selects},
    {reason_concat} as x_AllocationReason,
    cast(null as varchar) as x_AllocationRuleId,
    cast(null as json) as x_AllocationMethodDetails{extra_columns}
from keyed as li
inner join decided as d on d.k = li.k;
