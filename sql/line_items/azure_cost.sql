-- Azure Cost Management ActualCost / AmortizedCost rows (EA, MCA, v1 column sets) -> apportion line items.
-- Reads:  stg_azure_cost (canonical snake_case text columns + _file/_row/_file_idx/_dataset), run_context,
--         ref_azure_services (finops-toolkit Services.csv), ref_azure_pricing_units (PricingUnits.csv),
--         ref_azure_service_category (FOCUS converters' map), ref_azure_regions (Regions.csv), ref_currencies.
-- Writes: temp view line_items_checked = contract columns + x_QuarantineReason (null = good row).
--
-- Costs: ActualCost -> BilledCost = EffectiveCost = cost, except commitment (reservation / savings plan)
-- purchases, whose EffectiveCost is 0 as FOCUS requires (their amortisation is only in AmortizedCost or
-- FocusCost exports: use one of those when effective cost matters).
-- AmortizedCost -> EffectiveCost = cost; BilledCost = 0 on commitment-covered usage and unused
-- commitment (that money was billed by the purchase, which the amortized dataset spreads), cost elsewhere.
-- Units: UnitOfMeasure `10K` / `1M` / `1 Hour` is a block of units; quantities are multiplied out
-- to single units (PricingUnits.csv gives the block size and the unit) and unit prices divided.

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
    select distinct lower(consumed_service) as consumed_service, resource_type_key, meter_category, meter_subcategory,
        meter_name
    from src
),

service_map as (
    select
        s.*,
        coalesce(exact.ServiceName, by_type.ServiceName, s.meter_category, s.consumed_service, 'Unknown') as service_name,
        coalesce(exact.ServiceCategory, by_type.ServiceCategory, cat.ServiceCategory, 'Other') as service_category,
        case
            when s.meter_subcategory ilike '%openai%' or s.meter_category ilike '%openai%'
                 or s.meter_category ilike 'Foundry Models%' or s.meter_name ilike '%token%'
                then 'Generative AI'
            else coalesce(exact.ServiceSubcategory, by_type.ServiceSubcategory)
        end as service_subcategory
    from services as s
    left join ref_azure_services as exact
        on lower(exact.ConsumedService) = s.consumed_service and lower(exact.ResourceType) = s.resource_type_key
    left join lateral (
        select r.ServiceName, r.ServiceCategory, r.ServiceSubcategory
        from ref_azure_services as r
        where lower(r.ResourceType) = s.resource_type_key
        order by r.ConsumedService
        limit 1
    ) as by_type on true
    left join ref_azure_service_category as cat on lower(cat.ConsumedService) = s.consumed_service
),

units as (
    select distinct unit_of_measure from src
),

unit_map as (
    select
        u.unit_of_measure,
        coalesce(apportion_money(pu.PricingBlockSize), 1) as block_size,
        coalesce(pu.DistinctUnits, u.unit_of_measure) as distinct_unit
    from units as u
    left join lateral (
        select p.PricingBlockSize, p.DistinctUnits
        from ref_azure_pricing_units as p
        where p.UnitOfMeasure = u.unit_of_measure or trim(p.UnitOfMeasure) = trim(u.unit_of_measure)
        order by (p.UnitOfMeasure = u.unit_of_measure) desc
        limit 1
    ) as pu on true
),

regions as (
    select distinct resource_location from src
),

region_map as (
    select r.resource_location, g.RegionId, g.RegionName
    from regions as r
    left join lateral (
        select x.RegionId, x.RegionName
        from ref_azure_regions as x
        where x.OriginalValue = lower(trim(r.resource_location))
        limit 1
    ) as g on true
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
        apportion_money(s.unit_price) as unit_price,
        apportion_money(s.payg_price) as payg_price,
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
        sm.service_name, sm.service_category, sm.service_subcategory,
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
            when apportion_not_numeric(s.quantity) then 'non-numeric Quantity ' || s.quantity
            when apportion_not_numeric(s.payg_price) then 'non-numeric PayGPrice ' || s.payg_price
            when apportion_not_numeric(s.unit_price) then 'non-numeric UnitPrice ' || s.unit_price
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
    left join tag_json as tj on tj.raw is not distinct from s.tags
    left join service_map as sm
        on sm.consumed_service is not distinct from lower(s.consumed_service)
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
        (t.meter_name ilike '%token%' or t.meter_subcategory ilike '%openai%') as is_tokens,
        case
            when t._dataset = 'AmortizedCost'
                 and (lower(coalesce(t.charge_type, '')) in ('unusedreservation', 'unusedsavingsplan')
                      or (t.charge_category = 'Usage' and lower(coalesce(t.pricing_model, '')) in ('reservation', 'savingsplan')))
                then cast(0 as decimal(38, 12))
            else t.cost
        end as billed
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
    coalesce(f.service_subcategory, case when coalesce(f.service_category, 'Other') = 'Other' then 'Other'
             else 'Other (' || f.service_category || ')' end) as ServiceSubcategory,
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
    ctx.source_name as x_SourceName,
    ctx.source_kind as x_SourceKind,
    ctx.billing_month as x_BillingMonth,
    f._file_idx * 4294967296 + f._row as x_LineId,
    ctx.delivery_id as x_DeliveryId,
    ctx.ingested_at as x_IngestedAt,
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
    f.quarantine_reason as x_QuarantineReason
from focus as f
cross join ctx;
