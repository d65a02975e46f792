-- Table untagged_spend: spend no tag, rule, account mapping or default could attribute, who and what is
-- behind it. One row per billing month, source, dimension, reason, account, service and resource.
-- Computed per source x month (apportion/steps/summaries.py, lake table summary_untagged) from that
-- partition's allocations and line items; the warehouse's untagged_spend is a view over every month's rows.
-- {{dimension_union}} unpivots allocations to (dimension, value, reason, ...) for untagged values only (summaries.py
-- runs it once per dimension: the rows are grouped by resource); untagged_creators: untagged_creators.sql.
with

untagged as (
    {dimension_union}
),

enriched as (
    select
        u.*,
        c.created_by
    from untagged as u
    left join untagged_creators as c
        on c.x_SourceName = u.x_SourceName
        and c.x_BillingMonth = u.x_BillingMonth
        and c.x_LineId = u.x_LineId
)

select
    x_BillingMonth,
    x_SourceName,
    dimension,
    split_part(split_part(reason, ' | ', 1), ' ', 1) as reason_code,
    reason,
    SubAccountId,
    any_value(SubAccountName) as SubAccountName,
    ServiceName,
    ResourceId,
    any_value(created_by) as created_by,
    BillingCurrency,
    count(*) as line_items,
    sum(BilledCost) as BilledCost,
    sum(EffectiveCost) as EffectiveCost
from enriched
group by all
