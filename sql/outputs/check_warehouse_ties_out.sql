-- Blocking check on the published warehouse: per source and billing month, allocated totals equal
-- line-item totals exactly (BilledCost and EffectiveCost). Returns one row per breach.
with

li as (
    select x_SourceName, x_BillingMonth, sum(BilledCost) as billed, sum(EffectiveCost) as effective
    from line_items
    group by all
),

al as (
    select x_SourceName, x_BillingMonth, sum(BilledCost) as billed, sum(EffectiveCost) as effective
    from allocations
    group by all
)

select
    coalesce(li.x_SourceName, al.x_SourceName) as source,
    coalesce(li.x_BillingMonth, al.x_BillingMonth) as billing_month,
    li.billed as line_items_billed,
    al.billed as allocated_billed,
    li.effective as line_items_effective,
    al.effective as allocated_effective
from li
full outer join al
    on al.x_SourceName = li.x_SourceName and al.x_BillingMonth = li.x_BillingMonth
where li.billed is distinct from al.billed or li.effective is distinct from al.effective
order by 1, 2;
