-- View quarantined_rows: the rows a line-item build set aside, with file, row and reason, from exactly the lake
-- files of the partitions' current versions ({{source}}: read_parquet over them, or `empty` below when none).
-- {{temp}}: `temp` inside a step's own connection (summaries), empty in the published apportion.duckdb.
create or replace {temp} view quarantined_rows as
with

empty as (
    select
        null::varchar as x_SourceName,
        null::varchar as x_BillingMonth,
        null::varchar as x_DeliveryId,
        null::varchar as x_SourceFile,
        null::bigint as x_SourceRow,
        null::varchar as reason,
        null::varchar as billed_cost
    where false
)

select *
from {source}
