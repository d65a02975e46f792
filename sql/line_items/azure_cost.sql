-- Azure Cost Management ActualCost / AmortizedCost rows (EA, MCA, v1 column sets) -> apportion line items.
-- Reads:  stg_azure_cost (canonical snake_case text columns + _file/_row/_file_idx/_dataset), run_context,
--         our reference tables from models/reference/azure_cost/ (connectors.azure_cost.load_azure_reference):
--         ref_azure_services, ref_azure_pricing_units (+ the unit rule macros apportion_azure_unit_*),
--         ref_azure_regions; ref_currencies.
-- Writes: temp view line_items_checked = contract columns + x_QuarantineReason (null = good row).
--
-- Costs: ActualCost -> BilledCost = EffectiveCost = cost, except commitment (reservation / savings plan)
-- purchases, whose EffectiveCost is 0 as FOCUS requires (their amortisation is only in AmortizedCost or
-- FocusCost exports: use one of those when effective cost matters).
-- AmortizedCost -> EffectiveCost = cost; BilledCost = 0 on commitment-covered usage and unused
-- commitment (that money was billed by the purchase, which the amortized dataset spreads), cost elsewhere.
-- Units: UnitOfMeasure `10K` / `1M` / `1 Hour` is a block of units; quantities are multiplied out
-- to single units (pricing_units.csv gives the block size and the unit; a spelling it lacks goes by the
-- rule `<n>[K|M] [unit]`) and unit prices divided.
-- Services: services.csv, first match wins: a cross-cutting meter category (Bandwidth, Functions, ...), the
-- exact ConsumedService + resource type, the resource type alone, the ConsumedService alone. No match:
-- ServiceCategory 'Other', ServiceSubcategory 'Other (Other)', ServiceName = the provider's own name
-- (MeterCategory, else ConsumedService) and x_UnmappedService = that name; the row is kept.
-- Prices: MCA prices are in the pricing currency; with ExchangeRatePricingToBilling they are converted to the
-- billing currency (FOCUS unit prices are in BillingCurrency).

create or replace temp view line_items_checked as
with

ctx as (select * from run_context),

src as (
    select
        s.*,
        lower(regexp_extract(s.resource_id, '/providers/([^/]+/[^/]+)', 1)) as resource_type_key
    from stg_azure_cost as s
),

services as (
    select distinct consumed_service, lower(consumed_service) as consumed_key, resource_type_key, meter_category,
        meter_subcategory, meter_name
    from src
),

service_match as (
    select
        s.*,
        coalesce(by_meter.ServiceName, exact.ServiceName, by_type.ServiceName, by_service.ServiceName) as mapped_name,
        coalesce(by_meter.ServiceCategory, exact.ServiceCategory, by_type.ServiceCategory, by_service.ServiceCategory)
            as mapped_category,
        coalesce(by_meter.ServiceSubcategory, exact.ServiceSubcategory, by_type.ServiceSubcategory,
                 by_service.ServiceSubcategory) as mapped_subcategory,
        coalesce(s.meter_category, s.consumed_service, 'Unknown') as provider_service
    from services as s
    left join ref_azure_services as by_meter
        on by_meter.consumed_service is null and by_meter.resource_type is null
        and by_meter.meter_category = lower(s.meter_category)
    left join ref_azure_services as exact
        on exact.meter_category is null and exact.consumed_service = s.consumed_key
        and exact.resource_type = s.resource_type_key
    left join lateral (
        select r.ServiceName, r.ServiceCategory, r.ServiceSubcategory
        from ref_azure_services as r
        where r.meter_category is null and r.resource_type = s.resource_type_key
        order by r.consumed_service nulls first
        limit 1
    ) as by_type on true
    left join ref_azure_services as by_service
        on by_service.meter_category is null and by_service.resource_type is null
        and by_service.consumed_service = s.consumed_key
),

service_map as (
    select
        m.consumed_service, m.resource_type_key, m.meter_category, m.meter_subcategory, m.meter_name,
        coalesce(m.mapped_name, m.provider_service) as service_name,
        coalesce(m.mapped_category, 'Other') as service_category,
        case
            -- Azure OpenAI / Foundry model meters of an AI service are generative AI
            when m.mapped_category = 'AI and Machine Learning'
                 and (m.meter_subcategory ilike '%openai%' or m.meter_category ilike '%openai%'
                      or m.meter_category ilike 'Foundry Models%' or m.meter_name ilike '%token%')
                then 'Generative AI'
            else coalesce(m.mapped_subcategory, 'Other (Other)')
        end as service_subcategory,
        case when m.mapped_name is null then m.provider_service end as unmapped_service
    from service_match as m
),

units as (
    select distinct unit_of_measure from src
),

unit_map as (
    select
        u.unit_of_measure,
        coalesce(pu.block_size, apportion_azure_unit_block(u.unit_of_measure)) as block_size,
        coalesce(pu.distinct_unit, apportion_azure_unit_name(u.unit_of_measure)) as distinct_unit
    from units as u
    left join ref_azure_pricing_units as pu on pu.unit_key = apportion_azure_unit_key(u.unit_of_measure)
),

regions as (
    select distinct resource_location from src
),

region_map as (
    select r.resource_location, g.RegionId, g.RegionName
    from regions as r
    left join ref_azure_regions as g on g.spelling = lower(trim(r.resource_location))
),

tag_sets as (select distinct tags as raw from src),

tag_json as (
    select raw, apportion_tags_from_entries(apportion_tag_entries(apportion_json_object(raw), true)) as tags
    from tag_sets
),

typed as (
    select
        s._file, s._row, s._file_idx, s._dataset,
        s.billing_account_id, s.billing_account_name, s.billing_profile_id, s.invoice_id,
        s.subscription_id, s.subscription_name,
        lower(s.resource_group) as resource_group,
        s.product, s.meter_id, s.meter_category, s.meter_subcategory, s.meter_name, s.part_number,
        s.consumed_service, s.resource_name, s.unit_of_measure, s.publisher_name, s.publisher_type,
        s.availability_zone, s.resource_type_key,
        lower(s.resource_id) as resource_id,
        apportion_money(s.cost) as cost,
        apportion_money(s.quantity) as quantity,
        cast(apportion_money(s.unit_price) * fx.rate as decimal(38, 12)) as unit_price,
        cast(apportion_money(s.payg_price) * fx.rate as decimal(38, 12)) as payg_price,
        apportion_money(s.payg_cost) as payg_cost,
        upper(s.billing_currency) as currency,
        upper(s.pricing_currency) as pricing_currency,
        s.charge_type,
        s.frequency,
        s.pricing_model,
        coalesce(s.benefit_id, s.reservation_id) as commitment_id,
        coalesce(s.benefit_name, s.reservation_name) as commitment_name,
        apportion_ts(s.date) as usage_day,
        date_trunc('month', apportion_ts(s.billing_period_start)) as period_start,
        apportion_json_object(s.additional_info) as additional_info,
        tj.tags,
        sm.service_name, sm.service_category, sm.service_subcategory, sm.unmapped_service,
        um.block_size, um.distinct_unit,
        rm.RegionId as region_id, coalesce(rm.RegionName, s.resource_location) as region_name,
        case lower(coalesce(s.charge_type, 'Usage'))
            when 'usage' then 'Usage'
            when 'unusedreservation' then 'Usage'
            when 'unusedsavingsplan' then 'Usage'
            when 'purchase' then 'Purchase'
            when 'refund' then 'Credit'
            when 'credit' then 'Credit'
            when 'tax' then 'Tax'
            when 'adjustment' then 'Adjustment'
            when 'roundingadjustment' then 'Adjustment'
        end as charge_category,
        case
            when s.cost is null then 'missing cost'
            when apportion_not_numeric(s.cost) then 'non-numeric cost ' || s.cost
            -- an amount that would vanish in rounding is shown, never carried as a zero (macros/create_macros.sql)
            when apportion_rounds_to_zero(s.cost)
                then 'tiny cost ' || trim(cast(s.cost as varchar)) || ': not zero, but 0 at 12 decimal places'
            when apportion_not_numeric(s.quantity) then 'non-numeric Quantity ' || s.quantity
            when apportion_not_numeric(s.payg_price) then 'non-numeric PayGPrice ' || s.payg_price
            when apportion_not_numeric(s.unit_price) then 'non-numeric UnitPrice ' || s.unit_price
            when apportion_not_numeric(s.exchange_rate)
                then 'non-numeric ExchangeRatePricingToBilling ' || s.exchange_rate
            when s.billing_currency is null then 'missing BillingCurrency'
            when upper(s.billing_currency) not in (select currency_code from ref_currencies)
                then 'unknown currency ' || s.billing_currency
            when s.date is null then 'missing Date'
            when apportion_bad_ts(s.date) then 'unparseable Date ' || s.date
            when apportion_bad_ts(s.billing_period_start) then 'unparseable BillingPeriodStartDate ' || s.billing_period_start
            when s.billing_period_start is not null
                 and strftime(apportion_ts(s.billing_period_start), '%Y-%m') <> (select billing_month from ctx)
                then 'row belongs to billing period ' || strftime(apportion_ts(s.billing_period_start), '%Y-%m')
                     || ', delivered in ' || (select billing_month from ctx)
            when lower(coalesce(s.charge_type, 'Usage')) not in ('usage', 'unusedreservation', 'unusedsavingsplan',
                    'purchase', 'refund', 'credit', 'tax', 'adjustment', 'roundingadjustment')
                then 'unknown ChargeType ' || s.charge_type
            when apportion_bad_json_object(s.tags) then 'malformed Tags'
        end as quarantine_reason
    from src as s
    cross join lateral (
        select coalesce(case when s.pricing_currency is not null and s.billing_currency is not null
                             and upper(s.pricing_currency) <> upper(s.billing_currency)
                             then apportion_money(s.exchange_rate) end,
                        cast(1 as decimal(38, 12))) as rate
    ) as fx
    left join tag_json as tj on tj.raw is not distinct from s.tags
    left join service_map as sm
        on sm.consumed_service is not distinct from s.consumed_service
        and sm.resource_type_key is not distinct from s.resource_type_key
        and sm.meter_category is not distinct from s.meter_category
        and sm.meter_subcategory is not distinct from s.meter_subcategory
        and sm.meter_name is not distinct from s.meter_name
    left join unit_map as um on um.unit_of_measure is not distinct from s.unit_of_measure
    left join region_map as rm on rm.resource_location is not distinct from s.resource_location
),

focus as (
    select
        t.*,
        coalesce(t.period_start, cast((select billing_month from ctx) || '-01 00:00:00+00' as timestamptz)) as bp_start,
        (lower(coalesce(t.pricing_model, '')) in ('reservation', 'savingsplan')
         or lower(coalesce(t.charge_type, '')) in ('unusedreservation', 'unusedsavingsplan')) as is_commitment,
        case
            when lower(coalesce(t.pricing_model, '')) = 'savingsplan'
                 or lower(coalesce(t.charge_type, '')) = 'unusedsavingsplan' then 'Savings Plan'
            when lower(coalesce(t.pricing_model, '')) = 'reservation'
                 or lower(coalesce(t.charge_type, '')) = 'unusedreservation' then 'Reservation'
        end as commitment_type,
        coalesce(t.quantity, 0) * t.block_size as units,
        -- token meters: named so, or an Azure OpenAI / Foundry Models meter counted in plain unit blocks (`1K`, `1M`;
        -- cached-input meters may lack the word); the same service's hourly meters (provisioned units) stay hours
        (t.meter_name ilike '%token%'
         or ((t.meter_subcategory ilike '%openai%' or t.meter_category ilike 'Foundry Models%')
             and t.distinct_unit = 'Units')) as is_tokens,
        case
            when t._dataset = 'AmortizedCost'
                 and (lower(coalesce(t.charge_type, '')) in ('unusedreservation', 'unusedsavingsplan')
                      or (t.charge_category = 'Usage' and lower(coalesce(t.pricing_model, '')) in ('reservation', 'savingsplan')))
                then cast(0 as decimal(38, 12))
            else t.cost
        end as billed,
        case
            when t.charge_category = 'Usage' and t.service_subcategory = 'Generative AI'
                 and (t.meter_name ilike '%token%'
                      or ((t.meter_subcategory ilike '%openai%' or t.meter_category ilike 'Foundry Models%')
                          and t.distinct_unit = 'Units'))
                then apportion_llm_token_type(t.meter_name)
        end as llm_token_type
    from typed as t
)

select
    f.availability_zone as AvailabilityZone,
    f.billed as BilledCost,
    coalesce(f.billing_account_id, f.billing_profile_id, f.subscription_id, 'unknown') as BillingAccountId,
    f.billing_account_name as BillingAccountName,
    'Billing Account' as BillingAccountType,
    coalesce(f.currency, 'USD') as BillingCurrency,
    f.bp_start + interval 1 month as BillingPeriodEnd,
    f.bp_start as BillingPeriodStart,
    null as CapacityReservationId,
    null as CapacityReservationStatus,
    coalesce(f.charge_category, 'Adjustment') as ChargeCategory,
    null as ChargeClass,
    coalesce(f.product, f.meter_name) as ChargeDescription,
    case
        when f.charge_category = 'Purchase' and lower(coalesce(f.frequency, '')) = 'recurring' then 'Recurring'
        when f.charge_category = 'Purchase' then 'One-Time'
        when lower(coalesce(f.frequency, '')) = 'recurring' then 'Recurring'
        when lower(coalesce(f.frequency, '')) = 'onetime' then 'One-Time'
        when f.charge_category = 'Usage' then 'Usage-Based'
        else 'One-Time'
    end as ChargeFrequency,
    coalesce(f.usage_day, f.bp_start) + interval 1 day as ChargePeriodEnd,
    coalesce(f.usage_day, f.bp_start) as ChargePeriodStart,
    case when f.is_commitment or (f.charge_category = 'Purchase' and f.commitment_type is not null)
         then case f.commitment_type when 'Savings Plan' then 'Spend' when 'Reservation' then 'Usage' end end
        as CommitmentDiscountCategory,
    case when f.commitment_type is not null then f.commitment_id end as CommitmentDiscountId,
    case when f.commitment_type is not null then f.commitment_name end as CommitmentDiscountName,
    null as CommitmentDiscountQuantity,
    case
        when lower(coalesce(f.charge_type, '')) in ('unusedreservation', 'unusedsavingsplan') then 'Unused'
        when f.charge_category = 'Usage' and f.commitment_type is not null and f.commitment_id is not null then 'Used'
    end as CommitmentDiscountStatus,
    case when f.commitment_id is not null then f.commitment_type end as CommitmentDiscountType,
    null as CommitmentDiscountUnit,
    case when f.charge_category = 'Usage' then f.units end as ConsumedQuantity,
    case when f.charge_category = 'Usage' then case when f.is_tokens then 'Tokens' else f.distinct_unit end end
        as ConsumedUnit,
    case
        when f.charge_category = 'Usage' and f.unit_price is not null and f.quantity is not null
             and f.commitment_type is null and f.unit_price * f.quantity >= f.cost
            then cast(f.unit_price * f.quantity as decimal(38, 12))
        else f.cost
    end as ContractedCost,
    cast(f.unit_price / f.block_size as decimal(38, 12)) as ContractedUnitPrice,
    case when f.charge_category = 'Purchase' and f.commitment_type is not null then cast(0 as decimal(38, 12))
         else f.cost end as EffectiveCost,
    f.invoice_id as InvoiceId,
    'Microsoft' as InvoiceIssuerName,
    case
        when f.charge_category = 'Usage' and f.payg_cost is not null and f.payg_cost >= f.cost then f.payg_cost
        when f.charge_category = 'Usage' and f.payg_price is not null and f.quantity is not null
             and f.payg_price * f.quantity >= f.cost
            then cast(f.payg_price * f.quantity as decimal(38, 12))
        else f.cost
    end as ListCost,
    cast(f.payg_price / f.block_size as decimal(38, 12)) as ListUnitPrice,
    case
        when f.charge_category in ('Tax', 'Credit', 'Adjustment') then null
        when lower(coalesce(f.pricing_model, '')) = 'spot' then 'Dynamic'
        when f.charge_category = 'Usage' and f.is_commitment then 'Committed'
        else 'Standard'
    end as PricingCategory,
    coalesce(f.pricing_currency, f.currency, 'USD') as PricingCurrency,
    null as PricingCurrencyContractedUnitPrice,
    null as PricingCurrencyEffectiveCost,
    null as PricingCurrencyListUnitPrice,
    f.units as PricingQuantity,
    case when f.is_tokens then 'Tokens' else f.distinct_unit end as PricingUnit,
    'Microsoft' as ProviderName,
    coalesce(f.publisher_name, 'Microsoft') as PublisherName,
    f.region_id as RegionId,
    f.region_name as RegionName,
    f.resource_id as ResourceId,
    coalesce(f.resource_name, regexp_extract(f.resource_id, '([^/]+)$', 1)) as ResourceName,
    f.resource_type_key as ResourceType,
    coalesce(f.service_category, 'Other') as ServiceCategory,
    coalesce(f.service_name, 'Unknown') as ServiceName,
    coalesce(f.service_subcategory, 'Other (Other)') as ServiceSubcategory,
    f.unmapped_service as x_UnmappedService,
    f.meter_id as SkuId,
    f.meter_name as SkuMeter,
    case
        when f.additional_info ->> 'ServiceType' is not null
            then json_object('InstanceType', f.additional_info ->> 'ServiceType',
                             'CoreCount', try_cast(f.additional_info ->> 'VCPUs' as integer))
    end as SkuPriceDetails,
    f.meter_id as SkuPriceId,
    f.subscription_id as SubAccountId,
    f.subscription_name as SubAccountName,
    'Subscription' as SubAccountType,
    f.tags as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    f._file_idx * 4294967296 + f._row as x_LineId,
    f._file as x_SourceFile,
    f._row as x_SourceRow,
    null as x_ProviderLineItemId,
    coalesce(f.charge_type, 'Usage') as x_LineItemType,
    f.consumed_service as x_ServiceCode,
    f.meter_name as x_UsageType,
    f.meter_subcategory as x_Operation,
    f.publisher_type as x_BillingEntity,
    f.additional_info ->> 'ServiceType' as x_InstanceType,
    null as x_CostCategories,
    not ((f.resource_id is null and f.charge_category in ('Tax', 'Credit', 'Purchase', 'Adjustment'))
         or (f.charge_category = 'Purchase' and f.commitment_type is not null)
         or lower(coalesce(f.charge_type, '')) in ('unusedreservation', 'unusedsavingsplan')) as x_HasResource,
    'invoice' as x_CostBasis,
    f._dataset as x_SourceDataset,
    f.resource_group as x_ResourceGroupName,
    f.block_size as x_PricingBlockSize,
    f.unit_of_measure as x_PricingUnitDescription,
    -- Azure OpenAI / AI Services / Foundry token meters decoded (macros in create_macros.sql); tokens are
    -- ConsumedQuantity, already in single tokens (the `1K` / `1M` block applied)
    case when f.llm_token_type is not null then 'azure' end as x_LlmProvider,
    case when f.llm_token_type is not null then apportion_azure_llm_model(f.meter_name) end as x_ModelId,
    case when f.llm_token_type is not null then f.meter_name end as x_ModelRef,
    f.llm_token_type as x_TokenType,
    case when f.llm_token_type is not null then cast(round(f.units) as bigint) end as x_Tokens,
    f.quarantine_reason as x_QuarantineReason
from focus as f
cross join apportion_lineage(run_context) as lineage;
