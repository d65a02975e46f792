-- Finance pack: the month's unattributed spend with its reason and owner hints.
select
    x_BillingMonth as billing_month,
    x_SourceName as source,
    dimension,
    reason_code,
    reason,
    SubAccountId as account_id,
    SubAccountName as account_name,
    ServiceName as service,
    ResourceId as resource_id,
    created_by,
    BillingCurrency as billing_currency,
    line_items,
    BilledCost as billed_cost,
    EffectiveCost as effective_cost
from untagged_spend
where x_BillingMonth = getvariable('export_month')
order by source, dimension, effective_cost desc
