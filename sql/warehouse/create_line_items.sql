-- View line_items: the FOCUS 1.2 line items of exactly the lake files of the partitions' current versions.
-- {{source}}: read_parquet over those files (union_by_name), or a relation with no rows when there are none;
-- {{columns}}: every FOCUS column in contract order (models/focus.py), typed NULL where the files lack it.
-- {{temp}}: `temp` inside a step's own connection (summaries), empty in the published apportion.duckdb.
create or replace {temp} view line_items as
select
    {columns}
from {source}
