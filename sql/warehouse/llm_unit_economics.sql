-- LLM unit economics: $ per 1M tokens, $ per request, tokens per request and cache-hit share, per billing
-- month x provider x usage source x team x project x workload x model.
-- Reads:  line_items (LLM usage rows: x_CostBasis 'usage' with x_LlmProvider; LLM invoice rows as in
--         create_llm_reconciliation.sql), allocations (x_Team, x_Project, x_Workload and x_AllocatedRatio of
--         every piece of the usage rows).
-- Writes: table llm_unit_economics (per month: apportion/steps/summaries.py, lake table summary_llm_unit_economics).
--
-- Tokens, requests and priced cost come from ONE usage source per row (sources are never summed, because a
-- gateway and a provider's usage API may count the same requests: read the source your split rules use).
-- invoiced_cost is the real invoice money that reached the same team x project x workload x model: the
-- allocated EffectiveCost of the provider's invoice lines (after split rules), so it repeats on the row of
-- every usage source of that slice. Invoice pieces no usage source explains get a row with usage_source null
-- (e.g. untagged invoice lines, Bedrock / Azure OpenAI / Vertex AI lines of a cloud bill); when the bill states
-- model and tokens (x_ModelId, x_Tokens decoded from usage type, meter or SKU) those rows carry the bill's tokens,
-- so cost per model per team is answered from the invoice itself.
-- usd_per_* use invoiced_cost; priced_usd_per_* use priced_cost (Σ x_PricedCost, catalogue/negotiated prices).
-- Ratios are DOUBLE (display figures); exact money stays in allocations and the finance pack.

with

usage_pieces as (
    select
        l.x_BillingMonth,
        l.x_LlmProvider as provider,
        l.x_SourceName as usage_source,
        l.BillingCurrency,
        a.x_Team as team,
        a.x_Project as project,
        a.x_Workload as workload,
        coalesce(l.x_ModelId, 'unknown') as model,
        l.x_TokenType,
        cast(coalesce(l.x_Tokens, 0) as double) * cast(a.x_AllocatedRatio as double) as tokens,
        cast(coalesce(l.x_Requests, 0) as double) * cast(a.x_AllocatedRatio as double) as requests,
        case when a.x_AllocatedRatio = 1 then l.x_PricedCost
             else cast(cast(l.x_PricedCost as double) * cast(a.x_AllocatedRatio as double) as decimal(38, 12))
        end as priced_cost
    from line_items as l
    inner join allocations as a
        on a.x_SourceName = l.x_SourceName and a.x_BillingMonth = l.x_BillingMonth and a.x_LineId = l.x_LineId
    where l.x_CostBasis = 'usage' and l.x_LlmProvider is not null
),

invoice_pieces as (
    select
        l.x_BillingMonth,
        coalesce(
            l.x_LlmProvider,
            case
                when l.ProviderName = 'AWS' then 'aws'
                when l.ProviderName = 'Microsoft' then 'azure'
                when l.ProviderName ilike 'google%' then 'google'
                else lower(l.ProviderName)
            end
        ) as provider,
        l.BillingCurrency,
        a.x_Team as team,
        a.x_Project as project,
        a.x_Workload as workload,
        coalesce(l.x_ModelId, 'unknown') as model,
        -- tokens the bill itself states (cloud bills decoded: Bedrock, Azure OpenAI, Vertex AI), this piece's share
        l.x_TokenType,
        cast(l.x_Tokens as double) * cast(a.x_AllocatedRatio as double) as tokens,
        a.EffectiveCost,
        a.BilledCost
    from line_items as l
    inner join allocations as a
        on a.x_SourceName = l.x_SourceName and a.x_BillingMonth = l.x_BillingMonth and a.x_LineId = l.x_LineId
    where coalesce(l.x_CostBasis, 'invoice') = 'invoice'
        and (l.x_LlmProvider is not null
             or (l.ServiceCategory = 'AI and Machine Learning' and l.ServiceSubcategory = 'Generative AI'))
),

invoiced as (
    select
        x_BillingMonth, provider, BillingCurrency, team, project, workload, model,
        sum(EffectiveCost) as invoiced_cost,
        sum(tokens) filter (where x_TokenType <> 'web_search') as tokens,
        sum(tokens) filter (where x_TokenType in ('input', 'input_audio')) as input_tokens,
        sum(tokens) filter (where x_TokenType = 'cache_read') as cache_read_tokens,
        sum(tokens) filter (where x_TokenType in ('cache_write_5m', 'cache_write_1h')) as cache_write_tokens,
        sum(tokens) filter (where x_TokenType in ('output', 'output_audio')) as output_tokens
    from invoice_pieces
    group by all
),

grouped as (
    select
        x_BillingMonth,
        provider,
        usage_source,
        BillingCurrency as billing_currency,
        team,
        project,
        workload,
        model,
        sum(requests) as requests,
        sum(tokens) filter (where x_TokenType <> 'web_search') as tokens,
        sum(tokens) filter (where x_TokenType in ('input', 'input_audio')) as input_tokens,
        sum(tokens) filter (where x_TokenType = 'cache_read') as cache_read_tokens,
        sum(tokens) filter (where x_TokenType in ('cache_write_5m', 'cache_write_1h')) as cache_write_tokens,
        sum(tokens) filter (where x_TokenType in ('output', 'output_audio')) as output_tokens,
        sum(priced_cost) as priced_cost
    from usage_pieces
    group by all
),

measured as (
    select
        g.*,
        i.invoiced_cost
    from grouped as g
    left join invoiced as i
        on i.x_BillingMonth = g.x_BillingMonth and i.provider = g.provider
        and i.BillingCurrency = g.billing_currency and i.team is not distinct from g.team
        and i.project is not distinct from g.project and i.workload is not distinct from g.workload
        and i.model = g.model
),

unexplained as (
    select
        i.x_BillingMonth, i.provider, cast(null as varchar) as usage_source, i.BillingCurrency as billing_currency,
        i.team, i.project, i.workload, i.model,
        cast(null as double) as requests, i.tokens, i.input_tokens, i.cache_read_tokens, i.cache_write_tokens,
        i.output_tokens, cast(null as decimal(38, 12)) as priced_cost, i.invoiced_cost
    from invoiced as i
    where not exists (
        select 1 from grouped as g
        where g.x_BillingMonth = i.x_BillingMonth and g.provider = i.provider
            and g.billing_currency = i.BillingCurrency and g.team is not distinct from i.team
            and g.project is not distinct from i.project and g.workload is not distinct from i.workload
            and g.model = i.model
    )
),

rows as (
    select * from measured
    union all by name
    select * from unexplained
)

select
    r.x_BillingMonth,
    r.provider,
    r.usage_source,
    r.billing_currency,
    r.team,
    r.project,
    r.workload,
    r.model,
    round(r.requests, 6) as requests,
    round(r.tokens, 6) as tokens,
    round(r.input_tokens, 6) as input_tokens,
    round(r.cache_read_tokens, 6) as cache_read_tokens,
    round(r.cache_write_tokens, 6) as cache_write_tokens,
    round(r.output_tokens, 6) as output_tokens,
    r.priced_cost,
    cast(r.invoiced_cost as decimal(38, 12)) as invoiced_cost,
    case when r.tokens > 0 then cast(r.invoiced_cost as double) * 1e6 / r.tokens end as usd_per_1m_tokens,
    case when r.tokens > 0 then cast(r.priced_cost as double) * 1e6 / r.tokens end as priced_usd_per_1m_tokens,
    case when r.requests > 0 then cast(r.invoiced_cost as double) / r.requests end as usd_per_request,
    case when r.requests > 0 then cast(r.priced_cost as double) / r.requests end as priced_usd_per_request,
    case when r.requests > 0 then r.tokens / r.requests end as tokens_per_request,
    case when coalesce(r.input_tokens, 0) + coalesce(r.cache_read_tokens, 0) + coalesce(r.cache_write_tokens, 0) > 0
        then coalesce(r.cache_read_tokens, 0)
             / (coalesce(r.input_tokens, 0) + coalesce(r.cache_read_tokens, 0) + coalesce(r.cache_write_tokens, 0))
    end as cache_hit_share
from rows as r
