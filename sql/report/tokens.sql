-- Report, AI unit economics: tokens and cost per model and team for one billing month
-- (getvariable('report_month')).
--
-- Token rows: ConsumedUnit mentions tokens (FOCUS AI draft: 'Tokens'), or the provider usage type
-- does (AWS Marketplace model lines are counted in 'Units' with usage types like '...InputTokenCount...').
-- {{x_...}} placeholders are the optional x_ columns (x_ModelId, x_Tokens, x_LlmProvider) or NULL when the
-- warehouse has no such column. Tokens: x_Tokens, else ConsumedQuantity.
-- Model: x_ModelId, else SkuPriceDetails.ModelId (FOCUS AI draft), else the model in a Bedrock usage type
-- ('USE1-NovaPro-input-tokens' -> 'NovaPro'), else the service name ('Claude Sonnet 4.6 (Amazon Bedrock
-- Edition)' -> 'Claude Sonnet 4.6').
-- Counted once: per provider and month, the invoice rows when the bill states tokens (x_Tokens: Bedrock in the
-- CUR, Azure OpenAI, Vertex AI), with their EffectiveCost; else usage-basis rows (logs, usage APIs), from one
-- usage source, with their priced cost (x_PricedCost); else invoice rows counted in token units.
-- Each allocation piece carries its share (x_AllocatedRatio) of the line's tokens.
with

token_lines as (
    select
        x_SourceName,
        x_BillingMonth,
        x_LineId,
        ProviderName,
        BillingCurrency,
        coalesce(x_CostBasis, 'invoice') as basis,
        -- provider key as in llm_unit_economics: x_LlmProvider, else the invoice's provider (AWS = Bedrock)
        coalesce({x_llm_provider}, CASE WHEN ProviderName = 'AWS' THEN 'aws' WHEN ProviderName = 'Microsoft' THEN 'azure'
                                        WHEN ProviderName ILIKE 'google%' THEN 'google' ELSE lower(ProviderName) END) as llm_provider,
        coalesce(
            nullif({x_model_id}, ''),
            nullif(SkuPriceDetails ->> '$.ModelId', ''),
            nullif(regexp_extract(x_UsageType, '^[A-Za-z0-9]+-(.+?)-(?:cache-read-|cache-write-)?(?:input|output)-token', 1), ''),
            regexp_replace(ServiceName, '\s*\((Amazon )?Bedrock Edition\)\s*$', '')
        ) as model,
        coalesce(CAST({x_tokens} AS DECIMAL(38,12)), ConsumedQuantity) as tokens,
        {x_tokens} is not null as has_tokens,
        x_PricedCost
    from line_items
    where x_BillingMonth = getvariable('report_month')
        and coalesce(CAST({x_tokens} AS DECIMAL(38,12)), ConsumedQuantity) is not null
        -- a commitment negation line repeats the quantity of the usage it cancels: count usage once
        and coalesce(x_LineItemType, '') not ilike '%negation%'
        and ({x_tokens} is not null or lower(ConsumedUnit) like '%token%' or lower(x_UsageType) like '%token%')
),

chosen as (
    select *
    from token_lines
    -- the bill's own tokens when it states them (cloud bills decoded to model and direction), else usage rows
    qualify basis = (case when bool_or(basis = 'invoice' and has_tokens) over (partition by llm_provider) then 'invoice'
                          when bool_or(basis = 'usage') over (partition by llm_provider) then 'usage'
                          else 'invoice' end)
),

pieces as (
    select
        t.llm_provider,
        t.x_SourceName,
        t.model,
        t.basis,
        t.BillingCurrency,
        a.x_Team,
        -- display figures (DOUBLE): exact money stays in the finance pack
        CAST(t.tokens AS DOUBLE) * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE) as tokens,
        CASE WHEN t.basis = 'usage' THEN CAST(coalesce(t.x_PricedCost, 0) AS DOUBLE) * CAST(coalesce(a.x_AllocatedRatio, 1) AS DOUBLE)
             ELSE CAST(a.EffectiveCost AS DOUBLE) END as cost
    from chosen as t
    inner join allocations as a
        on a.x_SourceName = t.x_SourceName and a.x_BillingMonth = t.x_BillingMonth and a.x_LineId = t.x_LineId
),

-- A gateway and a provider's usage API may count the same requests: one usage source per provider, never
-- summed: the one that attributes the most tokens to a team (a gateway knows teams, a provider API rarely).
usage_source as (
    select llm_provider, x_SourceName
    from pieces
    where basis = 'usage'
    group by llm_provider, x_SourceName
    qualify row_number() over (
        partition by llm_provider
        order by coalesce(sum(tokens) filter (where x_Team not in ('untagged', 'shared')), 0) desc, sum(tokens) desc, x_SourceName
    ) = 1
)

select
    p.llm_provider as provider,
    p.model,
    p.x_Team as team,
    CASE WHEN p.basis = 'usage' THEN 'priced, ' || p.x_SourceName ELSE 'invoice' END as basis,
    p.BillingCurrency as currency,
    sum(p.tokens) as tokens,
    sum(p.cost) as cost
from pieces as p
where p.basis = 'invoice'
    or exists (select 1 from usage_source as u where u.llm_provider = p.llm_provider and u.x_SourceName = p.x_SourceName)
group by all
order by tokens desc
