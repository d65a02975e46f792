-- Helpers of the Azure, GCP and FOCUS line-item SQL (created by their connectors' staging step).

-- A provider timestamp as UTC: ISO 8601 (with or without zone), MM/DD/YYYY (Azure EA, also
-- M/D/YYYY and with a time), M/D/YY (hand-made FOCUS samples), YYYYMMDD. NULL when blank or unparseable.
create or replace temp macro apportion_ts(x) as
    case
        when x is null or trim(cast(x as varchar)) = '' then null
        when regexp_full_match(trim(cast(x as varchar)), '\d{1,2}/\d{1,2}/\d{4}')
            then cast(try_strptime(trim(cast(x as varchar)), '%m/%d/%Y') as timestamptz)
        when regexp_full_match(trim(cast(x as varchar)), '\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}(:\d{2})?( ?[AaPp][Mm])?')
            then cast(coalesce(try_strptime(trim(cast(x as varchar)), '%m/%d/%Y %H:%M:%S'),
                               try_strptime(trim(cast(x as varchar)), '%m/%d/%Y %H:%M'),
                               try_strptime(trim(cast(x as varchar)), '%m/%d/%Y %I:%M:%S %p'),
                               try_strptime(trim(cast(x as varchar)), '%m/%d/%Y %I:%M %p')) as timestamptz)
        when regexp_full_match(trim(cast(x as varchar)), '\d{1,2}/\d{1,2}/\d{2}')
            then cast(try_strptime(trim(cast(x as varchar)), '%m/%d/%y') as timestamptz)
        when regexp_full_match(trim(cast(x as varchar)), '\d{8}')
            then cast(try_strptime(trim(cast(x as varchar)), '%Y%m%d') as timestamptz)
        else try_cast(trim(cast(x as varchar)) as timestamptz)
    end;

create or replace temp macro apportion_bad_ts(x) as
    x is not null and trim(cast(x as varchar)) <> '' and apportion_ts(x) is null;

-- JSON object text -> JSON. Azure EA writes Tags without the outer braces
-- (`"env": "prod","team": "ml"`): they are added back. Blank, {} and null -> NULL.
-- Anything that is still not a JSON object -> NULL (callers quarantine non-blank input that gives NULL).
create or replace temp macro apportion_json_object(t) as
    case
        when t is null or trim(cast(t as varchar)) in ('', '{}', 'null', '""') then null
        when starts_with(trim(cast(t as varchar)), '{')
            then (case when json_type(try_cast(trim(cast(t as varchar)) as json)) = 'OBJECT'
                       then try_cast(trim(cast(t as varchar)) as json) end)
        else (case when json_type(try_cast('{' || trim(cast(t as varchar)) || '}' as json)) = 'OBJECT'
                   then try_cast('{' || trim(cast(t as varchar)) || '}' as json) end)
    end;

create or replace temp macro apportion_bad_json_object(t) as
    t is not null and trim(cast(t as varchar)) not in ('', '{}', 'null', '""') and apportion_json_object(t) is null;

-- (key, value) entries of a JSON object, values as text, empty values dropped, keys optionally lower-cased.
create or replace temp macro apportion_tag_entries(j, lower_keys) as
    list_transform(
        list_filter(map_entries(try_cast(j as map(varchar, varchar))), lambda e: coalesce(trim(e.value), '') <> ''),
        lambda e: struct_pack(key := case when lower_keys then lower(trim(e.key)) else trim(e.key) end, value := e.value));

-- FOCUS Tags from a list of (key, value) entries: first occurrence of a key wins, keys sorted (byte order,
-- so labels delivered in another order give the same text), NULL when empty.
create or replace temp macro apportion_tags_from_entries(es) as
    nullif(
        to_json(map_from_entries(list_sort(list_filter(es,
            lambda e, i: list_position(list_transform(es, lambda x: x.key), e.key) = i)))),
        '{}');
