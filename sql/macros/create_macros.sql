-- Helpers shared by every source's SQL. Created on each connection before anything else runs.

-- Money and quantities are DECIMAL(38,12): exact sums, 10 decimals of AWS precision plus headroom.
-- Each amount is rounded once, on its own row, to 12 places (half away from zero, as DuckDB casts); every
-- sum after that is exact. Azure and GCP (float) exports do deliver more digits (0.0000104166666666667):
-- the tail (under 5e-13 a row) is rounded away, never a reason to reject the row.
create or replace macro apportion_money(x) as try_cast(x as decimal(38, 12));

-- True when an amount is a number, not zero, and yet 0 at 12 places (`1e-13`): rounding would make it vanish
-- silently, so the sources quarantine such a row with the amount as delivered instead of carrying a zero.
-- (Quarantine rather than a rounded zero: the row is seen and counted; Σ line items + Σ quarantined still
-- equals the sum of the delivered amounts each rounded to 12 places.) Decided on the text, so no float
-- underflow (`1e-400`) can hide a non-zero digit.
create or replace macro apportion_rounds_to_zero(x) as
    coalesce(try_cast(x as decimal(38, 12)) = 0
             and regexp_matches(regexp_replace(lower(trim(cast(x as varchar))), 'e.*$', ''), '[1-9]'), false);

-- True when a value is present but not a number: the row is quarantined, never read as zero.
create or replace macro apportion_not_numeric(x) as
    x is not null
    and nullif(trim(cast(x as varchar)), '') is not null
    and try_cast(x as decimal(38, 12)) is null;

create or replace macro apportion_not_timestamp(x) as
    x is not null
    and nullif(trim(cast(x as varchar)), '') is not null
    and try_cast(x as timestamptz) is null;

create or replace macro apportion_blank(x) as nullif(trim(cast(x as varchar)), '');

-- AWS tag keys: `resourceTags/user:team` (legacy CSV), `resource_tags_user_team` (Athena Parquet)
-- and `user_team` (CUR 2.0 map) all become `team`; AWS-generated tags keep an `aws:` prefix.
create or replace macro apportion_aws_tag_key(k) as
    regexp_replace(
        regexp_replace(regexp_replace(k, '^(resourceTags/|resource_tags_|costCategory/|cost_category_)', ''),
                       '^user[:_]', ''),
        '^aws_', 'aws:');

-- A raw tag map -> FOCUS Tags JSON object: normalised keys, empty values dropped, null when empty.
-- When two raw keys normalise to the same key (`team` and `user_team`), the first one wins.
create or replace macro apportion_aws_tag_entries(m) as
    list_transform(
        list_filter(map_entries(m), lambda e: coalesce(trim(e.value), '') <> ''),
        lambda e: struct_pack(key := apportion_aws_tag_key(e.key), value := e.value));

-- Keys sorted (byte order), like every source's Tags: the same tags in another order are the same text.
create or replace macro apportion_aws_tags_json(m) as
    case
        when m is null then null
        else nullif(
            to_json(map_from_entries(list_sort(list_filter(
                apportion_aws_tag_entries(m),
                lambda e, i: list_position(list_transform(apportion_aws_tag_entries(m), lambda x: x.key), e.key) = i)))),
            '{}')
    end;

-- A JSON object with its keys sorted (byte order), values unchanged; NULL stays NULL. Tags leave every source
-- in this form, so the same labels delivered in another order are the same text to anyone grouping on
-- Tags. Anything that is not an object with unique keys is returned as it is.
create or replace macro apportion_sorted_json(j) as
    coalesce(to_json(map_from_entries(list_sort(map_entries(try_cast(cast(j as json) as map(varchar, json)))))),
             cast(j as json));

-- ---------------------------------------------------------------------------------------------------------
-- LLM spend on cloud bills, decoded from what the bill says (usage type, meter, SKU description). Each macro
-- returns NULL when the text does not say: a line is never given a model or direction it does not carry.

-- Token direction (x_TokenType) of a usage type / meter / SKU text: Bedrock `-input-tokens`,
-- `-cache-read-input-token-count`, Marketplace `InputTokenCount-Units`, Azure `Inp` / `Outp` / `cached Inp`,
-- Vertex AI `Input` / `Output`. Cache reads before cache writes before plain input; 1h cache writes apart.
create or replace macro apportion_llm_token_type(t) as
    case
        when t is null then null
        when regexp_matches(t, '(?i)cache[-_ ]?read|cached[-_ ]?(inp|input)|cachedinput') then 'cache_read'
        when regexp_matches(t, '(?i)cache[-_ ]?write.*1h') then 'cache_write_1h'
        when regexp_matches(t, '(?i)cache[-_ ]?write|cache[-_ ]?creation') then 'cache_write_5m'
        when regexp_matches(t, '(?i)(^|[^a-z])(inp|input)([^a-z]|$)|inputtoken|input-token') then 'input'
        when regexp_matches(t, '(?i)(^|[^a-z])(outp|output)([^a-z]|$)|outputtoken|output-token') then 'output'
    end;

-- A model's display spelling -> x_ModelId: lower case, words joined by '-', Claude versions with '-'
-- (`Claude Sonnet 4.6` -> claude-sonnet-4-6, as Anthropic spells its ids), Gemini keeps its dots
-- (`Gemini 2.5 Flash` -> gemini-2.5-flash, as Google spells them).
-- (No subquery here: a correlated subquery in a macro makes DuckDB buffer every row of the caller's query.)
create or replace macro apportion_llm_model_id(name) as
    case
        when nullif(trim(name), '') is null then null
        when starts_with(lower(trim(name)), 'claude')
            then replace(regexp_replace(regexp_replace(lower(trim(name)), '[\s_]+', '-', 'g'), '-{2,}', '-', 'g'), '.', '-')
        else regexp_replace(regexp_replace(lower(trim(name)), '[\s_]+', '-', 'g'), '-{2,}', '-', 'g')
    end;

-- Bedrock on the CUR. First-party usage types carry the model in CamelCase before the direction:
-- `USE1-NovaPro-input-tokens` -> nova-pro, `USW2-Claude4.6Opus-cache-read-input-token-count`
-- -> claude4.6-opus (words split at case changes). Marketplace models (`USE1-MP:USE1_InputTokenCount-Units`)
-- carry it in the product name: `Claude Sonnet 4.6 (Amazon Bedrock Edition)` -> claude-sonnet-4-6.
create or replace macro apportion_bedrock_model(usage_type, product_name) as
    case
        when regexp_matches(coalesce(usage_type, ''), '(?i)TokenCount-Units$')
            then apportion_llm_model_id(regexp_replace(product_name, '\s*\((Amazon )?Bedrock Edition\)\s*$', ''))
        when regexp_matches(coalesce(usage_type, ''), '(?i)-(cache-read-|cache-write-|mantle-)?(input|output)-token')
            then nullif(lower(regexp_replace(
                regexp_extract(usage_type, '^(?:[A-Z]{2,4}[0-9]?-)?(.+?)-(?:cache-read-|cache-write-|mantle-)?(?:input|output)-token', 1),
                '([a-z0-9])([A-Z])', '\1-\2', 'g')), '')
    end;

-- Azure OpenAI / AI Services / Foundry meters: `gpt-4o-mini-0718-Inp-glbl Tokens` -> gpt-4o-mini,
-- `gpt 4o 1120 cached Inp glbl` -> gpt-4o, `gpt-4-8K-Batch-Inp-glbl Tokens` -> gpt-4-8k (the 4-digit
-- snapshot date, the deployment type and the direction are not part of the model).
create or replace macro apportion_azure_llm_model(meter) as
    nullif(regexp_extract(
        regexp_replace(lower(trim(coalesce(meter, ''))), '[\s_]+', '-', 'g'),
        '^(.+?)(?:-[0-9]{4})?(?:-batch)?(?:-cached)?-(?:inp|input|outp|output)(?:-|$)', 1), '');

-- Vertex AI SKUs: `Gemini 2.5 Flash Input Tokens`, `Gemini 2.5 Pro Output Characters` -> gemini-2.5-flash;
-- the model is what comes before the modality / direction words.
create or replace macro apportion_vertex_llm_model(sku) as
    apportion_llm_model_id(nullif(regexp_extract(
        coalesce(sku, ''),
        '(?i)^(.+?)\s+(?:(?:text|image|audio|video|batch|cached|long|short|context|predictions?|online|>\s*\S+|<=?\s*\S+)\s+)*(?:input|output)\b', 1), ''));

-- Tokens in one delivered unit of a bill's unit text: `1K tokens` -> 1000, `1M` -> 1000000, else 1.
create or replace macro apportion_unit_block(u) as
    case
        when regexp_matches(coalesce(u, ''), '(?i)^\s*1\s*m\b|million') then 1000000
        when regexp_matches(coalesce(u, ''), '(?i)^\s*1\s*k\b|thousand|^\s*1,?000\s') then 1000
        else 1
    end;

-- The lineage every source's line items carry, from the run's context (the temp table run_context):
-- `select lineage.*, ... from ... cross join apportion_lineage(run_context) as lineage` (x_LineId, x_SourceFile
-- and x_SourceRow are each kind's own: how a row is numbered differs). A parameter, because a table macro's body
-- is bound when it is created, before run_context exists.
create or replace macro apportion_lineage(ctx) as table
select
    source_name as x_SourceName,
    source_kind as x_SourceKind,
    billing_month as x_BillingMonth,
    delivery_id as x_DeliveryId,
    ingested_at as x_IngestedAt
from query_table(ctx);
