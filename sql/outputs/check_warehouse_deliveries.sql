-- Blocking check on the staged warehouse: per source and billing month, the line items and the
-- allocation pieces come from one and the same provider delivery. A run stopped between the line-item
-- and allocation steps leaves them apart; such a month is never published. Returns one row per breach.
with

li as (
    select x_SourceName, x_BillingMonth, string_agg(distinct x_DeliveryId, ', ' order by x_DeliveryId) as deliveries
    from line_items
    group by all
),

al as (
    select x_SourceName, x_BillingMonth, string_agg(distinct x_DeliveryId, ', ' order by x_DeliveryId) as deliveries
    from allocations
    group by all
)

select
    coalesce(li.x_SourceName, al.x_SourceName) as source,
    coalesce(li.x_BillingMonth, al.x_BillingMonth) as billing_month,
    li.deliveries as line_item_deliveries,
    al.deliveries as allocation_deliveries
from li
full outer join al
    on al.x_SourceName = li.x_SourceName and al.x_BillingMonth = li.x_BillingMonth
where li.deliveries is distinct from al.deliveries
    or li.deliveries like '%, %'
order by 1, 2;
