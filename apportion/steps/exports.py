"""Step 5, exports: the month's finance pack written from the published warehouse; totals tie to the bill."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from apportion.db import fault_point, lit, open_published
from apportion.models.config import ApportionConfig
from apportion.models.focus import dimension_column
from apportion.sql import sql_text

EXPORT_TABLES = (
    "allocation_by_team", "allocation_by_project", "allocation_by_workload", "allocation_by_value_class",
    "allocation_lines", "shared_cost_splits", "untagged_spend", "control_totals",
)


# Every table as CSV and as its Parquet twin (same columns; money stays DECIMAL(38,12)).
EXPORT_FILES = tuple(f"{t}.{ext}" for t in EXPORT_TABLES for ext in ("csv", "parquet"))


def export_month(cfg: ApportionConfig, month: str, out_dir: Path | None = None) -> Path:
    """Write the finance pack for one month from the published warehouse; totals tie to the bill."""
    out = Path(out_dir) if out_dir else cfg.exports / month
    tmp = out.with_name(out.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    con = open_published(cfg)
    try:
        con.execute("SET TimeZone = 'UTC'")
        # the line-level file sorts a month of pieces: bounded memory, spilling to the warehouse's temp folder
        con.execute("SET memory_limit = ?", [os.environ.get("APPORTION_MEMORY_LIMIT", "1GB")])
        (cfg.warehouse / ".tmp").mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(cfg.warehouse / ".tmp")])
        _write_pack(con, tmp, month)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed pack leaves the previous one, and no debris
        raise
    finally:
        con.close()
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fault_point("exports:written")
    tmp.rename(out)
    return out


def _write_pack(con, tmp: Path, month: str) -> None:
    """Every file of the finance pack (CSV; `_copy_csv` writes the Parquet twin)."""
    for name in ("team", "project", "workload"):
        col = dimension_column(name)
        _copy_csv(con, sql_text("outputs/export_allocation_by_dimension.sql").format(column=col, name=name),
                  tmp / f"allocation_by_{name}.csv", month)
    value_class = "coalesce(x_ValueClass, 'unclassified')" if "x_ValueClass" in {
        r[0] for r in con.execute("DESCRIBE allocations").fetchall()} else "'unclassified'"
    _copy_csv(con, sql_text("outputs/export_allocation_by_dimension.sql").format(column=value_class, name="value_class"),
              tmp / "allocation_by_value_class.csv", month)
    _copy_csv(con, sql_text("outputs/export_shared_cost_splits.sql"), tmp / "shared_cost_splits.csv", month)
    _copy_csv(con, sql_text("outputs/export_allocation_lines.sql"), tmp / "allocation_lines.csv", month)
    _copy_csv(con, sql_text("outputs/export_untagged_spend.sql"), tmp / "untagged_spend.csv", month)
    _copy_csv(con, sql_text("outputs/export_control_totals.sql"), tmp / "control_totals.csv", month)


def _copy_csv(con, query: str, dest: Path, month: str) -> None:
    con.execute("SET VARIABLE export_month = ?", [month])
    # the query runs once: Parquet first (typed), then the CSV from that file
    twin = dest.with_suffix(".parquet")
    con.execute(f"COPY ({query}) TO {lit(str(twin))} (FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"COPY (SELECT * FROM read_parquet({lit(str(twin))})) TO {lit(str(dest))} (HEADER, DELIMITER ',')")
