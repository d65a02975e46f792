-- Finance pack: the month's allocated cost by one dimension ({{name}}), one cell per source, invoice,
-- billing currency and value. exports.py rounds the cells to cents (largest remainder within each
-- source x invoice x currency) and sums them to team totals across sources and per source.
select
    x_BillingMonth as billing_month,
    x_SourceName as source,
    ProviderName as provider,
    {invoice_id} as invoice_id,
    BillingCurrency as billing_currency,
    {column} as {name},
    count(*) as pieces,
    sum(BilledCost) as billed_cost,
    sum(EffectiveCost) as effective_cost,
    any_value(x_ReportingCurrency) as reporting_currency,
    sum(x_ReportingBilledCost) as reporting_billed_cost,
    sum(x_ReportingEffectiveCost) as reporting_effective_cost
from allocations
where x_BillingMonth = getvariable('export_month')
group by all
