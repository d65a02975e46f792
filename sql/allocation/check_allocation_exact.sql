-- Blocking invariant: allocation pieces sum exactly to their line item, and per source and month
-- the allocated totals equal the line-item totals to the last decimal. Returns one row per breach.
-- Reads: month_line_items, month_allocations.
with

pieces as (
    select x_LineId, sum(BilledCost) as billed, sum(EffectiveCost) as effective, count(*) as n
    from month_allocations
    group by x_LineId
),

lines as (
    select x_LineId, BilledCost as billed, EffectiveCost as effective
    from month_line_items
)

select
    coalesce(l.x_LineId, p.x_LineId) as x_LineId,
    l.billed as line_billed,
    p.billed as allocated_billed,
    l.effective as line_effective,
    p.effective as allocated_effective
from lines as l
full outer join pieces as p on p.x_LineId = l.x_LineId
where l.x_LineId is null
    or p.x_LineId is null
    or l.billed <> p.billed
    or l.effective <> p.effective
limit 20;
