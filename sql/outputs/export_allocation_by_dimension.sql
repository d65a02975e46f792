-- Finance pack: the month's allocated cost by one dimension ({{name}}), in billing currency (and the reporting
-- currency when one is configured: its columns are empty otherwise).
select
    x_BillingMonth as billing_month,
    x_SourceName as source,
    ProviderName as provider,
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
order by source, billing_currency, billed_cost desc, {name}
