-- Helpers shared by every source's SQL. Created on each connection before anything else runs.

-- Money and quantities are DECIMAL(38,12): exact sums, 10 decimals of AWS precision plus headroom.
create or replace macro apportion_money(x) as try_cast(x as decimal(38, 12));

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

create or replace macro apportion_aws_tags_json(m) as
    case
        when m is null then null
        else nullif(
            to_json(map_from_entries(list_filter(
                apportion_aws_tag_entries(m),
                lambda e, i: list_position(list_transform(apportion_aws_tag_entries(m), lambda x: x.key), e.key) = i))),
            '{}')
    end;
