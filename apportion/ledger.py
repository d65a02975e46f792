"""The build steps of the ledger, shared by the Dagster assets and the CLI.

land (raw objects, unchanged) -> line items (FOCUS Parquet per source x month)
-> allocations (Parquet per source x month) -> warehouse (apportion.duckdb, single writer) -> exports.

Every per-month write goes to a temporary folder first and replaces the partition with a rename,
so a failed build leaves the previous build of that month untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from apportion.currency import apply_reporting_currency
from connectors.base import Delivery, SourceError, landed_delivery, promote
from connectors.registry import connector_for
from models.config import ApportionConfig, SourceConfig
from models.currencies import billing_currency_codes
from models.focus import LINE_ITEM_COLUMNS, dimension_column, select_list
from models.taxonomy import RULE_FIELDS, Taxonomy, load_taxonomy, taxonomy_tables

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference"
LINE_ITEMS = "line_items"
ALLOCATIONS = "allocations"
QUARANTINE = "quarantine"


class ExactnessError(Exception):
    """Allocated pieces do not sum to their line items: nothing downstream may use this month."""


def sql_text(name: str) -> str:
    """Text of a file under sql/, e.g. 'line_items/aws_cur.sql'."""
    return resources.files("sql").joinpath(name).read_text(encoding="utf-8")


def connect(cfg: ApportionConfig | None = None, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    # Row order carries no meaning in the lake (x_LineId does); not preserving it saves memory on big months.
    con.execute("SET preserve_insertion_order = false")
    # Bounded by default so a big month streams (and spills) instead of growing with the bill;
    # with the small row groups below, 1 GB is also the fastest setting measured (bench/RESULTS.md).
    con.execute("SET memory_limit = ?", [os.environ.get("APPORTION_MEMORY_LIMIT", "1GB")])
    if cfg is not None:
        tmp = cfg.warehouse / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(tmp)])
    con.execute(sql_text("macros/create_macros.sql"))
    return con


def load_reference(con: duckdb.DuckDBPyConnection) -> None:
    for table, file in (
        ("ref_aws_services", "aws_cur/services.csv"),
    ):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_csv(?, header = true, all_varchar = true)",
            [str(REFERENCE / file)],
        )
    load_currencies(con)


def load_currencies(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table ref_currencies(currency_code): the ISO 4217 codes a bill may be issued in."""
    codes = pa.table({"currency_code": pa.array(billing_currency_codes(), pa.string())})
    con.register("_currency_codes", codes)
    con.execute("CREATE OR REPLACE TEMP TABLE ref_currencies AS SELECT currency_code FROM _currency_codes")
    con.unregister("_currency_codes")


def fault_point(name: str) -> None:
    """Fault injection for the crash tests: when APPORTION_FAULT_AT names this point, the process dies
    here at once (SIGKILL, no cleanup), as a killed worker or a power cut would leave it."""
    if os.environ.get("APPORTION_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------ lake paths
def partition_dir(cfg: ApportionConfig, table: str, source: str, month: str) -> Path:
    return cfg.lake / table / f"x_SourceName={source}" / f"x_BillingMonth={month}"


def lake_glob(cfg: ApportionConfig, table: str) -> str:
    return str(cfg.lake / table / "x_SourceName=*" / "x_BillingMonth=????-??" / "*.parquet")


def replace_partition(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a freshly written partition folder into place (rename is atomic per folder)."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    old = final_dir.with_name(final_dir.name + f".old-{work_suffix()}")
    if final_dir.exists():
        final_dir.rename(old)
    tmp_dir.rename(final_dir)
    shutil.rmtree(old, ignore_errors=True)


def work_suffix() -> str:
    """`<host>-<pid>-<random>`: names a run's temporary files so that cleanup can tell a crashed run's
    leftovers (this host, process gone) from the work of a run still going."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def new_tmp_dir(final_dir: Path) -> Path:
    tmp = final_dir.with_name(final_dir.name + f".tmp-{work_suffix()}")
    tmp.mkdir(parents=True)
    return tmp


LEFTOVER = re.compile(r"\.(tmp|old|building)-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.wal)?$")
LEGACY_LEFTOVER = re.compile(r"\.(tmp|old|building)-[0-9a-f]{8}(\.wal)?$")  # before names carried host and pid


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(cfg: ApportionConfig, max_age_hours: float = 24.0) -> list[Path]:
    """Remove what crashed runs left: `.building-*` warehouse files (and their WAL), `.tmp-*` / `.old-*`
    partition and export folders. A leftover is removed when its process (on this host) is gone, or
    when it is older than `max_age_hours` (another host's run). Returns what was removed."""
    host = socket.gethostname().replace("-", "_")
    now = datetime.now(timezone.utc).timestamp()
    removed = []
    roots = [cfg.warehouse, cfg.exports, *[p for p in (cfg.lake.glob("*/x_SourceName=*") if cfg.lake.exists() else [])]]
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.iterdir():
            m = LEFTOVER.search(p.name)
            if m:
                dead = m["host"] == host and not _process_alive(int(m["pid"]))
            elif LEGACY_LEFTOVER.search(p.name):
                dead = True
            else:
                continue
            try:
                old = now - p.lstat().st_mtime > max_age_hours * 3600
            except FileNotFoundError:
                continue
            if dead or old:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def mixed_delivery_months(cfg: ApportionConfig) -> list[tuple[str, str, str | None, str | None]]:
    """(source, month, line-item deliveries, allocation deliveries) where the lake's two partitions of a
    source and month come from different deliveries: a run was stopped between the two steps. The CLI
    rebuilds those months; the warehouse refuses to publish them."""
    have = {t: list(cfg.lake.glob(f"{t}/x_SourceName=*/x_BillingMonth=????-??/*.parquet"))
            for t in (LINE_ITEMS, ALLOCATIONS)}
    if not have[LINE_ITEMS] and not have[ALLOCATIONS]:
        return []
    con = duckdb.connect()
    try:
        parts = []
        for table, files in have.items():
            if not files:
                parts.append("SELECT NULL::VARCHAR s, NULL::VARCHAR m, NULL::VARCHAR d WHERE false")
                continue
            reader = f"read_parquet({_list_literal(files)}, hive_partitioning = true, union_by_name = true)"
            cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
            delivery = "x_DeliveryId" if "x_DeliveryId" in cols else "NULL::VARCHAR"
            parts.append(f"SELECT x_SourceName s, x_BillingMonth m, string_agg(DISTINCT {delivery}, ', ' "
                         f"ORDER BY {delivery}) d FROM {reader} GROUP BY ALL")
        return con.execute(
            f"WITH li AS ({parts[0]}), al AS ({parts[1]}) SELECT coalesce(li.s, al.s), coalesce(li.m, al.m), "
            "li.d, al.d FROM li FULL JOIN al ON li.s = al.s AND li.m = al.m "
            "WHERE li.d IS DISTINCT FROM al.d ORDER BY 2, 1").fetchall()
    finally:
        con.close()


# ------------------------------------------------------------------ step 1: land
def land(cfg: ApportionConfig, source: SourceConfig, month: str) -> Delivery:
    """Copy the provider's current delivery for the month into the raw zone, unchanged."""
    return connector_for(source).land(month, cfg.raw)


def current_delivery(cfg: ApportionConfig, source: SourceConfig, month: str, pointer: str = "LANDED") -> Delivery:
    """The newest landed delivery (LANDED) or the one the current line items were built from (CURRENT)."""
    delivery = landed_delivery(cfg.raw / source.name / month, pointer)
    if delivery is None:
        raise SourceError(f"{source.name} {month}: nothing landed yet")
    return delivery


# ------------------------------------------------------------------ step 2: line items
@dataclass
class LineItemStats:
    source: str
    month: str
    delivery_id: str
    rows: int
    billed_cost: Decimal
    effective_cost: Decimal
    quarantined_rows: int
    quarantined_billed_cost: Decimal | None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def build_line_items(cfg: ApportionConfig, source: SourceConfig, delivery: Delivery) -> LineItemStats:
    """Map the delivery to FOCUS line items; quarantine bad rows (with file, row and reason)."""
    month = delivery.month
    connector = connector_for(source)
    con = connect(cfg)
    try:
        load_reference(con)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE run_context AS SELECT ?::VARCHAR AS source_name, ?::VARCHAR AS source_kind,"
            " ?::VARCHAR AS billing_month, ?::VARCHAR AS delivery_id, ?::TIMESTAMPTZ AS ingested_at",
            [source.name, source.kind, month, delivery.delivery_id, delivery.fetched_at],
        )
        final = partition_dir(cfg, LINE_ITEMS, source.name, month)
        tmp = new_tmp_dir(final)
        qdir = partition_dir(cfg, QUARANTINE, source.name, month)
        qtmp = new_tmp_dir(qdir)
        chunks = [[i] for i in range(len(delivery.files))] if getattr(connector, "stages_per_file", False) \
            and delivery.files else [None]
        for n, only in enumerate(chunks):
            suffix = "" if len(chunks) == 1 else f"_{n}"
            li_part, q_part = tmp / f"data{suffix}.parquet", qtmp / f"rows{suffix}.parquet"
            try:
                if only is None:
                    connector.stage_sql(con, delivery)
                else:
                    connector.stage_sql(con, delivery, only=only)
                con.execute(sql_text(f"line_items/{connector.line_items_sql}"))
                apply_reporting_currency(con, cfg)  # x_Reporting* columns when reporting_currency is configured
                produced = {r[0] for r in con.execute("DESCRIBE line_items_checked").fetchall()}
                # Streamed twice rather than materialised: a month of CUR can be tens of millions of rows.
                con.execute(
                    f"COPY (SELECT {select_list(available=produced)} FROM line_items_checked "
                    f"WHERE x_QuarantineReason IS NULL) TO {_lit(str(li_part))} "
                    "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 50000)"
                )
                # the second pass reads only the columns the reasons need (projection pushdown)
                con.execute(
                    "COPY (SELECT x_SourceName, x_BillingMonth, x_DeliveryId, x_SourceFile, x_SourceRow, "
                    "x_QuarantineReason AS reason, CAST(BilledCost AS VARCHAR) AS billed_cost "
                    "FROM line_items_checked WHERE x_QuarantineReason IS NOT NULL "
                    f"ORDER BY x_SourceFile, x_SourceRow) TO {_lit(str(q_part))} (FORMAT parquet)"
                )
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(qtmp, ignore_errors=True)
                if isinstance(exc, duckdb.Error):
                    raise _locate_bad_file(con, connector, delivery, exc) from None
                raise
        li_file, q_file = tmp / "data*.parquet", qtmp / "rows*.parquet"
        rows, billed, effective = con.execute(
            "SELECT count(*), coalesce(sum(BilledCost), 0), coalesce(sum(EffectiveCost), 0) "
            f"FROM read_parquet({_lit(str(li_file))})"
        ).fetchone()
        qrows, qbilled = con.execute(
            f"SELECT count(*), sum(TRY_CAST(billed_cost AS DECIMAL(38, 12))) FROM read_parquet({_lit(str(q_file))})"
        ).fetchone()
        reasons = dict(
            con.execute(
                "SELECT split_part(reason, ' ', 1) || ' ' || split_part(reason, ' ', 2), count(*) "
                f"FROM read_parquet({_lit(str(q_file))}) GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        replace_partition(tmp, final)
        fault_point("line_items:replaced")
        replace_partition(qtmp, qdir)
        promote(delivery)
        fault_point("line_items:promoted")
        return LineItemStats(source.name, month, delivery.delivery_id, rows, billed, effective, qrows, qbilled, reasons)
    finally:
        con.close()


def _locate_bad_file(con, connector, delivery: Delivery, exc: Exception) -> SourceError:
    """The combined read failed; find which raw file is unreadable, so the error can name it."""
    for key, path in delivery.files:
        try:
            select = connector._file_select(con, key, path, 0)
            con.execute(f"SELECT count(*) FROM ({select})").fetchone()
        except SourceError as err:
            return err
        except duckdb.Error as file_exc:
            return SourceError(f"cannot read {key}: {str(file_exc).strip().splitlines()[0][:300]}", file=key)
    return SourceError(f"building line items failed: {str(exc).strip().splitlines()[0][:300]}")


def quarantine_file(cfg: ApportionConfig, source: SourceConfig, month: str, error: SourceError) -> Path | None:
    """Keep a copy of an unusable raw file with the reason, for the owner to inspect."""
    qdir = cfg.lake / QUARANTINE / "files" / source.name / month
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = {"source": source.name, "month": month, "file": error.file, "reason": str(error), "at": stamp}
    landing = sorted((cfg.raw / source.name / month).glob("*"))
    if error.file:
        for d in landing:
            candidate = d / error.file
            if candidate.is_file():
                dest = qdir / f"{stamp}-{Path(error.file).name}"
                shutil.copyfile(candidate, dest)
                record["copy"] = str(dest)
                break
    path = qdir / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2))
    return path


# ------------------------------------------------------------------ step 3: allocations
@dataclass
class AllocationStats:
    source: str
    month: str
    pieces: int
    billed_cost: Decimal
    effective_cost: Decimal


def _taxonomy_sql(tax: Taxonomy) -> dict[str, str]:
    fields = sorted(tax.rule_fields())
    key_cols = ["SubAccountId", "Tags", "x_HasResource", "ChargeCategory", "x_LineItemType"]
    key_cols += [RULE_FIELDS[f] for f in fields if RULE_FIELDS[f] not in key_cols]
    key_select = ",\n        ".join(
        f'"{c}"' if c == "x_HasResource" else f'coalesce(CAST("{c}" AS VARCHAR), \'\') AS "{c}"' for c in key_cols
    )
    key_join = "\n        and ".join(
        f'li."{c}" = ak."{c}"' if c == "x_HasResource" else f'coalesce(CAST(li."{c}" AS VARCHAR), \'\') = ak."{c}"'
        for c in key_cols
    )
    if fields:
        rule_case = "CASE c.field " + " ".join(f"WHEN '{f}' THEN a.\"{RULE_FIELDS[f]}\"" for f in fields) + " END"
    else:
        rule_case = "CAST(NULL AS VARCHAR)"
    dims = tax.dimension_names
    dim_cols = ",\n        ".join(
        f"max(value) FILTER (WHERE dimension = '{d}') AS {dimension_column(d)},\n"
        f"        max(reason) FILTER (WHERE dimension = '{d}') AS {dimension_column(d)}Reason"
        for d in dims
    )
    dim_selects = ",\n    ".join(f"d.{dimension_column(d)}, d.{dimension_column(d)}Reason" for d in dims)
    reason = " || '; ' || ".join(f"'{d}=' || d.{dimension_column(d)}Reason" for d in dims)
    return {
        "key_columns": key_select,
        "key_join": key_join,
        "rule_field_case": rule_case,
        "dimension_columns": dim_cols,
        "dimension_selects": dim_selects,
        "reason_concat": reason,
    }


def register_taxonomy(con: duckdb.DuckDBPyConnection, tax: Taxonomy) -> None:
    for name, table in taxonomy_tables(tax).items():
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")


def allocate(cfg: ApportionConfig, source: SourceConfig, month: str, tax: Taxonomy | None = None,
             lake: Path | None = None) -> AllocationStats:
    """Attribute every line item of the month, apply split rules; verify exactness, then replace the partition.

    Split weights may come from other sources of the same month (gateway logs attributing an LLM
    invoice, GPU-hours attributing a cluster's instances), so the month's line items of every source
    are visible here; only this source's pieces are written. `lake` redirects the output (taxonomy diff).
    """
    from apportion.split_rules import apply_splits, spread_rules, workload_classes_select

    tax = tax or load_taxonomy(cfg.taxonomy)
    li_dir = partition_dir(cfg, LINE_ITEMS, source.name, month)
    if not li_dir.exists():
        raise SourceError(f"{source.name} {month}: no line items built")
    needs_basis = bool(tax.splits or spread_rules(tax))
    needs_table = needs_basis or any(d.workload_classes for d in tax.dimensions.values())
    con = connect(cfg)
    try:
        register_taxonomy(con, tax)
        files = sorted(li_dir.glob("*.parquet"))
        if needs_basis:
            files = sorted(cfg.lake.glob(f"{LINE_ITEMS}/x_SourceName=*/x_BillingMonth={month}/*.parquet"))
        reader = f"read_parquet({_list_literal(files)}, union_by_name = true)"
        produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
        con.execute(f"CREATE TEMP VIEW month_all_line_items AS SELECT {select_list(available=produced)} FROM {reader}")
        con.execute("CREATE TEMP VIEW month_line_items AS SELECT * FROM month_all_line_items "
                    f"WHERE x_SourceName = {_lit(source.name)}")
        parts = _taxonomy_sql(tax)
        con.execute(sql_text("allocation/create_attribution.sql").format(
            line_items="month_all_line_items" if needs_basis else "month_line_items", **parts))
        con.execute(sql_text("allocation/allocate.sql").format(view="allocations_month", line_items="month_line_items", **parts))
        result = "allocations_month"
        if needs_table:
            con.execute(f"CREATE TEMP TABLE alloc AS {workload_classes_select(con, tax, 'allocations_month')}")
            if needs_basis:
                con.execute(sql_text("allocation/allocate.sql").format(view="basis", line_items="month_all_line_items", **parts))
                con.execute("CREATE TEMP VIEW basis_line_items AS SELECT * FROM month_all_line_items")
                apply_splits(con, tax)
            from apportion.split_rules import reason_expression

            result = f"(SELECT * REPLACE ({reason_expression(tax)} AS x_AllocationReason) FROM alloc)"
        final = partition_dir(cfg, ALLOCATIONS, source.name, month) if lake is None else \
            lake / ALLOCATIONS / f"x_SourceName={source.name}" / f"x_BillingMonth={month}"
        tmp = new_tmp_dir(final)
        con.execute(
            f"COPY (SELECT * FROM {result}) TO '{tmp / 'data.parquet'}' "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 50000)"
        )
        con.execute(f"CREATE TEMP VIEW month_allocations AS SELECT * FROM read_parquet({_lit(str(tmp / 'data.parquet'))})")
        breaches = con.execute(sql_text("allocation/check_allocation_exact.sql")).fetchall()
        if breaches:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExactnessError(f"{source.name} {month}: allocation does not tie out, e.g. {breaches[:3]}")
        pieces, billed, effective = con.execute(
            "SELECT count(*), coalesce(sum(BilledCost), 0), coalesce(sum(EffectiveCost), 0) FROM month_allocations"
        ).fetchone()
        fault_point("allocations:written")
        replace_partition(tmp, final)
        return AllocationStats(source.name, month, pieces, billed, effective)
    finally:
        con.close()


# ------------------------------------------------------------------ step 4: warehouse
WAREHOUSE_TABLES = ("line_items", "allocations", "untagged_spend", "allocation_coverage", "quarantined_rows", "deliveries")
# AI unit economics and the LLM invoice reconciliation, built from line_items and allocations.
UNIT_ECONOMICS_SQL = (
    "outputs/create_llm_reconciliation.sql",
    "outputs/create_llm_unit_economics.sql",
    "outputs/create_gpu_unit_economics.sql",
)


def build_warehouse(cfg: ApportionConfig, tax: Taxonomy | None = None) -> dict:
    """Rebuild apportion.duckdb from the lake into a new file and swap it in atomically.

    An analyst who has the previous file open keeps reading it (the old inode stays valid until
    they close it); the next open sees the complete new file. Never a half-built file.
    """
    tax = tax or load_taxonomy(cfg.taxonomy)
    cfg.warehouse.mkdir(parents=True, exist_ok=True)
    tmp_path = cfg.warehouse / f".apportion.duckdb.building-{work_suffix()}"
    con = connect(cfg, str(tmp_path))
    published = False
    try:
        empty = f"SELECT {select_list()} FROM (SELECT NULL) WHERE false"
        li_files = list(cfg.lake.glob(f"{LINE_ITEMS}/x_SourceName=*/x_BillingMonth=????-??/*.parquet"))
        al_files = list(cfg.lake.glob(f"{ALLOCATIONS}/x_SourceName=*/x_BillingMonth=????-??/*.parquet"))
        if li_files:
            src_li = f"read_parquet({_list_literal(li_files)}, union_by_name = true)"
            produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src_li}").fetchall()}
        else:
            src_li, produced = f"({empty})", None
        con.execute(f"CREATE TABLE line_items AS SELECT {select_list(available=produced)} FROM {src_li}")
        if al_files:
            reader = f"read_parquet({_list_literal(al_files)}, union_by_name = true)"
            if con.execute("SELECT count(*) FROM (SELECT 1 FROM line_items WHERE x_FxRate IS NOT NULL LIMIT 1)").fetchone()[0]:
                # reporting currency: each piece at its line's rate (allocation itself stays in billing currency)
                con.execute(
                    f"CREATE TABLE allocations AS SELECT a.*, li.x_ReportingCurrency, "
                    "CAST(a.BilledCost * li.x_FxRate AS DECIMAL(38, 12)) AS x_ReportingBilledCost, "
                    "CAST(a.EffectiveCost * li.x_FxRate AS DECIMAL(38, 12)) AS x_ReportingEffectiveCost "
                    f"FROM {reader} AS a LEFT JOIN (SELECT x_SourceName, x_BillingMonth, x_LineId, x_ReportingCurrency, "
                    "x_FxRate FROM line_items) AS li USING (x_SourceName, x_BillingMonth, x_LineId)"
                )
            else:
                con.execute(
                    f"CREATE TABLE allocations AS SELECT *, CAST(NULL AS VARCHAR) AS x_ReportingCurrency, "
                    "CAST(NULL AS DECIMAL(38, 12)) AS x_ReportingBilledCost, "
                    f"CAST(NULL AS DECIMAL(38, 12)) AS x_ReportingEffectiveCost FROM {reader}"
                )
        else:
            con.execute("CREATE TABLE allocations AS SELECT * FROM (SELECT 1) WHERE false")
        q_files = list(cfg.lake.glob(f"{QUARANTINE}/x_SourceName=*/x_BillingMonth=????-??/*.parquet"))
        if q_files:
            con.execute(f"CREATE TABLE quarantined_rows AS SELECT * FROM read_parquet({_list_literal(q_files)}, union_by_name = true)")
        else:
            con.execute(
                "CREATE TABLE quarantined_rows (x_SourceName VARCHAR, x_BillingMonth VARCHAR, x_DeliveryId VARCHAR, "
                "x_SourceFile VARCHAR, x_SourceRow BIGINT, reason VARCHAR, billed_cost VARCHAR)"
            )
        _create_deliveries(con, cfg)
        dims = tax.dimension_names
        con.execute(sql_text("outputs/create_untagged_spend.sql").format(
            dimension_union=_dimension_union(dims, untagged_only=True)))
        con.execute(sql_text("outputs/create_allocation_coverage.sql").format(
            dimension_union=_dimension_union(dims, untagged_only=False)))
        if "value_class" in dims:
            con.execute(sql_text("outputs/create_portfolio.sql"))
            con.execute("COMMENT ON VIEW portfolio IS 'Spend per month, value class and team, with the change from "
                        "the previous month (the portfolio view of production, experimental and background work).'")
        _comment(con, dims)
        from apportion import analyst_views  # analyst views + a COMMENT ON for every table/view column

        analyst_views.create_views(con)
        if al_files:  # unit economics need the dimension columns of a real allocations table
            for name in UNIT_ECONOMICS_SQL:
                con.execute(sql_text(name))
        analyst_views.document(con, dims)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in WAREHOUSE_TABLES}
        # the blocking checks run on the staged file: a warehouse that does not tie out is never published
        ties = con.execute(sql_text("outputs/check_warehouse_ties_out.sql")).fetchall()
        mixed = con.execute(sql_text("outputs/check_warehouse_deliveries.sql")).fetchall()
        if ties or mixed:
            raise WarehouseNotPublished(ties, mixed)
        con.execute("CHECKPOINT")
        con.close()
        fault_point("warehouse:staged")
        _set_aside_stale_wal(cfg.duckdb_path)
        os.replace(tmp_path, cfg.duckdb_path)
        published = True
        fault_point("warehouse:published")
    finally:
        con.close()
        if not published:
            for p in (tmp_path, tmp_path.with_name(tmp_path.name + ".wal")):
                p.unlink(missing_ok=True)
    return counts


class WarehouseNotPublished(Exception):
    """The staged warehouse failed a blocking check; the published file was not touched."""

    def __init__(self, ties: list[tuple], mixed: list[tuple]):
        self.ties, self.mixed = ties, mixed
        parts = [f"{src} {month}: line items billed {li_b} / effective {li_e}, allocated billed {al_b} / "
                 f"effective {al_e}" for src, month, li_b, al_b, li_e, al_e in ties[:5]]
        parts += [f"{src} {month}: line items from delivery {li or '-'} but allocations from {al or '-'} "
                  f"(a run stopped between the steps; `apportion run --month {month}` rebuilds it)"
                  for src, month, li, al in mixed[:5]]
        super().__init__("warehouse not published (the previous file is kept): " + "; ".join(parts))


def _set_aside_stale_wal(path: Path) -> None:
    """A WAL next to the published file belongs to the file being replaced (an analyst opened it for
    writing, which the warehouse does not support): kept aside, it can never be replayed into the new one."""
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        wal.rename(path.with_name(f"{path.name}.wal.set-aside-{stamp}"))


def open_published(cfg: ApportionConfig) -> duckdb.DuckDBPyConnection:
    """The published warehouse, read-only. An analyst's write session may have left a WAL that does not
    match the file: it is set aside (never replayed), so a run's own summary and exports still read."""
    try:
        return duckdb.connect(str(cfg.duckdb_path), read_only=True)
    except duckdb.Error as exc:
        if "WAL" not in str(exc) and "wal" not in str(exc):
            raise
        _set_aside_stale_wal(cfg.duckdb_path)
        return duckdb.connect(str(cfg.duckdb_path), read_only=True)


def _list_literal(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in sorted(paths)) + "]"


def _dimension_union(dims: list[str], untagged_only: bool) -> str:
    parts = []
    for d in dims:
        col = dimension_column(d)
        # spread pieces stay listed: spreading makes them attributed, never invisible
        where = f"WHERE {col} = 'untagged' OR {col}Reason LIKE 'spread:%'" if untagged_only else ""
        parts.append(f"SELECT '{d}' AS dimension, {col} AS value, {col}Reason AS reason, a.* FROM allocations AS a {where}")
    return "\n        UNION ALL BY NAME\n        ".join(parts)


def _create_deliveries(con, cfg: ApportionConfig) -> None:
    rows = []
    for log in sorted(cfg.raw.glob("*/*/deliveries.jsonl")):
        current = (log.parent / "CURRENT").read_text().strip() if (log.parent / "CURRENT").exists() else None
        for line in log.read_text().splitlines():
            d = json.loads(line)
            rows.append({
                "source": d["source"], "kind": d["kind"], "billing_month": d["month"], "delivery_id": d["delivery_id"],
                "layout": d.get("layout"), "manifest_key": d.get("manifest_key"), "fetched_at": d["fetched_at"],
                "objects": len(d["objects"]), "bytes": sum(o["size"] for o in d["objects"]),
                "object_keys": json.dumps([{k: o[k] for k in ("key", "size", "etag")} for o in d["objects"]]),
                "is_current": Path(d["local_dir"]).name == current,
            })
    schema = pa.schema([("source", pa.string()), ("kind", pa.string()), ("billing_month", pa.string()),
                        ("delivery_id", pa.string()), ("layout", pa.string()), ("manifest_key", pa.string()),
                        ("fetched_at", pa.string()), ("objects", pa.int64()), ("bytes", pa.int64()),
                        ("object_keys", pa.string()), ("is_current", pa.bool_())])
    table = pa.Table.from_pylist(rows, schema=schema)
    con.register("deliveries_arrow", table)
    con.execute("CREATE TABLE deliveries AS SELECT source, kind, billing_month, delivery_id, layout, manifest_key, "
                "CAST(fetched_at AS TIMESTAMPTZ) AS fetched_at, objects, bytes, CAST(object_keys AS JSON) AS object_keys, "
                "is_current FROM deliveries_arrow")
    con.unregister("deliveries_arrow")


TABLE_DOCS = {
    "line_items": "FOCUS 1.2 cost and usage line items from every source, one row per provider line; "
                  "x_ columns carry lineage (source, delivery, file, row) and provider extras.",
    "allocations": "Every line item split into one or more pieces, each attributed to project, team and workload "
                   "with the tag or rule that decided it. Pieces sum exactly to their line item.",
    "untagged_spend": "Spend that no tag, rule, account mapping or default could attribute, per dimension, "
                      "with the reason and the account, service and resource behind it.",
    "allocation_coverage": "Spend-weighted share attributed per billing month, source and dimension.",
    "quarantined_rows": "Raw rows that were not loaded, with source file, row number and reason.",
    "deliveries": "Every provider delivery landed: object keys, sizes, etags, delivery id and fetch time.",
}

COLUMN_DOCS = {
    "allocations": {
        "x_PieceId": "Piece number within the line item (1 when the line is not split).",
        "x_AllocatedRatio": "Share of the line item carried by this piece; the pieces of a line sum to 1.",
        "x_AllocationReason": "How each dimension was decided, e.g. 'project=tag:project; team=account:333...'.",
        "x_AllocationRuleId": "Split rule that produced the piece (null when not split).",
        "x_AllocationMethodDetails": "FOCUS 1.3 AllocatedMethodDetails-shaped JSON for split pieces.",
        "InvoiceId": "Invoice of the piece's line item.",
        "x_ProviderLineItemId": "Provider's own id of the piece's line item.",
        "x_UsageType": "Provider usage type of the piece's line item.",
        "x_ReportingCurrency": "Configured reporting currency (null when none is configured).",
        "x_ReportingBilledCost": "This piece's BilledCost at its line's FX rate (reporting only; not exact by design).",
        "x_ReportingEffectiveCost": "This piece's EffectiveCost at its line's FX rate.",
    },
    "untagged_spend": {
        "dimension": "Dimension left unattributed (project, team, workload, ...).",
        "reason": "untagged:no-tags | untagged:key-missing | untagged:unknown-value (with the rejected tag).",
        "reason_code": "The reason without details.",
        "created_by": "aws:createdBy tag when present: who launched the resource.",
        "line_items": "Number of line items.",
    },
    "allocation_coverage": {
        "attributed_cost": "EffectiveCost attributed by a tag, rule, account mapping or default.",
        "shared_cost": "EffectiveCost with no resource to own it (tax, credits, fees); split by later rules.",
        "untagged_cost": "EffectiveCost that could have been attributed but was not.",
        "spread_cost": "EffectiveCost that was untagged and spread over known values (marked spread:, not attributed).",
        "coverage": "attributed / (attributed + untagged + spread), spend-weighted on absolute EffectiveCost.",
    },
}


def _comment(con, dims: list[str]) -> None:
    for table, doc in TABLE_DOCS.items():
        con.execute(f"COMMENT ON TABLE {table} IS {_lit(doc)}")
    for c in LINE_ITEM_COLUMNS:
        con.execute(f'COMMENT ON COLUMN line_items."{c.name}" IS {_lit(c.description)}')
    cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name='allocations'").fetchall()}
    descriptions = {c.name: c.description for c in LINE_ITEM_COLUMNS}
    for d in dims:
        descriptions[dimension_column(d)] = f"Attributed {d} (or 'untagged' / 'shared')."
        descriptions[dimension_column(d) + "Reason"] = f"What decided {d}: tag:<key>, rule:<name>, account:<id>, default, shared:..., untagged:..."
    descriptions.update(COLUMN_DOCS["allocations"])
    descriptions["BilledCost"] = "Allocated BilledCost of this piece."
    descriptions["EffectiveCost"] = "Allocated EffectiveCost of this piece."
    for col in cols:
        if col in descriptions:
            con.execute(f'COMMENT ON COLUMN allocations."{col}" IS {_lit(descriptions[col])}')
    for table in ("untagged_spend", "allocation_coverage"):
        for col, doc in COLUMN_DOCS[table].items():
            con.execute(f'COMMENT ON COLUMN {table}."{col}" IS {_lit(doc)}')


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# ------------------------------------------------------------------ step 5: exports
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
    con.execute(f"COPY ({query}) TO {_lit(str(twin))} (FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"COPY (SELECT * FROM read_parquet({_lit(str(twin))})) TO {_lit(str(dest))} (HEADER, DELIMITER ',')")


# ------------------------------------------------------------------ warehouse-level checks
def warehouse_breaches(cfg: ApportionConfig) -> list[tuple]:
    """(source, month, line-item billed, allocated billed, line-item effective, allocated effective) that differ."""
    con = open_published(cfg)
    try:
        return con.execute(sql_text("outputs/check_warehouse_ties_out.sql")).fetchall()
    finally:
        con.close()


def low_coverage(cfg: ApportionConfig, month: str, threshold: float) -> list[tuple[str, str, float]]:
    """(source, dimension, coverage) below the threshold for the month."""
    con = open_published(cfg)
    try:
        return con.execute(
            "SELECT x_SourceName, dimension, coverage FROM allocation_coverage "
            "WHERE x_BillingMonth = ? AND coverage < ? ORDER BY 1, 2",
            [month, threshold],
        ).fetchall()
    finally:
        con.close()
