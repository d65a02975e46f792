-- Google Cloud Billing export rows (standard and detailed) -> apportion line items.
-- Reads:  stg_gcp_billing (_file, _file_idx, _row, row_json = one export row as BigQuery's JSON), run_context,
--         ref_gcp_services (models/reference/gcp_billing/services.csv), ref_currencies,
--         gcp_catalog_skus and gcp_billing_accounts (Cloud Billing Catalog / account names when
--         `catalog: true`; empty otherwise).
--         Macros: cloud_macros.sql.
-- Writes: temp view line_items_checked = contract columns + x_QuarantineReason (null = good row).
--
-- Money: ContractedCost = cost (after negotiated prices); credits[] (negative) are kept in x_Credits and
-- netted: BilledCost = EffectiveCost = cost + sum(credits.amount), which is what the invoice charges.
-- ListCost = cost_at_list when exported, else (usage rows) the catalog's single-tier list price x usage in
-- pricing units (same currency only), else cost. Tags = labels, then tags, then project.labels
-- (the first wins on a key clash: the resource's own label beats the project's), then system_labels
-- (already provider-prefixed: compute.googleapis.com/machine_spec).

create or replace temp view line_items_checked as
with

ctx as (select * from run_context),

parsed as (
    select _file, _file_idx, _row, try_cast(row_json as json) as j, row_json
    from stg_gcp_billing
),

src as (
    select
        p.*,
        p.j ->> 'billing_account_id' as billing_account_id,
        p.j -> 'service' ->> 'id' as service_id,
        p.j -> 'service' ->> 'description' as service_description,
        p.j -> 'sku' ->> 'id' as sku_id,
        p.j -> 'sku' ->> 'description' as sku_description,
        p.j ->> 'usage_start_time' as usage_start_raw,
        p.j ->> 'usage_end_time' as usage_end_raw,
        p.j -> 'project' ->> 'id' as project_id,
        p.j -> 'project' ->> 'name' as project_name,
        p.j -> 'location' ->> 'region' as region,
        p.j -> 'location' ->> 'zone' as zone,
        p.j -> 'location' ->> 'location' as location,
        p.j ->> 'cost' as cost_raw,
        p.j ->> 'cost_at_list' as cost_at_list_raw,
        p.j ->> 'currency' as currency_raw,
        p.j -> 'usage' ->> 'amount' as usage_amount_raw,
        p.j -> 'usage' ->> 'unit' as usage_unit,
        p.j -> 'usage' ->> 'amount_in_pricing_units' as pricing_amount_raw,
        p.j -> 'usage' ->> 'pricing_unit' as pricing_unit,
        p.j -> 'invoice' ->> 'month' as invoice_month,
        lower(p.j ->> 'cost_type') as cost_type,
        p.j -> 'resource' ->> 'name' as resource_name,
        p.j ->> 'seller_name' as seller_name,
        p.j -> 'credits' as credits_json,
        p.j -> 'labels' as labels_json,
        p.j -> 'project' -> 'labels' as project_labels_json,
        p.j -> 'system_labels' as system_labels_json,
        p.j -> 'tags' as tags_json,
        json_exists(p.j, '$.resource') as is_detailed
    from parsed as p
),

-- Only this month's invoice rows: a copied export file may hold several months.
mine as (
    select *
    from src
    where invoice_month is null
        or not regexp_full_match(invoice_month, '\d{6}')
        or substr(invoice_month, 1, 4) || '-' || substr(invoice_month, 5, 2) = (select billing_month from ctx)
),

label_sets as (
    select distinct labels_json, tags_json, project_labels_json, system_labels_json from mine
),

label_json as (
    select
        l.*,
        apportion_tags_from_entries(list_concat(
            coalesce(list_transform(
                list_filter(try_cast(from_json(l.labels_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[]),
                            lambda e: e.key is not null and coalesce(e.value, '') <> ''),
                lambda e: struct_pack(key := e.key, value := e.value)), []),
            coalesce(list_transform(
                list_filter(try_cast(from_json(l.tags_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[]),
                            lambda e: e.key is not null and coalesce(e.value, '') <> ''),
                lambda e: struct_pack(key := e.key, value := e.value)), []),
            coalesce(list_transform(
                list_filter(try_cast(from_json(l.project_labels_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[]),
                            lambda e: e.key is not null and coalesce(e.value, '') <> ''),
                lambda e: struct_pack(key := e.key, value := e.value)), []),
            coalesce(list_transform(
                list_filter(try_cast(from_json(l.system_labels_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[]),
                            lambda e: e.key is not null and coalesce(e.value, '') <> ''),
                lambda e: struct_pack(key := e.key, value := e.value)), [])
        )) as tags,
        (select min(e.value) from (select unnest(try_cast(from_json(l.system_labels_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[])) as e)
         where e.key = 'compute.googleapis.com/machine_spec') as machine_spec,
        (select min(e.value) from (select unnest(try_cast(from_json(l.system_labels_json, '[{"key":"VARCHAR","value":"VARCHAR"}]') as struct(key varchar, value varchar)[])) as e)
         where e.key = 'compute.googleapis.com/cores') as cores,
        case
            when l.labels_json is not null and json_type(l.labels_json) not in ('ARRAY', 'NULL') then 'malformed labels'
            when l.project_labels_json is not null and json_type(l.project_labels_json) not in ('ARRAY', 'NULL')
                then 'malformed project.labels'
            when l.system_labels_json is not null and json_type(l.system_labels_json) not in ('ARRAY', 'NULL')
                then 'malformed system_labels'
            when l.tags_json is not null and json_type(l.tags_json) not in ('ARRAY', 'NULL') then 'malformed tags'
        end as label_problem
    from label_sets as l
),

-- Services: service.description looked up in our table (models/reference/gcp_billing/services.csv), one
-- category and subcategory per service (FOCUS: a ServiceName SHOULD have one ServiceSubcategory, so a
-- Vertex AI training SKU is not told apart from a Gemini token SKU here). A row without a service is
-- named after its cost_type (tax -> 'Tax', which the table maps; rounding error, adjustment: Other).
-- A named service missing from the table keeps a visible fallback: Other / 'Other (Other)', the
-- provider's own name as ServiceName and in x_UnmappedService (counted in the run summary); the row is
-- never dropped. A usage row with no service at all is 'Unknown', unmapped too.
service_keys as (
    select distinct
        service_description,
        coalesce(cost_type, 'regular') as cost_type_key,
        nullif(trim(service_description), '') as provider_service,
        coalesce(nullif(trim(service_description), ''),
                 case coalesce(cost_type, 'regular') when 'tax' then 'Tax' when 'rounding_error' then 'Rounding Error'
                                                     when 'adjustment' then 'Adjustment' end) as service_key
    from mine
),

service_map as (
    select
        s.service_description, s.cost_type_key,
        coalesce(r.ServiceName, s.service_key, 'Unknown') as ServiceName,
        coalesce(r.ServiceCategory, 'Other') as ServiceCategory,
        coalesce(r.ServiceSubcategory, 'Other (Other)') as ServiceSubcategory,
        case
            when r.service_description is null
                 and (s.provider_service is not null or s.cost_type_key = 'regular')
                then coalesce(s.service_key, 'Unknown')
        end as UnmappedService
    from service_keys as s
    -- one row per service even if the table were to repeat one: a lookup must never duplicate cost
    left join (select * from ref_gcp_services
               qualify row_number() over (partition by service_description order by ServiceName) = 1) as r
        on r.service_description = s.service_key
),

credit_rows as (
    select
        m._file_idx, m._row,
        try_cast(from_json(m.credits_json, '[{"name":"VARCHAR","amount":"VARCHAR","full_name":"VARCHAR","id":"VARCHAR","type":"VARCHAR"}]')
                 as struct(name varchar, amount varchar, full_name varchar, id varchar, type varchar)[]) as credits
    from mine as m
    where m.credits_json is not null and json_type(m.credits_json) = 'ARRAY' and json_array_length(m.credits_json) > 0
),

credit_sums as (
    select
        _file_idx, _row,
        coalesce(sum(apportion_money(c.amount)), 0) as credit_amount,
        bool_or(apportion_not_numeric(c.amount)) as bad_amount,
        min(case when apportion_rounds_to_zero(c.amount) then trim(c.amount) end) as tiny_amount,
        -- committed-use discounts: by type, or by name in exports whose credits carry no type
        -- ("Committed Usage Discount: GPU", "Committed use discount - dollar based")
        bool_or(c.type ilike 'COMMITTED_USAGE_DISCOUNT%'
                or (nullif(trim(c.type), '') is null
                    and regexp_matches(coalesce(c.name, '') || ' ' || coalesce(c.full_name, ''),
                                       'committed[ _-]*us(e|age)[ _-]*discount', 'i'))) as has_cud
    from (select _file_idx, _row, unnest(credits) as c from credit_rows)
    group by all
),

typed as (
    select
        m.*,
        apportion_money(m.cost_raw) as cost,
        coalesce(cs.credit_amount, 0) as credit_amount,
        coalesce(cs.has_cud, false) as has_cud,
        case when m.credits_json is not null and json_type(m.credits_json) = 'ARRAY'
                  and json_array_length(m.credits_json) > 0 then m.credits_json end as credits_kept,
        apportion_ts(m.usage_start_raw) as usage_start,
        apportion_ts(m.usage_end_raw) as usage_end,
        upper(m.currency_raw) as currency,
        lj.tags, lj.machine_spec, lj.cores,
        case when k.price_currency = upper(m.currency_raw) and coalesce(m.cost_type, 'regular') = 'regular'
             then cast(apportion_money(m.pricing_amount_raw) * k.list_unit_price as decimal(38, 12)) end
            as catalog_list_cost,
        ba.display_name as billing_account_name,
        sm.ServiceName as service_name,
        sm.ServiceCategory as service_category,
        sm.ServiceSubcategory as service_subcategory,
        sm.UnmappedService as unmapped_service,
        case coalesce(m.cost_type, 'regular')
            when 'regular' then 'Usage'
            when 'tax' then 'Tax'
            when 'adjustment' then 'Adjustment'
            when 'rounding_error' then 'Adjustment'
        end as charge_category,
        case
            when m.j is null then 'row is not valid JSON'
            when m.cost_raw is null then 'missing cost'
            when apportion_not_numeric(m.cost_raw) then 'non-numeric cost ' || m.cost_raw
            when coalesce(cs.bad_amount, false) then 'non-numeric credits.amount'
            -- an amount that would vanish in rounding is shown, never carried as a zero (macros/create_macros.sql)
            when apportion_rounds_to_zero(m.cost_raw)
                then 'tiny cost ' || trim(m.cost_raw) || ': not zero, but 0 at 12 decimal places'
            when cs.tiny_amount is not null
                then 'tiny credits.amount ' || cs.tiny_amount || ': not zero, but 0 at 12 decimal places'
            when m.credits_json is not null and json_type(m.credits_json) not in ('ARRAY', 'NULL') then 'malformed credits'
            when apportion_not_numeric(m.usage_amount_raw) then 'non-numeric usage.amount ' || m.usage_amount_raw
            when apportion_not_numeric(m.cost_at_list_raw) then 'non-numeric cost_at_list ' || m.cost_at_list_raw
            when m.currency_raw is null then 'missing currency'
            when upper(m.currency_raw) not in (select currency_code from ref_currencies)
                then 'unknown currency ' || m.currency_raw
            when m.invoice_month is null then 'missing invoice.month'
            when not regexp_full_match(m.invoice_month, '\d{6}') then 'unparseable invoice.month ' || m.invoice_month
            when apportion_bad_ts(m.usage_start_raw) then 'unparseable usage_start_time ' || m.usage_start_raw
            when apportion_bad_ts(m.usage_end_raw) then 'unparseable usage_end_time ' || m.usage_end_raw
            when coalesce(m.cost_type, 'regular') not in ('regular', 'tax', 'adjustment', 'rounding_error')
                then 'unknown cost_type ' || m.cost_type
            when lj.label_problem is not null then lj.label_problem
        end as quarantine_reason
    from mine as m
    left join credit_sums as cs on cs._file_idx = m._file_idx and cs._row = m._row
    left join label_json as lj
        on lj.labels_json is not distinct from m.labels_json
        and lj.tags_json is not distinct from m.tags_json
        and lj.project_labels_json is not distinct from m.project_labels_json
        and lj.system_labels_json is not distinct from m.system_labels_json
    left join service_map as sm
        on sm.service_description is not distinct from m.service_description
        and sm.cost_type_key = coalesce(m.cost_type, 'regular')
    left join gcp_catalog_skus as k on k.sku_id = m.sku_id
    left join gcp_billing_accounts as ba on ba.billing_account_id = m.billing_account_id
),

focus as (
    select
        t.*,
        cast((select billing_month from ctx) || '-01 00:00:00+00' as timestamptz) as bp_start,
        t.cost + t.credit_amount as net_cost,
        case
            when t.charge_category = 'Usage' and t.service_subcategory = 'Generative AI'
                 and regexp_matches(coalesce(t.sku_description, ''), '(?i)\b(input|output)\b.*\b(tokens?|characters?)\b')
                then apportion_llm_token_type(t.sku_description)
        end as llm_token_type
    from typed as t
)

select
    f.zone as AvailabilityZone,
    f.net_cost as BilledCost,
    coalesce(f.billing_account_id, 'unknown') as BillingAccountId,
    f.billing_account_name as BillingAccountName,
    'Billing Account' as BillingAccountType,
    coalesce(f.currency, 'USD') as BillingCurrency,
    f.bp_start + interval 1 month as BillingPeriodEnd,
    f.bp_start as BillingPeriodStart,
    null as CapacityReservationId,
    null as CapacityReservationStatus,
    coalesce(f.charge_category, 'Adjustment') as ChargeCategory,
    null as ChargeClass,
    coalesce(f.sku_description, f.cost_type) as ChargeDescription,
    case f.charge_category when 'Usage' then 'Usage-Based' when 'Tax' then 'Recurring' else 'One-Time' end
        as ChargeFrequency,
    coalesce(f.usage_end, f.usage_start, f.bp_start + interval 1 month) as ChargePeriodEnd,
    coalesce(f.usage_start, f.bp_start) as ChargePeriodStart,
    null as CommitmentDiscountCategory,
    null as CommitmentDiscountId,
    null as CommitmentDiscountName,
    null as CommitmentDiscountQuantity,
    null as CommitmentDiscountStatus,
    null as CommitmentDiscountType,
    null as CommitmentDiscountUnit,
    case when f.charge_category = 'Usage' then apportion_money(f.usage_amount_raw) end as ConsumedQuantity,
    case when f.charge_category = 'Usage' then f.usage_unit end as ConsumedUnit,
    f.cost as ContractedCost,
    null as ContractedUnitPrice,
    f.net_cost as EffectiveCost,
    null as InvoiceId,
    'Google Cloud' as InvoiceIssuerName,
    coalesce(apportion_money(f.cost_at_list_raw), f.catalog_list_cost, f.cost) as ListCost,
    null as ListUnitPrice,
    case
        when f.charge_category <> 'Usage' then null
        when f.has_cud then 'Committed'
        else 'Standard'
    end as PricingCategory,
    coalesce(f.currency, 'USD') as PricingCurrency,
    null as PricingCurrencyContractedUnitPrice,
    null as PricingCurrencyEffectiveCost,
    null as PricingCurrencyListUnitPrice,
    apportion_money(f.pricing_amount_raw) as PricingQuantity,
    f.pricing_unit as PricingUnit,
    'Google Cloud' as ProviderName,
    coalesce(f.seller_name, 'Google Cloud') as PublisherName,
    f.region as RegionId,
    coalesce(f.region, f.location) as RegionName,
    f.resource_name as ResourceId,
    f.resource_name as ResourceName,
    null as ResourceType,
    f.service_category as ServiceCategory,
    f.service_name as ServiceName,
    f.service_subcategory as ServiceSubcategory,
    f.sku_id as SkuId,
    f.sku_description as SkuMeter,
    case when f.machine_spec is not null
         then json_object('InstanceType', f.machine_spec, 'CoreCount', try_cast(f.cores as integer)) end
        as SkuPriceDetails,
    f.sku_id as SkuPriceId,
    f.project_id as SubAccountId,
    f.project_name as SubAccountName,
    'Project' as SubAccountType,
    f.tags as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    f._file_idx * 4294967296 + f._row as x_LineId,
    f._file as x_SourceFile,
    f._row as x_SourceRow,
    null as x_ProviderLineItemId,
    coalesce(f.cost_type, 'regular') as x_LineItemType,
    f.service_id as x_ServiceCode,
    f.sku_description as x_UsageType,
    null as x_Operation,
    coalesce(f.seller_name, 'Google') as x_BillingEntity,
    f.machine_spec as x_InstanceType,
    null as x_CostCategories,
    not (f.charge_category in ('Tax', 'Adjustment') and f.resource_name is null and f.project_id is null) as x_HasResource,
    'invoice' as x_CostBasis,
    case when f.is_detailed then 'GCP detailed billing export' else 'GCP standard billing export' end as x_SourceDataset,
    f.unmapped_service as x_UnmappedService,
    -- Vertex AI / Gemini SKUs decoded (macros in create_macros.sql): provider, model, direction; x_Tokens only
    -- when the SKU counts tokens (usage.amount in single tokens), not characters, images or seconds
    case when f.llm_token_type is not null then 'google' end as x_LlmProvider,
    case when f.llm_token_type is not null then apportion_vertex_llm_model(f.sku_description) end as x_ModelId,
    case when f.llm_token_type is not null then f.sku_description end as x_ModelRef,
    f.llm_token_type as x_TokenType,
    case
        when f.llm_token_type is not null and f.sku_description ilike '%token%'
             and lower(coalesce(f.usage_unit, 'count')) in ('count', 'tokens', 'token')
            then cast(round(apportion_money(f.usage_amount_raw)) as bigint)
    end as x_Tokens,
    f.credits_kept as x_Credits,
    f.credit_amount as x_CreditAmount,
    f.quarantine_reason as x_QuarantineReason
from focus as f
cross join apportion_lineage(run_context) as lineage;
