-- Finance pack: control totals per source, invoice and currency. line_items_* is what the provider
-- billed (after quarantine), allocated_* what the allocation distributed; the two are equal.
with

li as (
    select x_SourceName, ProviderName, InvoiceId, BillingCurrency,
           count(*) as line_items, sum(BilledCost) as billed, sum(EffectiveCost) as effective
    from line_items
    where x_BillingMonth = getvariable('export_month')
    group by all
),

al as (
    select a.x_SourceName, l.InvoiceId, a.BillingCurrency,
           sum(a.BilledCost) as billed, sum(a.EffectiveCost) as effective
    from allocations as a
    inner join line_items as l
        on l.x_SourceName = a.x_SourceName and l.x_BillingMonth = a.x_BillingMonth and l.x_LineId = a.x_LineId
    where a.x_BillingMonth = getvariable('export_month')
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
    li.ProviderName as provider,
    li.InvoiceId as invoice_id,
    li.BillingCurrency as billing_currency,
    li.line_items,
    li.billed as line_items_billed_cost,
    al.billed as allocated_billed_cost,
    li.effective as line_items_effective_cost,
    al.effective as allocated_effective_cost,
    (li.billed = al.billed and li.effective = al.effective) as ties_out,
    coalesce(q.quarantined_rows, 0) as quarantined_rows
from li
left join al
    on al.x_SourceName = li.x_SourceName
    and al.InvoiceId is not distinct from li.InvoiceId
    and al.BillingCurrency = li.BillingCurrency
left join q on q.x_SourceName = li.x_SourceName
order by source, invoice_id
