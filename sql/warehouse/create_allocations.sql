-- View allocations: the allocation pieces of exactly the lake files of the partitions' current versions
-- ({{source}}: read_parquet over them, or the line items' shape with no rows when there are none).
-- {{temp}}: `temp` inside a step's own connection (summaries), empty in the published apportion.duckdb.
create or replace {temp} view allocations as
select *
from {source}
