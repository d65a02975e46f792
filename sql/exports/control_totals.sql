-- Finance pack: control totals per source, invoice and currency. line_items_* is what the provider
-- billed (after quarantine), allocated_* what the allocation distributed; the two are equal.
-- billed_cost_rounded / effective_cost_rounded: the invoice total rounded to cents (half away from
-- zero); every *_rounded column of the pack sums to it per source, invoice and currency.
with

li as (
    select x_SourceName, {invoice_id} as invoice_id, BillingCurrency,
           string_agg(distinct ProviderName, ', ' order by ProviderName) as provider,
           count(*) as line_items, sum(BilledCost) as billed, sum(EffectiveCost) as effective
    from line_items
    where x_BillingMonth = getvariable('export_month')
    group by x_SourceName, {invoice_id}, BillingCurrency
),

al as (
    select x_SourceName, {invoice_id} as invoice_id, BillingCurrency,
           sum(BilledCost) as billed, sum(EffectiveCost) as effective
    from allocations
    where x_BillingMonth = getvariable('export_month')
    group by all
),

q as (
    select x_SourceName, count(*) as quarantined_rows
    from quarantined_rows
    where x_BillingMonth = getvariable('export_month')
    group by all
)

select
    getvariable('export_month') as billing_month,
    li.x_SourceName as source,
    li.provider,
    li.invoice_id,
    li.BillingCurrency as billing_currency,
    li.line_items,
    li.billed as line_items_billed_cost,
    al.billed as allocated_billed_cost,
    li.effective as line_items_effective_cost,
    al.effective as allocated_effective_cost,
    round(li.billed, 2) as billed_cost_rounded,
    round(li.effective, 2) as effective_cost_rounded,
    (li.billed = al.billed and li.effective = al.effective) as ties_out,
    coalesce(q.quarantined_rows, 0) as quarantined_rows
from li
left join al
    on al.x_SourceName = li.x_SourceName
    and al.invoice_id is not distinct from li.invoice_id
    and al.BillingCurrency = li.BillingCurrency
left join q on q.x_SourceName = li.x_SourceName
order by source, invoice_id, billing_currency
