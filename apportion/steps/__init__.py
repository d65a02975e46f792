"""The five steps of a nightly build, each reading only the previous step's output.

land (raw objects, unchanged) -> line_items (FOCUS Parquet per source x month) -> allocate (Parquet per
source x month) -> warehouse (apportion.duckdb, single writer, checked before it is published) -> exports
(the finance pack). The Dagster assets (pipelines/assets.py) and the CLI call them through this package.
"""

from apportion.lake import (
                            ALLOCATIONS,
                            LINE_ITEMS,
                            QUARANTINE,
                            clean_leftovers,
                            mixed_delivery_months,
                            partition_dir,
)
from apportion.steps.allocate import AllocationStats, ExactnessError, allocate, register_taxonomy
from apportion.steps.exports import EXPORT_FILES, EXPORT_TABLES, export_month
from apportion.steps.land import current_delivery, land, publish_raw_current, quarantine_file, sync_raw_records
from apportion.steps.line_items import LineItemStats, build_line_items, load_reference
from apportion.steps.warehouse import (
                            COLUMN_DOCS,
                            WAREHOUSE_TABLES,
                            WarehouseNotPublished,
                            build_warehouse,
                            low_coverage,
                            warehouse_breaches,
)
from apportion.storage import publish_warehouse

__all__ = [
    "ALLOCATIONS", "LINE_ITEMS", "QUARANTINE", "clean_leftovers", "mixed_delivery_months",
    "partition_dir", "AllocationStats", "ExactnessError", "allocate", "register_taxonomy", "EXPORT_FILES",
    "EXPORT_TABLES", "export_month", "current_delivery", "land", "quarantine_file", "publish_raw_current",
    "sync_raw_records", "publish_warehouse", "LineItemStats",
    "build_line_items", "load_reference", "COLUMN_DOCS", "WAREHOUSE_TABLES", "WarehouseNotPublished",
    "build_warehouse", "low_coverage", "warehouse_breaches",
]
