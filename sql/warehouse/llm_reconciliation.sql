-- LLM invoice reconciliation: per billing month x provider x usage source, what the provider invoiced,
-- what the usage (usage APIs, gateway and invocation logs, spans) prices to, and the residual between them.
-- Reads:  line_items, quarantined_rows.
-- Writes: table llm_reconciliation (per month: apportion/steps/summaries.py, lake table summary_llm_reconciliation).
--
-- Invoice = line_items with x_CostBasis 'invoice' that are LLM spend: rows of the LLM sources (x_LlmProvider:
-- OpenAI Costs API, Anthropic cost report) and Generative AI lines of cloud bills (the CUR's Bedrock lines,
-- including Marketplace models such as Claude on Bedrock; provider 'aws').
-- Usage = line_items with x_CostBasis 'usage' and an x_LlmProvider; its money is x_PricedCost (never billed).
-- One row per (month, provider, usage source): each usage source is reconciled against the whole invoice of
-- its provider on its own, because two sources may describe the same requests (a gateway and the provider's
-- usage API); a provider-month with an invoice but no usage has one row with usage_source null (all residual),
-- and usage without an invoice has invoice_cost 0. residual_cost = invoice_cost - priced_usage_cost: what
-- catalogue/negotiated prices do not explain (discounts, credits, unlogged traffic, unpriced models); it is
-- never dropped: split rules spread the whole invoice in proportion to priced usage, exactly.
-- status is honest about the size of the residual: `exact`, `within tolerance` (config reconciliation_tolerance,
-- a share of the invoice, default 1 %), `under` / `over` (priced usage explains less / more than the invoice
-- beyond the tolerance), `usage missing`, `invoice missing`.

with

invoice as (
    select
        x_BillingMonth,
        coalesce(
            x_LlmProvider,
            case
                when ProviderName = 'AWS' then 'aws'
                when ProviderName = 'Microsoft' then 'azure'
                when ProviderName ilike 'google%' then 'google'
                else lower(ProviderName)
            end
        ) as provider,
        BillingCurrency,
        x_SourceName,
        BilledCost,
        EffectiveCost
    from line_items
    where coalesce(x_CostBasis, 'invoice') = 'invoice'
        and (x_LlmProvider is not null
             or (ServiceCategory = 'AI and Machine Learning' and ServiceSubcategory = 'Generative AI'))
),

invoice_totals as (
    select
        x_BillingMonth,
        provider,
        BillingCurrency,
        string_agg(distinct x_SourceName, ', ' order by x_SourceName) as invoice_sources,
        count(*) as invoice_lines,
        sum(BilledCost) as invoice_cost,
        sum(EffectiveCost) as invoice_effective_cost
    from invoice
    group by all
),

usage as (
    select
        x_BillingMonth,
        x_LlmProvider as provider,
        BillingCurrency,
        x_SourceName as usage_source,
        count(*) as usage_lines,
        sum(coalesce(x_Tokens, 0)) as usage_tokens,
        sum(coalesce(x_Requests, 0)) as usage_requests,
        sum(x_PricedCost) as priced_usage_cost
    from line_items
    where x_CostBasis = 'usage' and x_LlmProvider is not null
    group by all
),

-- Usage rows left out because no price is known (reason 'unpriced model <provider>/<model>: ...').
unpriced as (
    select
        x_BillingMonth,
        x_SourceName as usage_source,
        regexp_extract(reason, '^unpriced model ([^/]+)/', 1) as provider,
        count(*) as unpriced_rows
    from quarantined_rows
    where reason like 'unpriced model %'
    group by all
),

joined as (
    select
        coalesce(i.x_BillingMonth, u.x_BillingMonth) as x_BillingMonth,
        coalesce(i.provider, u.provider) as provider,
        coalesce(i.BillingCurrency, u.BillingCurrency) as billing_currency,
        i.invoice_sources,
        coalesce(i.invoice_lines, 0) as invoice_lines,
        coalesce(i.invoice_cost, 0) as invoice_cost,
        coalesce(i.invoice_effective_cost, 0) as invoice_effective_cost,
        u.usage_source,
        coalesce(u.usage_lines, 0) as usage_lines,
        coalesce(u.usage_tokens, 0) as usage_tokens,
        coalesce(u.usage_requests, 0) as usage_requests,
        coalesce(u.priced_usage_cost, 0) as priced_usage_cost
    from invoice_totals as i
    full outer join usage as u
        on u.x_BillingMonth = i.x_BillingMonth
        and u.provider = i.provider
        and u.BillingCurrency = i.BillingCurrency
)

select
    j.x_BillingMonth,
    j.provider,
    j.billing_currency,
    j.invoice_sources,
    j.invoice_lines,
    cast(j.invoice_cost as decimal(38, 12)) as invoice_cost,
    cast(j.invoice_effective_cost as decimal(38, 12)) as invoice_effective_cost,
    j.usage_source,
    j.usage_lines,
    j.usage_tokens,
    j.usage_requests,
    cast(j.priced_usage_cost as decimal(38, 12)) as priced_usage_cost,
    coalesce(q.unpriced_rows, 0) as unpriced_usage_rows,
    cast(j.invoice_cost - j.priced_usage_cost as decimal(38, 12)) as residual_cost,
    case when j.invoice_cost <> 0
        then round(cast(j.invoice_cost - j.priced_usage_cost as double) / cast(j.invoice_cost as double), 6)
    end as residual_share,
    t.tolerance,
    case
        when j.usage_source is null then 'usage missing'
        when j.invoice_lines = 0 then 'invoice missing'
        when j.invoice_cost = j.priced_usage_cost then 'exact'
        when abs(j.invoice_cost - j.priced_usage_cost) <= t.tolerance * abs(j.invoice_cost) then 'within tolerance'
        when j.priced_usage_cost > j.invoice_cost then 'over'
        else 'under'
    end as status
from joined as j
-- the config's reconciliation_tolerance (SET VARIABLE by the warehouse step), else 1 %
cross join (select coalesce(try_cast(getvariable('reconciliation_tolerance') as decimal(9, 6)),
                            cast(0.01 as decimal(9, 6))) as tolerance) as t
left join unpriced as q
    on q.x_BillingMonth = j.x_BillingMonth and q.usage_source = j.usage_source and q.provider = j.provider
