-- View portfolio: spend per billing month, value class (production / experimental / background) and team,
-- with the change from the previous month. Built on monthly_spend (a summary), so it costs the same whatever
-- the history (created when the taxonomy has a value_class dimension).
create or replace view portfolio as
with

monthly as (
    select
        x_BillingMonth,
        x_ValueClass as value_class,
        x_Team as team,
        BillingCurrency,
        sum(EffectiveCost) as effective_cost,
        sum(BilledCost) as billed_cost
    from monthly_spend
    group by all
)

select
    *,
    effective_cost - lag(effective_cost) over (
        partition by value_class, team, BillingCurrency order by x_BillingMonth
    ) as change_from_previous_month
from monthly
order by x_BillingMonth, value_class, team;
