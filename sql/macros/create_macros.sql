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
