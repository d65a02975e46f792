-- Decide every dimension (project, team, workload, ...) once per distinct attribution key.
-- Reads:  month_line_items (one source x month), tax_dimensions, tax_keys, tax_aliases, tax_allowed,
--         tax_accounts, tax_rule_conditions (the taxonomy as data: tag keys and values never appear here).
-- Writes: temp tables attribution_keys (k + key columns) and attribution (k, dimension, value, reason).
-- {{key_columns}} and {{rule_field_case}} are filled from a fixed allow-list of line-item column names.

create or replace temp table attribution_keys as
select
    row_number() over () as k,
    *
from (
    select distinct {key_columns}
    from {line_items}
);

create or replace temp table attribution_tags as
select
    a.k,
    e.key as tag_key,
    lower(trim(e.key)) as key_lower,
    e.value ->> '$' as raw_value
from attribution_keys as a,
    json_each(nullif(a.Tags, '')) as e
where coalesce(trim(e.value ->> '$'), '') <> '';

create or replace temp table attribution as
with

dims as (select * from tax_dimensions),

-- Highest-priority taxonomy key present on each key, per dimension.
tag_hits as (
    select
        t.k,
        tk.dimension,
        t.tag_key,
        t.raw_value,
        tk.priority
    from attribution_tags as t
    inner join tax_keys as tk on tk.key_lower = t.key_lower
    qualify row_number() over (partition by t.k, tk.dimension order by tk.priority, t.tag_key) = 1
),

tag_normalised as (
    select
        h.*,
        (case when d.do_slug then regexp_replace(
            case when d.do_lower then lower(case when d.do_trim then trim(h.raw_value) else h.raw_value end)
                 else (case when d.do_trim then trim(h.raw_value) else h.raw_value end) end,
            '[\s_]+', '-', 'g')
         else case when d.do_lower then lower(case when d.do_trim then trim(h.raw_value) else h.raw_value end)
                   else (case when d.do_trim then trim(h.raw_value) else h.raw_value end) end
         end) as normalised,
        d.has_allowed
    from tag_hits as h
    inner join dims as d on d.dimension = h.dimension
),

tag_values as (
    select
        n.k,
        n.dimension,
        n.tag_key,
        n.raw_value,
        coalesce(al.value, n.normalised) as candidate,
        (not n.has_allowed or ok.value is not null) as is_allowed
    from tag_normalised as n
    left join tax_aliases as al on al.dimension = n.dimension and al.variant = n.normalised
    left join tax_allowed as ok on ok.dimension = n.dimension and ok.value = coalesce(al.value, n.normalised)
),

rule_evaluations as (
    select
        a.k,
        c.dimension,
        c.rule_order,
        c.rule_name,
        c.value,
        c.override,
        bool_and(
            case
                when c.field = 'tag' then coalesce(
                    (select bool_or(regexp_full_match(trim(t.raw_value), c.regex))
                     from attribution_tags as t
                     where t.k = a.k and t.key_lower = c.tag_key), false)
                else regexp_full_match(coalesce({rule_field_case}, ''), c.regex)
            end
        ) as matched
    from attribution_keys as a
    cross join tax_rule_conditions as c
    group by a.k, c.dimension, c.rule_order, c.rule_name, c.value, c.override
),

-- Virtual tags (override: true) decide before the line's own tags; other rules after them.
override_hits as (
    select k, dimension, rule_name, value
    from rule_evaluations
    where matched and override
    qualify row_number() over (partition by k, dimension order by rule_order) = 1
),

rule_hits as (
    select k, dimension, rule_name, value
    from rule_evaluations
    where matched and not override
    qualify row_number() over (partition by k, dimension order by rule_order) = 1
),

grid as (
    select a.k, a.SubAccountId, a.Tags, a.x_HasResource, a.ChargeCategory, a.x_LineItemType, d.*
    from attribution_keys as a
    cross join dims as d
)

select
    g.k,
    g.dimension,
    case
        when oh.value is not null then oh.value
        when tv.is_allowed then tv.candidate
        when rh.value is not null then rh.value
        when acct.value is not null then acct.value
        when g.default_value is not null then g.default_value
        when not g.x_HasResource then 'shared'
        else 'untagged'
    end as value,
    case
        when oh.value is not null then 'override:' || oh.rule_name
        when tv.is_allowed then 'tag:' || tv.tag_key
        when rh.value is not null then 'rule:' || rh.rule_name
        when acct.value is not null then 'account:' || acct.account_id
        when g.default_value is not null then 'default'
        when not g.x_HasResource then 'shared:' || g.ChargeCategory || '/' || coalesce(g.x_LineItemType, '')
        when tv.k is not null then 'untagged:unknown-value'
        when coalesce(g.Tags, '') in ('', '{{}}') then 'untagged:no-tags'
        else 'untagged:key-missing'
    end
    || case
        when oh.value is not null or tv.k is null or tv.is_allowed then ''
        when not tv.is_allowed
            then ' | tag ' || tv.tag_key || '=' || to_json(tv.raw_value)::varchar || ' is not an allowed ' || g.dimension
        else ''
    end as reason
from grid as g
left join tag_values as tv on tv.k = g.k and tv.dimension = g.dimension
left join override_hits as oh on oh.k = g.k and oh.dimension = g.dimension
left join rule_hits as rh on rh.k = g.k and rh.dimension = g.dimension
left join tax_accounts as acct on acct.dimension = g.dimension and acct.account_id = g.SubAccountId;
