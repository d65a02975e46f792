-- Table recommendations: savings advice, one row per finding. Read from the Arrow table sv_findings_arrow
-- (apportion/savings/table.py: the kinds' findings, amounts as exact decimal strings). With a reporting
-- currency, the saving is also converted at the month's rate of the line items in the finding's currency.
-- Column descriptions: models/warehouse_docs.py.
-- {{reporting_currency}}: the configured reporting currency as a SQL literal, or null::varchar.
create or replace table recommendations as
with

f as (
    select
        *,
        cast(saving as decimal(38, 2)) as saving_cents,
        case when {reporting_currency} is not null then (
            select max(li.x_FxRate)
            from line_items as li
            where
                li.x_BillingMonth = sv_findings_arrow.x_BillingMonth
                and li.BillingCurrency = sv_findings_arrow.currency
                and li.x_FxRate is not null
        ) end as fx
    from sv_findings_arrow
)

select
    finding_id,
    kind,
    x_BillingMonth,
    cast(period_start as date) as period_start,
    cast(period_end as date) as period_end,
    days_observed,
    team,
    project,
    workload,
    scope_type,
    scope_id,
    provider,
    current,
    suggested,
    cast(evidence as json) as evidence,
    formula,
    saving_cents as estimated_monthly_saving,
    currency,
    cast({reporting_currency} as varchar) as reporting_currency,
    cast(fx as decimal(38, 12)) as fx_rate,
    cast(round(saving_cents * cast(fx as decimal(38, 12)), 2) as decimal(38, 2))
        as estimated_monthly_saving_reporting,
    confidence,
    confidence_reason
from f
order by x_BillingMonth, estimated_monthly_saving desc, finding_id;
