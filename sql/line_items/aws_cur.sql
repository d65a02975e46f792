-- AWS CUR (2.0 and legacy, after staging to canonical snake_case names) -> FOCUS 1.2 line items.
-- Reads:  stg_aws_cur (one row per raw row), run_context (one row), ref_aws_services
--         (models/reference/aws_cur/services.csv), ref_currencies, aws_cur_seen + aws_cur_seen_files
--         (identities of the month's earlier files, see AwsCurConnector._remember_earlier_files).
-- Writes: temp table aws_cur_duplicates (the repeated rows of the file, with the reason), temp views
--         aws_cur_checked (raw rows + quarantine_reason), line_items_rejected (the quarantined rows) and
--         line_items_checked = contract columns + x_QuarantineReason (null = good row).

-- A line item is (identity_line_item_id, identity_time_interval) within the month. The same identity
-- again — a part re-delivered under another file name, or a row repeated in one file — is counted
-- once: the first occurrence (lowest file, then row) stays, every later one is quarantined naming the
-- file and row it repeats. Earlier files of the month are in aws_cur_seen (the month is built one file
-- at a time). Rows without an id (legacy rows may lack one) are never deduplicated.
-- A table of the (few) repeated rows, computed once per file: the view below is read twice (line items,
-- quarantine), and a window over every row of the file would be sorted twice. Only identities that
-- repeat (a hash aggregate over the 128-bit identity hash) or that an earlier file holds are ranked.
create or replace temp table aws_cur_duplicates as
with

ids as not materialized (
    select
        _file,
        _file_idx,
        _row,
        identity_line_item_id,
        identity_time_interval,
        md5_number(identity_line_item_id || chr(0) || coalesce(identity_time_interval, '')) as k
    from stg_aws_cur
    where identity_line_item_id is not null
),

repeated as (
    select k
    from ids
    group by k
    having count(*) > 1
),

candidates as (
    select
        i.*,
        s._file_idx as seen_file_idx,
        s._row as seen_row
    from ids as i
    left join aws_cur_seen as s on s.k = i.k
    where s.k is not null or i.k in (select k from repeated)
),

ranked as (
    select
        c.*,
        row_number() over w as n,
        first_value(c._file) over w as first_file,
        first_value(c._row) over w as first_row
    from candidates as c
    window w as (partition by c.identity_line_item_id, c.identity_time_interval order by c._file_idx, c._row)
)

select
    r._file_idx,
    r._row,
    'duplicate line item ' || r.identity_line_item_id || ' ' || coalesce(r.identity_time_interval, '(no interval)')
        || ': also in ' || coalesce(sf._file, r.first_file) || ':' || coalesce(r.seen_row, r.first_row) as reason
from ranked as r
left join aws_cur_seen_files as sf on sf._file_idx = r.seen_file_idx
where r.n > 1 or r.seen_file_idx is not null;

-- Every raw row with its quarantine reason (null = good row), first problem wins. A bad row never becomes a
-- zero. A view of its own so that the quarantine pass (line_items_rejected below) reads only what decides
-- the reasons, without the service, tag and FOCUS mapping of line_items_checked.
create or replace temp view aws_cur_checked as
select
    src.*,
    case
        when dup.reason is not null then dup.reason
        when src._bad is not null then src._bad
        when src.line_item_unblended_cost is null then 'missing line_item_unblended_cost'
        when src.line_item_currency_code is null then 'missing line_item_currency_code'
        when cur.currency_code is null then 'unknown currency ' || src.line_item_currency_code
        when src.bill_billing_period_start_date is not null
             and src.bill_billing_period_start_date <> ctx.period_start
            then 'row belongs to billing period ' || strftime(src.bill_billing_period_start_date, '%Y-%m')
                 || ', delivered in ' || ctx.billing_month
        when src.resource_tags is null and nullif(trim(src.resource_tags_raw), '') is not null
            then 'malformed resource_tags JSON'
    end as quarantine_reason
from stg_aws_cur as src
cross join (select billing_month, cast(billing_month || '-01 00:00:00+00' as timestamptz) as period_start from run_context) as ctx
left join ref_currencies as cur on cur.currency_code = upper(src.line_item_currency_code)
left join aws_cur_duplicates as dup on dup._file_idx = src._file_idx and dup._row = src._row;

-- The quarantined rows (one per raw row: a quarantined fee yields no unused-commitment line), in the columns
-- of the quarantine file; the same rows line_items_checked marks with x_QuarantineReason.
create or replace temp view line_items_rejected as
select
    lineage.x_SourceName,
    lineage.x_BillingMonth,
    lineage.x_DeliveryId,
    c._file as x_SourceFile,
    c._row as x_SourceRow,
    c.quarantine_reason as x_QuarantineReason,
    c.line_item_unblended_cost as BilledCost
from aws_cur_checked as c
cross join apportion_lineage(run_context) as lineage
where c.quarantine_reason is not null;

create or replace temp view line_items_checked as
with

ctx as (select * from run_context),

-- not materialised: the raw month is scanned once per use instead of held in memory
src as not materialized (select * from stg_aws_cur),

checked as not materialized (select * from aws_cur_checked),

-- Service names and categories are decided once per distinct service, not once per row.
services as (
    select distinct
        coalesce(line_item_product_code, '') as line_item_product_code,
        coalesce(product_product_name, '') as product_product_name,
        coalesce(product_servicecode, '') as product_servicecode,
        coalesce(bill_billing_entity, '') as bill_billing_entity
    from src
),

-- A service is looked up by its product code (product_servicecode when the code is blank) in our
-- table. Not in the table: a third-party model sold through AWS Marketplace for Bedrock (its code is
-- an opaque listing id, its product name says "Bedrock") is Generative AI under its own name; anything
-- else keeps a visible fallback (Other, the provider's own name, x_UnmappedService), never dropped.
service_map as (
    select
        s.line_item_product_code,
        s.product_product_name,
        s.product_servicecode,
        s.bill_billing_entity,
        case
            when r.product_code is not null then r.service_category
            when s.product_product_name ilike '%bedrock%' then 'AI and Machine Learning'
            else 'Other'
        end as ServiceCategory,
        case
            when r.product_code is not null then r.service_subcategory
            when s.product_product_name ilike '%bedrock%' then 'Generative AI'
            else 'Other (Other)'
        end as ServiceSubcategory,
        coalesce(r.service_name, nullif(s.product_product_name, ''), nullif(s.line_item_product_code, ''),
                 nullif(s.product_servicecode, ''), 'Unknown') as ServiceName,
        case
            when r.product_code is null and not s.product_product_name ilike '%bedrock%'
                then coalesce(nullif(s.product_product_name, ''), nullif(s.line_item_product_code, ''),
                              nullif(s.product_servicecode, ''), 'Unknown')
        end as UnmappedService
    from services as s
    -- one row per product code even if the table were to repeat one: a lookup must never duplicate cost
    left join (select * from ref_aws_services qualify row_number() over (partition by product_code order by service_name) = 1) as r
        on r.product_code = coalesce(nullif(s.line_item_product_code, ''), s.product_servicecode)
),

-- Tags repeat for every hour and day of a resource: normalise each distinct tag map once.
tag_sets as (
    select distinct resource_tags as m
    from src
),

tag_json as (
    select m, apportion_aws_tags_json(m) as tags
    from tag_sets
),

cost_category_sets as (
    select distinct cost_category as m
    from src
),

cost_category_json as (
    select m, apportion_aws_tags_json(m) as cost_categories
    from cost_category_sets
),

typed as (
    select
        src._file,
        src._row,
        src._file_idx,
        src.identity_line_item_id as line_item_id,
        src.bill_invoice_id as invoice_id,
        coalesce(src.bill_billing_entity, 'AWS') as billing_entity,
        src.bill_payer_account_id as payer_account_id,
        src.bill_payer_account_name as payer_account_name,
        src.bill_billing_period_start_date as period_start,
        src.bill_billing_period_end_date as period_end,
        src.bill_invoicing_entity as invoicing_entity,
        src.line_item_usage_account_id as usage_account_id,
        src.line_item_usage_account_name as usage_account_name,
        src.line_item_line_item_type as line_item_type,
        src.line_item_usage_start_date as usage_start,
        src.line_item_usage_end_date as usage_end,
        src.line_item_product_code as product_code,
        src.line_item_usage_type as usage_type,
        src.line_item_operation as operation,
        src.line_item_availability_zone as availability_zone,
        src.line_item_resource_id as resource_id,
        src.line_item_usage_amount as usage_amount,
        upper(src.line_item_currency_code) as currency,
        src.line_item_unblended_rate as unblended_rate,
        src.line_item_unblended_cost as unblended_cost,
        src.line_item_net_unblended_cost as net_unblended_cost,
        src.line_item_line_item_description as description,
        src.line_item_legal_entity as legal_entity,
        src.pricing_public_on_demand_cost as public_on_demand_cost,
        src.pricing_public_on_demand_rate as public_on_demand_rate,
        -- AWS unit spellings -> FOCUS UnitFormat (`GB-Mo` is not a FOCUS time unit)
        case src.pricing_unit
            when 'Hrs' then 'Hours' when 'GB-Mo' then 'GB-Months' when 'tokens' then 'Tokens'
            else src.pricing_unit
        end as pricing_unit,
        src.pricing_term,
        src.product_product_name as product_name,
        coalesce(src.product_region_code, src.product_region) as region_id,
        src.product_location as region_name,
        src.product_instance_type as instance_type,
        src.product_sku as sku,
        try_cast(src.product_gpu as integer) as gpu_count,
        src.reservation_reservation_a_r_n as reservation_arn,
        src.reservation_effective_cost as ri_effective_cost,
        src.reservation_unused_amortized_upfront_fee_for_billing_period as ri_unused_upfront,
        src.reservation_unused_recurring_fee as ri_unused_recurring,
        src.savings_plan_savings_plan_a_r_n as savings_plan_arn,
        src.savings_plan_savings_plan_effective_cost as sp_effective_cost,
        src.savings_plan_total_commitment_to_date as sp_commitment_to_date,
        src.savings_plan_used_commitment as sp_used_commitment,
        tj.tags,
        cj.cost_categories,
        sm.ServiceCategory as service_category,
        sm.ServiceSubcategory as service_subcategory,
        sm.ServiceName as service_name,
        sm.UnmappedService as unmapped_service,
        src.quarantine_reason
    from checked as src
    left join service_map as sm
        on sm.line_item_product_code = coalesce(src.line_item_product_code, '')
        and sm.product_product_name = coalesce(src.product_product_name, '')
        and sm.product_servicecode = coalesce(src.product_servicecode, '')
        and sm.bill_billing_entity = coalesce(src.bill_billing_entity, '')
    left join tag_json as tj on tj.m is not distinct from src.resource_tags
    left join cost_category_json as cj on cj.m is not distinct from src.cost_category
),

focus as not materialized (
    select
        t.*,
        case
            when t.line_item_type in ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', 'SavingsPlanNegation')
                then 'Usage'
            when t.line_item_type in ('Fee', 'RIFee', 'SavingsPlanUpfrontFee', 'SavingsPlanRecurringFee') then 'Purchase'
            when t.line_item_type = 'Tax' then 'Tax'
            when t.line_item_type in ('Credit', 'Refund', 'BundledDiscount', 'Discount', 'EdpDiscount',
                                      'PrivateRateDiscount', 'DistributorDiscount') then 'Credit'
            else 'Adjustment'
        end as charge_category,
        -- AWS amortisation (the CUR query library's CASE): commitments spread onto the usage they cover.
        case t.line_item_type
            when 'SavingsPlanCoveredUsage' then coalesce(t.sp_effective_cost, 0)
            when 'SavingsPlanRecurringFee'
                then coalesce(t.sp_commitment_to_date, 0) - coalesce(t.sp_used_commitment, 0)
            when 'SavingsPlanNegation' then 0
            when 'SavingsPlanUpfrontFee' then 0
            when 'DiscountedUsage' then coalesce(t.ri_effective_cost, 0)
            when 'RIFee' then coalesce(t.ri_unused_upfront, 0) + coalesce(t.ri_unused_recurring, 0)
            else case when t.line_item_type = 'Fee' and t.reservation_arn is not null then 0 else t.unblended_cost end
        end as effective_cost,
        coalesce(t.period_start, cast((select billing_month from ctx) || '-01 00:00:00+00' as timestamptz)) as bp_start,
        -- a Generative AI usage line whose usage type names a token direction (Bedrock, Marketplace models)
        case
            when t.service_subcategory = 'Generative AI' and t.line_item_type not in ('Tax', 'Credit', 'Refund')
                 and regexp_matches(coalesce(t.usage_type, ''), '(?i)token')
                then apportion_llm_token_type(t.usage_type)
        end as llm_token_type
    from typed as t
),

-- not materialised: a month of line items must stream, not sit in memory
mapped as not materialized (
select
    f.availability_zone as AvailabilityZone,
    f.unblended_cost as BilledCost,
    coalesce(f.payer_account_id, f.usage_account_id, 'unknown') as BillingAccountId,
    f.payer_account_name as BillingAccountName,
    'Payer Account' as BillingAccountType,
    coalesce(f.currency, 'USD') as BillingCurrency,
    coalesce(f.period_end, f.bp_start + interval 1 month) as BillingPeriodEnd,
    f.bp_start as BillingPeriodStart,
    null as CapacityReservationId,
    null as CapacityReservationStatus,
    f.charge_category as ChargeCategory,
    null as ChargeClass,
    f.description as ChargeDescription,
    case
        when f.charge_category = 'Usage' then 'Usage-Based'
        when f.line_item_type in ('RIFee', 'SavingsPlanRecurringFee') then 'Recurring'
        when f.charge_category = 'Purchase' then 'One-Time'
        when f.charge_category = 'Tax' then 'Recurring'
        else 'One-Time'
    end as ChargeFrequency,
    coalesce(f.usage_end, f.period_end, f.bp_start + interval 1 month) as ChargePeriodEnd,
    coalesce(f.usage_start, f.bp_start) as ChargePeriodStart,
    case when f.savings_plan_arn is not null then 'Spend' when f.reservation_arn is not null then 'Usage' end
        as CommitmentDiscountCategory,
    coalesce(f.savings_plan_arn, f.reservation_arn) as CommitmentDiscountId,
    null as CommitmentDiscountName,
    null as CommitmentDiscountQuantity,
    case
        when f.line_item_type in ('SavingsPlanCoveredUsage', 'DiscountedUsage') then 'Used'
        when f.line_item_type in ('SavingsPlanRecurringFee', 'RIFee') and f.effective_cost <> 0 then 'Unused'
    end as CommitmentDiscountStatus,
    case when f.savings_plan_arn is not null then 'Savings Plan' when f.reservation_arn is not null then 'Reservation' end
        as CommitmentDiscountType,
    null as CommitmentDiscountUnit,
    -- a SavingsPlanNegation repeats the covered row's usage amount: counting it again would double usage
    case when f.charge_category = 'Usage' and f.line_item_type <> 'SavingsPlanNegation' then f.usage_amount end
        as ConsumedQuantity,
    case when f.charge_category = 'Usage' then f.pricing_unit end as ConsumedUnit,
    coalesce(f.net_unblended_cost, f.unblended_cost) as ContractedCost,
    f.unblended_rate as ContractedUnitPrice,
    f.effective_cost as EffectiveCost,
    f.invoice_id as InvoiceId,
    -- AWS invoices Marketplace charges too; the legal invoicing entity stays in x_InvoicingEntity
    'AWS' as InvoiceIssuerName,
    case
        when f.line_item_type = 'SavingsPlanNegation' then 0
        when f.charge_category in ('Usage') then coalesce(f.public_on_demand_cost, f.unblended_cost)
        else f.unblended_cost
    end as ListCost,
    f.public_on_demand_rate as ListUnitPrice,
    case
        when f.charge_category in ('Tax', 'Credit', 'Adjustment') then null
        when f.line_item_type in ('DiscountedUsage', 'SavingsPlanCoveredUsage', 'SavingsPlanNegation') then 'Committed'
        when f.pricing_term = 'Spot' or f.usage_type like '%SpotUsage%' then 'Dynamic'
        else 'Standard'
    end as PricingCategory,
    coalesce(f.currency, 'USD') as PricingCurrency,
    f.unblended_rate as PricingCurrencyContractedUnitPrice,
    f.effective_cost as PricingCurrencyEffectiveCost,
    f.public_on_demand_rate as PricingCurrencyListUnitPrice,
    case when f.charge_category in ('Usage', 'Purchase') then coalesce(f.usage_amount, 0) end as PricingQuantity,
    case when f.charge_category in ('Usage', 'Purchase') then coalesce(f.pricing_unit, 'Units') end as PricingUnit,
    'AWS' as ProviderName,
    case when f.billing_entity = 'AWS Marketplace' then coalesce(f.legal_entity, 'AWS Marketplace') else 'AWS' end
        as PublisherName,
    f.region_id as RegionId,
    f.region_name as RegionName,
    f.resource_id as ResourceId,
    f.resource_id as ResourceName,
    null as ResourceType,
    f.service_category as ServiceCategory,
    f.service_name as ServiceName,
    f.service_subcategory as ServiceSubcategory,
    f.sku as SkuId,
    f.usage_type as SkuMeter,
    case
        when f.instance_type is not null
            then json_object('InstanceType', f.instance_type, 'GpuCount', f.gpu_count)
    end as SkuPriceDetails,
    f.sku as SkuPriceId,
    f.usage_account_id as SubAccountId,
    f.usage_account_name as SubAccountName,
    'Linked Account' as SubAccountType,
    f.tags as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    f._file_idx * 4294967296 + f._row as x_LineId,
    f._file as x_SourceFile,
    f._row as x_SourceRow,
    f.line_item_id as x_ProviderLineItemId,
    f.line_item_type as x_LineItemType,
    f.product_code as x_ServiceCode,
    f.usage_type as x_UsageType,
    f.operation as x_Operation,
    f.billing_entity as x_BillingEntity,
    f.instance_type as x_InstanceType,
    f.cost_categories as x_CostCategories,
    not (f.resource_id is null and f.charge_category in ('Tax', 'Credit', 'Purchase', 'Adjustment')) as x_HasResource,
    'invoice' as x_CostBasis,
    f.invoicing_entity as x_InvoicingEntity,
    -- Bedrock tokens as the bill states them (macros in create_macros.sql): provider, model, direction, tokens
    case when f.llm_token_type is not null then 'aws' end as x_LlmProvider,
    case when f.llm_token_type is not null then apportion_bedrock_model(f.usage_type, f.product_name) end as x_ModelId,
    case when f.llm_token_type is not null then f.product_name end as x_ModelRef,
    f.llm_token_type as x_TokenType,
    case when f.llm_token_type is not null and f.line_item_type <> 'SavingsPlanNegation'
        then cast(round(f.usage_amount * apportion_unit_block(f.pricing_unit)) as bigint) end as x_Tokens,
    f.unmapped_service as x_UnmappedService,
    f.quarantine_reason as x_QuarantineReason
from focus as f
cross join apportion_lineage(run_context) as lineage
),

-- FOCUS keeps a commitment's purchase at EffectiveCost 0; the unused part of a Savings Plan or RI fee
-- is a Usage row of its own (CommitmentDiscountStatus Unused). One CUR fee row becomes two line items
-- (x_LineId + 2^31 for the second); BilledCost and EffectiveCost totals are unchanged. A quarantined
-- fee (a duplicate among them) is quarantined once, as its CUR row: it yields no unused line.
-- One pass: each row is unnested into itself plus, for such a fee, its unused line (a UNION of `mapped`
-- with itself would make DuckDB buffer the whole file to read it twice).
expanded as not materialized (
    select
        *,
        (x_LineItemType in ('SavingsPlanRecurringFee', 'RIFee') and EffectiveCost <> 0) as _fee,
        unnest(case
            when x_LineItemType in ('SavingsPlanRecurringFee', 'RIFee') and EffectiveCost <> 0
                 and x_QuarantineReason is null then [false, true]
            else [false]
        end) as _unused
    from mapped
)

select * exclude (_fee, _unused) replace (
    case when _unused then x_LineId + 2147483648 else x_LineId end as x_LineId,
    case when _unused then 'Usage' else ChargeCategory end as ChargeCategory,
    case when _unused then 'Usage-Based' else ChargeFrequency end as ChargeFrequency,
    case when _unused then 'Unused commitment: ' || coalesce(ChargeDescription, x_LineItemType) else ChargeDescription end
        as ChargeDescription,
    case when _unused then cast(0 as decimal(38, 12)) else BilledCost end as BilledCost,
    case when _unused then cast(0 as decimal(38, 12)) else ContractedCost end as ContractedCost,
    case when _unused then cast(0 as decimal(38, 12)) else ListCost end as ListCost,
    case when _unused then EffectiveCost when _fee then 0 else EffectiveCost end as EffectiveCost,
    case when _unused then 'Unused' when _fee then null else CommitmentDiscountStatus end as CommitmentDiscountStatus,
    case when _unused then PricingCurrencyEffectiveCost when _fee then 0 else PricingCurrencyEffectiveCost end
        as PricingCurrencyEffectiveCost,
    case when _unused then 'Committed' else PricingCategory end as PricingCategory,
    case when _unused then cast(0 as decimal(38, 12)) else PricingQuantity end as PricingQuantity,
    case when _unused then coalesce(PricingUnit, 'Units') else PricingUnit end as PricingUnit,
    case when _unused then false else x_HasResource end as x_HasResource
)
from expanded;
