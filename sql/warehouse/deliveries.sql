-- Table deliveries: every provider delivery landed (one row per delivery record of <raw>/*/*/deliveries.jsonl,
-- read by apportion/steps/warehouse.py into the Arrow table deliveries_arrow).
create table deliveries as
select
    source,
    kind,
    billing_month,
    delivery_id,
    layout,
    manifest_key,
    cast(fetched_at as timestamptz) as fetched_at,
    objects,
    bytes,
    cast(object_keys as json) as object_keys,
    is_current
from deliveries_arrow
