-- LLM usage and cost (kinds openai, anthropic, litellm, bedrock_logs, otel_genai) -> FOCUS line items.
-- Reads:  stg_llm (one staged row per day x model x token type x attribution key, priced in Python by
--         models/prices.py; see connectors/llm.py), run_context (one row), ref_currencies.
-- Writes: temp view line_items_checked = contract columns + x_QuarantineReason (null = good row).
-- Follows the FOCUS AI working draft: ConsumedUnit 'Tokens', PricingUnit '1000000 Tokens', SkuPriceDetails
-- with ModelId, TokenDirection and TokenCacheAction.
-- x_CostBasis 'usage' rows carry zero BilledCost/EffectiveCost/ListCost/ContractedCost and their priced
-- estimate in x_PricedCost; 'invoice' rows (Costs API, cost report) are the billed dollars.

create or replace temp view line_items_checked as
with

ctx as (select * from run_context),

typed as (
    select
        s.*,
        try_cast(s.charge_day as date) as day,
        apportion_money(s.billed_cost) as billed,
        apportion_money(s.priced_cost) as priced,
        apportion_money(s.list_unit_price) as list_price,
        apportion_money(s.contracted_unit_price) as contracted_price,
        apportion_money(s.quantity) as qty,
        apportion_money(s.pricing_quantity) as pricing_qty,
        cast((select billing_month from ctx) || '-01 00:00:00+00' as timestamptz) as bp_start
    from stg_llm as s
),

checked as (
    select
        t.*,
        coalesce(
            t.quarantine,
            case
                when t.cost_basis = 'invoice' and apportion_not_numeric(t.billed_cost)
                    then 'non-numeric amount ' || t.billed_cost
                -- an amount that would vanish in rounding is shown, never carried as a zero (macros/create_macros.sql)
                when t.cost_basis = 'invoice' and apportion_rounds_to_zero(t.billed_cost)
                    then 'tiny amount ' || trim(cast(t.billed_cost as varchar))
                         || ': not zero, but 0 at 12 decimal places'
                when t.cost_basis = 'usage' and t.priced is null then 'usage row without a price'
                when upper(t.currency) not in (select currency_code from ref_currencies)
                    then 'unknown currency ' || t.currency
                when t.day is null then 'missing charge day'
                when strftime(t.day, '%Y-%m') <> (select billing_month from ctx)
                    then 'row belongs to billing month ' || strftime(t.day, '%Y-%m') || ', delivered in '
                         || (select billing_month from ctx)
            end
        ) as quarantine_reason
    from typed as t
)

select
    null as AvailabilityZone,
    case when c.cost_basis = 'invoice' then c.billed else 0 end as BilledCost,
    coalesce(c.billing_account_id, c.llm_provider, 'unknown') as BillingAccountId,
    c.billing_account_name as BillingAccountName,
    'Organization' as BillingAccountType,
    upper(coalesce(c.currency, 'USD')) as BillingCurrency,
    c.bp_start + interval 1 month as BillingPeriodEnd,
    c.bp_start as BillingPeriodStart,
    null as CapacityReservationId,
    null as CapacityReservationStatus,
    case when c.cost_basis = 'invoice' and c.billed < 0 then 'Credit' else 'Usage' end as ChargeCategory,
    null as ChargeClass,
    c.description as ChargeDescription,
    'Usage-Based' as ChargeFrequency,
    cast(c.day as timestamptz) + interval 1 day as ChargePeriodEnd,
    cast(c.day as timestamptz) as ChargePeriodStart,
    null as CommitmentDiscountCategory,
    null as CommitmentDiscountId,
    null as CommitmentDiscountName,
    null as CommitmentDiscountQuantity,
    null as CommitmentDiscountStatus,
    null as CommitmentDiscountType,
    null as CommitmentDiscountUnit,
    c.qty as ConsumedQuantity,
    c.consumed_unit as ConsumedUnit,
    case when c.cost_basis = 'invoice' then c.billed else 0 end as ContractedCost,
    c.contracted_price as ContractedUnitPrice,
    case when c.cost_basis = 'invoice' then c.billed else 0 end as EffectiveCost,
    null as InvoiceId,
    coalesce(c.invoice_issuer, c.provider_name, 'unknown') as InvoiceIssuerName,
    case when c.cost_basis = 'invoice' then c.billed else 0 end as ListCost,
    c.list_price as ListUnitPrice,
    'Standard' as PricingCategory,
    'USD' as PricingCurrency,
    c.contracted_price as PricingCurrencyContractedUnitPrice,
    case when c.cost_basis = 'invoice' then c.billed else 0 end as PricingCurrencyEffectiveCost,
    c.list_price as PricingCurrencyListUnitPrice,
    c.pricing_qty as PricingQuantity,
    c.pricing_unit as PricingUnit,
    coalesce(c.provider_name, 'unknown') as ProviderName,
    coalesce(c.publisher_name, c.provider_name, 'unknown') as PublisherName,
    c.region_id as RegionId,
    null as RegionName,
    c.resource_id as ResourceId,
    c.resource_id as ResourceName,
    c.resource_type as ResourceType,
    'AI and Machine Learning' as ServiceCategory,
    coalesce(c.service_name, 'Generative AI API') as ServiceName,
    'Generative AI' as ServiceSubcategory,
    c.sku_id as SkuId,
    c.sku_meter as SkuMeter,
    cast(c.sku_price_details as json) as SkuPriceDetails,
    c.sku_price_id as SkuPriceId,
    c.sub_account_id as SubAccountId,
    c.sub_account_name as SubAccountName,
    c.sub_account_type as SubAccountType,
    apportion_sorted_json(cast(c.tags as json)) as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    row_number() over (order by c._file, c._row, c._ord) as x_LineId,
    c._file as x_SourceFile,
    c._row as x_SourceRow,
    c.provider_line_item_id as x_ProviderLineItemId,
    case when c.cost_basis = 'invoice' then 'Cost' else 'Usage' end as x_LineItemType,
    c.llm_provider as x_ServiceCode,
    case when c.token_type is not null then coalesce(c.model_id, 'unknown') || ':' || c.token_type end as x_UsageType,
    c.operation as x_Operation,
    null as x_BillingEntity,
    null as x_InstanceType,
    null as x_CostCategories,
    true as x_HasResource,
    c.cost_basis as x_CostBasis,
    case when c.cost_basis = 'usage' then c.priced end as x_PricedCost,
    c.llm_provider as x_LlmProvider,
    c.model_id as x_ModelId,
    c.model_ref as x_ModelRef,
    c.token_type as x_TokenType,
    c.tokens as x_Tokens,
    c.requests as x_Requests,
    c.service_tier as x_ServiceTier,
    c.price_source as x_PriceSource,
    c.quarantine_reason as x_QuarantineReason
from checked as c
cross join apportion_lineage(run_context) as lineage;
