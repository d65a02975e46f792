-- Analyst view: allocated spend per billing month, source, provider, currency, team, project and
-- workload. A view over `allocations`, so it is always consistent with it; Σ BilledCost per source
-- and month equals the invoice (the control totals).
create or replace view monthly_spend as
select
    x_BillingMonth,
    x_SourceName,
    ProviderName,
    BillingCurrency,
    x_Team,
    x_Project,
    x_Workload,
    count(*) as pieces,
    sum(BilledCost) as BilledCost,
    sum(EffectiveCost) as EffectiveCost,
    sum(ListCost) as ListCost
from allocations
group by all
