-- Native FOCUS (1.0-preview .. 1.3) rows -> apportion line items.
-- Reads:  stg_focus (every FOCUS column as text, _file/_row/_file_idx/_dataset/_multi_month, _row_error: a CSV
--         row with the wrong number of fields, quarantined with a null cost), run_context,
--         ref_currencies, focus_options, focus_subcategory_map, focus_service_categories (the FOCUS 1.2
--         allowed category / subcategory pairs). Macros from sql/macros/cloud_macros.sql.
-- Writes: temp view line_items_checked = contract columns + x_QuarantineReason (null = good row).
-- Version differences: 1.3 ServiceProviderName / HostProviderName stand in for the deprecated
-- PublisherName / ProviderName; a file that lacks EffectiveCost / ListCost / ContractedCost (partial
-- samples) gets BilledCost there, as FOCUS defines them equal when no discount or commitment applies.
-- ServiceCategory / ServiceSubcategory: only FOCUS 1.2 allowed values go out (matched ignoring case). A row
-- without a known category is kept as 'Other' / 'Other (Other)' with its ServiceName in x_UnmappedService;
-- an unknown subcategory becomes 'Other (<category>)' (1.0 files: the provider map first).

create or replace temp view line_items_checked as
with

ctx as (select * from run_context),

src as (
    select
        s.*,
        coalesce(apportion_ts(s.BillingPeriodStart), date_trunc('month', apportion_ts(s.ChargePeriodStart))) as _bp_start
    from stg_focus as s
),

-- A plain file may hold several months: each month's build takes its own rows.
mine as (
    select *
    from src
    where not _multi_month
        or _bp_start is null
        or strftime(_bp_start, '%Y-%m') = (select billing_month from ctx)
),

-- FOCUS rows have no id: the same row (every delivered column equal) in a later file of the delivery is a
-- re-delivered part under another name, counted once. Identical rows inside one file are kept (an export
-- may legitimately repeat a line); the later copies name the file and row they repeat.
row_hashes as (
    select _file, _file_idx, _row, md5(CAST(ROW(*COLUMNS('^[^_]')) AS VARCHAR)) as h
    from mine
),

duplicates as (
    select _file_idx, _row,
        'duplicate row: the same row is in ' || first_file || ':' || first_row || ' (a part delivered twice)'
            as reason
    from (
        select _file_idx, _row,
            first_value(_file) over w as first_file,
            first_value(_row) over w as first_row,
            min(_file_idx) over (partition by h) as first_idx
        from row_hashes
        window w as (partition by h order by _file_idx, _row)
    )
    where _file_idx > first_idx
),

tag_sets as (select distinct Tags as raw from mine),

tag_json as (
    select raw, apportion_tags_from_entries(apportion_tag_entries(apportion_json_object(raw), false)) as tags
    from tag_sets
),

typed as (
    select
        m.*,
        tj.tags as tags_json,
        -- a CSV row with the wrong number of fields: its values may be shifted, so no cost is taken from it
        case when m._row_error is null then apportion_money(m.BilledCost) end as billed,
        coalesce(apportion_money(m.EffectiveCost), apportion_money(m.BilledCost)) as effective,
        coalesce(apportion_money(m.ListCost), apportion_money(m.BilledCost)) as list,
        coalesce(apportion_money(m.ContractedCost), apportion_money(m.BilledCost)) as contracted,
        upper(coalesce(m.BillingCurrency, (select billing_currency from focus_options))) as currency,
        coalesce(m.ProviderName, m.HostProviderName, m.ServiceProviderName, (select provider_name from focus_options))
            as provider,
        coalesce(m.PublisherName, m.ServiceProviderName, m.ProviderName, m.HostProviderName,
                 (select provider_name from focus_options)) as publisher,
        coalesce(m.InvoiceIssuerName, m.HostProviderName, m.ProviderName, m.ServiceProviderName,
                 (select provider_name from focus_options)) as issuer,
        coalesce(m.BillingAccountId, (select billing_account_id from focus_options)) as billing_account,
        case lower(m.ChargeCategory)
            when 'usage' then 'Usage' when 'purchase' then 'Purchase' when 'tax' then 'Tax'
            when 'credit' then 'Credit' when 'adjustment' then 'Adjustment'
        end as charge_category,
        fc.service_category,
        fs.service_subcategory,
        apportion_ts(m.ChargePeriodStart) as cp_start,
        apportion_ts(m.ChargePeriodEnd) as cp_end,
        apportion_ts(m.BillingPeriodEnd) as bp_end,
        case
            when m._row_error is not null then m._row_error
            when dup.reason is not null then dup.reason
            when m.BilledCost is null then 'missing BilledCost'
            when apportion_not_numeric(m.BilledCost) then 'non-numeric BilledCost ' || m.BilledCost
            when apportion_not_numeric(m.EffectiveCost) then 'non-numeric EffectiveCost ' || m.EffectiveCost
            when apportion_not_numeric(m.ListCost) then 'non-numeric ListCost ' || m.ListCost
            when apportion_not_numeric(m.ContractedCost) then 'non-numeric ContractedCost ' || m.ContractedCost
            when apportion_not_numeric(m.PricingQuantity) then 'non-numeric PricingQuantity ' || m.PricingQuantity
            when apportion_not_numeric(m.ConsumedQuantity) then 'non-numeric ConsumedQuantity ' || m.ConsumedQuantity
            -- an amount that would vanish in rounding is shown, never carried as a zero (macros/create_macros.sql)
            when apportion_rounds_to_zero(m.BilledCost)
                then 'tiny BilledCost ' || trim(m.BilledCost) || ': not zero, but 0 at 12 decimal places'
            when apportion_rounds_to_zero(m.EffectiveCost)
                then 'tiny EffectiveCost ' || trim(m.EffectiveCost) || ': not zero, but 0 at 12 decimal places'
            when coalesce(m.BillingCurrency, (select billing_currency from focus_options)) is null
                then 'missing BillingCurrency'
            when upper(coalesce(m.BillingCurrency, (select billing_currency from focus_options)))
                 not in (select currency_code from ref_currencies)
                then 'unknown currency ' || m.BillingCurrency
            when m.ChargeCategory is null then 'missing ChargeCategory'
            when lower(m.ChargeCategory) not in ('usage', 'purchase', 'tax', 'credit', 'adjustment')
                then 'unknown ChargeCategory ' || m.ChargeCategory
            when apportion_bad_ts(m.BillingPeriodStart) then 'unparseable BillingPeriodStart ' || m.BillingPeriodStart
            when apportion_bad_ts(m.BillingPeriodEnd) then 'unparseable BillingPeriodEnd ' || m.BillingPeriodEnd
            when apportion_bad_ts(m.ChargePeriodStart) then 'unparseable ChargePeriodStart ' || m.ChargePeriodStart
            when apportion_bad_ts(m.ChargePeriodEnd) then 'unparseable ChargePeriodEnd ' || m.ChargePeriodEnd
            when m._bp_start is null then 'missing BillingPeriodStart and ChargePeriodStart'
            when strftime(m._bp_start, '%Y-%m') <> (select billing_month from ctx)
                then 'row belongs to billing period ' || strftime(m._bp_start, '%Y-%m')
                     || ', delivered in ' || (select billing_month from ctx)
            when coalesce(m.BillingAccountId, (select billing_account_id from focus_options)) is null
                then 'missing BillingAccountId'
            when coalesce(m.ProviderName, m.HostProviderName, m.ServiceProviderName,
                          (select provider_name from focus_options)) is null
                then 'missing ProviderName (and ServiceProviderName/HostProviderName)'
            when apportion_bad_json_object(m.Tags) then 'malformed Tags'
        end as quarantine_reason
    from mine as m
    left join tag_json as tj on tj.raw is not distinct from m.Tags
    left join duplicates as dup on dup._file_idx = m._file_idx and dup._row = m._row
    left join (select distinct service_category from focus_service_categories) as fc
        on lower(fc.service_category) = lower(trim(m.ServiceCategory))
    left join focus_service_categories as fs
        on fs.service_category = fc.service_category
        and lower(fs.service_subcategory) = lower(trim(m.ServiceSubcategory))
)

select
    t.AvailabilityZone as AvailabilityZone,
    t.billed as BilledCost,
    t.billing_account as BillingAccountId,
    t.BillingAccountName as BillingAccountName,
    t.BillingAccountType as BillingAccountType,
    coalesce(t.currency, 'USD') as BillingCurrency,
    coalesce(t.bp_end, t._bp_start + interval 1 month) as BillingPeriodEnd,
    t._bp_start as BillingPeriodStart,
    t.CapacityReservationId as CapacityReservationId,
    t.CapacityReservationStatus as CapacityReservationStatus,
    coalesce(t.charge_category, 'Adjustment') as ChargeCategory,
    case when lower(t.ChargeClass) = 'correction' then 'Correction' end as ChargeClass,
    t.ChargeDescription as ChargeDescription,
    t.ChargeFrequency as ChargeFrequency,
    coalesce(t.cp_end, t.bp_end, t._bp_start + interval 1 month) as ChargePeriodEnd,
    coalesce(t.cp_start, t._bp_start) as ChargePeriodStart,
    t.CommitmentDiscountCategory as CommitmentDiscountCategory,
    t.CommitmentDiscountId as CommitmentDiscountId,
    t.CommitmentDiscountName as CommitmentDiscountName,
    apportion_money(t.CommitmentDiscountQuantity) as CommitmentDiscountQuantity,
    t.CommitmentDiscountStatus as CommitmentDiscountStatus,
    t.CommitmentDiscountType as CommitmentDiscountType,
    t.CommitmentDiscountUnit as CommitmentDiscountUnit,
    apportion_money(t.ConsumedQuantity) as ConsumedQuantity,
    t.ConsumedUnit as ConsumedUnit,
    t.contracted as ContractedCost,
    apportion_money(t.ContractedUnitPrice) as ContractedUnitPrice,
    t.effective as EffectiveCost,
    t.InvoiceId as InvoiceId,
    coalesce(t.issuer, 'Unknown') as InvoiceIssuerName,
    t.list as ListCost,
    apportion_money(t.ListUnitPrice) as ListUnitPrice,
    t.PricingCategory as PricingCategory,
    coalesce(t.PricingCurrency, t.currency) as PricingCurrency,
    apportion_money(t.PricingCurrencyContractedUnitPrice) as PricingCurrencyContractedUnitPrice,
    apportion_money(t.PricingCurrencyEffectiveCost) as PricingCurrencyEffectiveCost,
    apportion_money(t.PricingCurrencyListUnitPrice) as PricingCurrencyListUnitPrice,
    apportion_money(t.PricingQuantity) as PricingQuantity,
    t.PricingUnit as PricingUnit,
    coalesce(t.provider, 'Unknown') as ProviderName,
    coalesce(t.publisher, 'Unknown') as PublisherName,
    t.RegionId as RegionId,
    t.RegionName as RegionName,
    t.ResourceId as ResourceId,
    t.ResourceName as ResourceName,
    t.ResourceType as ResourceType,
    coalesce(t.service_category, 'Other') as ServiceCategory,
    coalesce(t.ServiceName, t.SkuMeter, t.ChargeDescription, 'Unknown') as ServiceName,
    coalesce(t.service_subcategory,
             (select min(m.service_subcategory) from focus_subcategory_map as m
              join focus_service_categories as a
                  on a.service_category = t.service_category and a.service_subcategory = m.service_subcategory
              where m.service_name = t.ServiceName),
             'Other (' || coalesce(t.service_category, 'Other') || ')') as ServiceSubcategory,
    t.SkuId as SkuId,
    t.SkuMeter as SkuMeter,
    apportion_json_object(t.SkuPriceDetails) as SkuPriceDetails,
    t.SkuPriceId as SkuPriceId,
    t.SubAccountId as SubAccountId,
    t.SubAccountName as SubAccountName,
    t.SubAccountType as SubAccountType,
    t.tags_json as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    t._file_idx * 4294967296 + t._row as x_LineId,
    t._file as x_SourceFile,
    t._row as x_SourceRow,
    t.x_ProviderLineItemId as x_ProviderLineItemId,
    t.ChargeCategory as x_LineItemType,
    t.x_ServiceCode as x_ServiceCode,
    coalesce(t.x_UsageType, t.SkuMeter) as x_UsageType,
    t.x_Operation as x_Operation,
    t.provider as x_BillingEntity,
    apportion_json_object(t.SkuPriceDetails) ->> 'InstanceType' as x_InstanceType,
    apportion_json_object(t.x_CostCategories) as x_CostCategories,
    not (t.ResourceId is null and t.charge_category in ('Tax', 'Credit', 'Purchase', 'Adjustment')) as x_HasResource,
    'invoice' as x_CostBasis,
    t._dataset as x_SourceDataset,
    t.x_ResourceGroupName as x_ResourceGroupName,
    apportion_money(t.x_PricingBlockSize) as x_PricingBlockSize,
    case when t.service_category is null
         then coalesce(t.ServiceName, t.SkuMeter, t.ChargeDescription, 'Unknown') end as x_UnmappedService,
    t.x_PricingUnitDescription as x_PricingUnitDescription,
    t.quarantine_reason as x_QuarantineReason
from typed as t
cross join apportion_lineage(run_context) as lineage;
