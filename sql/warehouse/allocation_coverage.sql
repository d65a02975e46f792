-- Table allocation_coverage: spend-weighted coverage per billing month, source, dimension and currency.
-- Shared charges (tax, credits, commitment fees) are reported apart: they are not untagged, they are split
-- by shared-cost rules. Computed per source x month (apportion/steps/summaries.py, lake table
-- summary_coverage); the *_abs_cost columns let any roll-up (all sources, a year) recompute coverage exactly.
with

unpivoted as (
    {dimension_union}
),

classified as (
    select
        x_BillingMonth,
        x_SourceName,
        dimension,
        BillingCurrency,
        case
            when value = 'untagged' then 'untagged'
            when value = 'shared' then 'shared'
            when reason like 'spread:%' then 'spread'
            else 'attributed'
        end as status,
        EffectiveCost
    from unpivoted
)

select
    x_BillingMonth,
    x_SourceName,
    dimension,
    BillingCurrency,
    sum(EffectiveCost) as total_cost,
    coalesce(sum(EffectiveCost) filter (where status = 'attributed'), 0) as attributed_cost,
    coalesce(sum(EffectiveCost) filter (where status = 'shared'), 0) as shared_cost,
    coalesce(sum(EffectiveCost) filter (where status = 'untagged'), 0) as untagged_cost,
    coalesce(sum(EffectiveCost) filter (where status = 'spread'), 0) as spread_cost,
    round(
        coalesce(sum(abs(EffectiveCost)) filter (where status = 'attributed'), 0)
        / nullif(sum(abs(EffectiveCost)) filter (where status not in ('shared')), 0),
        6
    ) as coverage,
    coalesce(sum(abs(EffectiveCost)) filter (where status = 'attributed'), 0) as attributed_abs_cost,
    coalesce(sum(abs(EffectiveCost)) filter (where status = 'untagged'), 0) as untagged_abs_cost,
    coalesce(sum(abs(EffectiveCost)) filter (where status = 'spread'), 0) as spread_abs_cost
from classified
group by all
