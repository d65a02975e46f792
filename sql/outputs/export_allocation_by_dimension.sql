-- Finance pack: the month's allocated cost by one dimension ({{name}}), in billing currency.
select
    x_BillingMonth as billing_month,
    x_SourceName as source,
    ProviderName as provider,
    BillingCurrency as billing_currency,
    {column} as {name},
    count(*) as pieces,
    sum(BilledCost) as billed_cost,
    sum(EffectiveCost) as effective_cost
from allocations
where x_BillingMonth = getvariable('export_month')
group by all
order by source, billing_currency, billed_cost desc, {name}
