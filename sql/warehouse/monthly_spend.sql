-- Table monthly_spend: allocated spend per billing month, source, provider, currency and every taxonomy
-- dimension (x_Team, x_Project, x_Workload, ...). Computed per source x month (apportion/steps/summaries.py,
-- lake table summary_spend) from that partition's allocations; the warehouse's monthly_spend is a view over
-- every month's rows. Σ BilledCost per source and month equals the invoice (the control totals).
-- {{dimensions}}: the partition's dimension columns.
select
    x_BillingMonth,
    x_SourceName,
    ProviderName,
    BillingCurrency,
    {dimensions},
    count(*) as pieces,
    sum(BilledCost) as BilledCost,
    sum(EffectiveCost) as EffectiveCost,
    sum(ListCost) as ListCost
from allocations
group by all
