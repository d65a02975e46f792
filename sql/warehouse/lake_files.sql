-- Table lake_files: the Parquet files of the current partition versions the warehouse's lake-backed views read
-- (lake_files_arrow: the lake table and path of each, from apportion/steps/warehouse.py).
create table lake_files as
select lake_table, path
from lake_files_arrow
