-- Blocking check on the staged warehouse: per source and billing month, allocated totals equal line-item
-- totals exactly (BilledCost and EffectiveCost). Reads ledger_totals (the per source x month summary of the
-- exact line-item and allocation versions the views read). Returns one row per breach.
select
    x_SourceName as source,
    x_BillingMonth as billing_month,
    line_items_billed_cost as line_items_billed,
    allocated_billed_cost as allocated_billed,
    line_items_effective_cost as line_items_effective,
    allocated_effective_cost as allocated_effective
from ledger_totals
where line_items_billed_cost is distinct from allocated_billed_cost
    or line_items_effective_cost is distinct from allocated_effective_cost
order by 1, 2;
