-- Blocking check on the staged warehouse: per source and billing month, the line items and the
-- allocation pieces come from one and the same provider delivery. A run stopped between the line-item
-- and allocation steps leaves them apart; such a month is never published. Reads ledger_totals.
-- Returns one row per breach.
select
    x_SourceName as source,
    x_BillingMonth as billing_month,
    line_item_deliveries,
    allocation_deliveries
from ledger_totals
where line_item_deliveries is distinct from allocation_deliveries
    or line_item_deliveries like '%, %'
order by 1, 2;
