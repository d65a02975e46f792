-- Finance pack: the month's untagged spend, once per dollar. Every piece of the month is a cell; a
-- piece untagged in at least one dimension keeps its flags (untagged_<dimension>), reasons, account,
-- service and resource; the attributed pieces form one cell per source x invoice x currency (so the
-- cents rounding of the untagged rows ties to the invoice) that exports.py drops after rounding.
with

pieces as (
    select
        x_SourceName,
        x_LineId,
        {invoice_id} as invoice_id,
        BillingCurrency,
        {flags},
        ({any_untagged}) as any_untagged,
        SubAccountId,
        SubAccountName,
        ServiceName,
        ResourceId,
        {reason} as reason,
        BilledCost,
        EffectiveCost
    from allocations
    where x_BillingMonth = getvariable('export_month')
),

owners as (
    -- who created the untagged resources (AWS aws:createdBy), read only from the lines that carry the tag
    -- (joining every untagged line to its tag map cost seconds per million pieces); the left join below
    -- matches it to the pieces
    select li.x_SourceName, li.x_LineId,
           coalesce(li.Tags ->> '$."aws:createdBy"', li.Tags ->> '$."aws:created_by"') as created_by
    from line_items as li
    where li.x_BillingMonth = getvariable('export_month')
        and contains(cast(li.Tags as varchar), 'aws:created')
)

select
    getvariable('export_month') as billing_month,
    p.x_SourceName as source,
    p.invoice_id,
    p.BillingCurrency as billing_currency,
    {flag_names},
    p.any_untagged as _keep,
    case when p.any_untagged then p.reason end as reason,
    case when p.any_untagged then p.SubAccountId end as account_id,
    case when p.any_untagged then any_value(p.SubAccountName) end as account_name,
    case when p.any_untagged then p.ServiceName end as service,
    case when p.any_untagged then p.ResourceId end as resource_id,
    any_value(case when p.any_untagged then o.created_by end) as created_by,
    count(*) as pieces,
    sum(p.BilledCost) as billed_cost,
    sum(p.EffectiveCost) as effective_cost
from pieces as p
left join owners as o on o.x_SourceName = p.x_SourceName and o.x_LineId = p.x_LineId
group by p.x_SourceName, p.invoice_id, p.BillingCurrency, {flag_names}, p.any_untagged,
    case when p.any_untagged then p.reason end, case when p.any_untagged then p.SubAccountId end,
    case when p.any_untagged then p.ServiceName end, case when p.any_untagged then p.ResourceId end
