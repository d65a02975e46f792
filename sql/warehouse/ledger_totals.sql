-- Table ledger_totals: per source and billing month, what the line items, the allocation pieces and the
-- quarantine hold: counts, BilledCost / EffectiveCost totals, the deliveries they came from, and the lake
-- versions they were read from. Computed per source x month (apportion/steps/summaries.py, lake table
-- summary_totals); the warehouse's blocking checks (sql/checks/) read it.
-- {{source}}, {{month}}, {{li_version}}, {{al_version}}, {{q_version}}: literals filled in by summaries.py.
with

li as (
    select
        count(*) as line_items,
        sum(BilledCost) as billed,
        sum(EffectiveCost) as effective,
        string_agg(distinct x_DeliveryId, ', ' order by x_DeliveryId) as deliveries,
        max(ChargePeriodEnd) filter (where coalesce(x_CostBasis, 'invoice') = 'invoice') as last_charge_end
    from line_items
),

al as (
    select
        count(*) as pieces,
        sum(BilledCost) as billed,
        sum(EffectiveCost) as effective,
        string_agg(distinct x_DeliveryId, ', ' order by x_DeliveryId) as deliveries
    from allocations
),

q as (
    select count(*) as quarantined_rows
    from quarantined_rows
)

select
    {source} as x_SourceName,
    {month} as x_BillingMonth,
    li.line_items,
    li.billed as line_items_billed_cost,
    li.effective as line_items_effective_cost,
    al.pieces,
    al.billed as allocated_billed_cost,
    al.effective as allocated_effective_cost,
    li.deliveries as line_item_deliveries,
    al.deliveries as allocation_deliveries,
    q.quarantined_rows,
    li.last_charge_end,
    {li_version} as line_items_version,
    {al_version} as allocations_version,
    {q_version} as quarantine_version
from li, al, q
