"""Step 2, line items: a landed delivery mapped to FOCUS 1.2 line items (Parquet per source x month);
rows that fail validation are quarantined with file, row and reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import duckdb
import pyarrow as pa

from apportion.connectors.base import Connector, Delivery, SourceError, promote
from apportion.connectors.registry import connector_for
from apportion.currency import apply_reporting_currency
from apportion.db import connect, fault_point, lit
from apportion.lake import LINE_ITEMS, QUARANTINE, discard_version, new_version, publish_version
from apportion.models.config import ApportionConfig, SourceConfig
from apportion.models.currencies import billing_currency_codes
from apportion.models.focus import LINE_ITEM_COLUMNS, select_list


def load_reference(con: duckdb.DuckDBPyConnection, connector: Connector) -> None:
    """The connector's reference tables (models/reference/<kind>/) and the billing currencies."""
    for table, path in connector.reference_tables().items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_csv(?, header = true, "
                    "all_varchar = true)", [str(path)])
    load_currencies(con)


def load_currencies(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table ref_currencies(currency_code): the ISO 4217 codes a bill may be issued in."""
    codes = pa.table({"currency_code": pa.array(billing_currency_codes(), pa.string())})
    con.register("_currency_codes", codes)
    con.execute("CREATE OR REPLACE TEMP TABLE ref_currencies AS SELECT currency_code FROM _currency_codes")
    con.unregister("_currency_codes")


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
        load_reference(con, connector)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE run_context AS SELECT ?::VARCHAR AS source_name, ?::VARCHAR AS source_kind,"
            " ?::VARCHAR AS billing_month, ?::VARCHAR AS delivery_id, ?::TIMESTAMPTZ AS ingested_at",
            [source.name, source.kind, month, delivery.delivery_id, delivery.fetched_at],
        )
        tmp = new_version(cfg.lake, LINE_ITEMS, source.name, month)
        qtmp = new_version(cfg.lake, QUARANTINE, source.name, month)
        chunks = [[i] for i in range(len(delivery.files))] if connector.stages_per_file and delivery.files \
            else [None]
        for n, only in enumerate(chunks):
            suffix = "" if len(chunks) == 1 else f"_{n}"
            li_part, q_part = tmp / f"data{suffix}.parquet", qtmp / f"rows{suffix}.parquet"
            try:
                if only is None:
                    connector.stage_sql(con, delivery)
                else:
                    connector.stage_sql(con, delivery, only=only)
                con.execute(connector.line_items_sql_text(delivery))
                apply_reporting_currency(con, cfg)  # x_Reporting* columns when reporting_currency is configured
                # An x_ extension the source cannot fill (absent from its SQL, or a bare NULL there) is not written
                # (every reader selects the contract columns through select_list, which gives it as a typed NULL);
                # every FOCUS column is, null or not: a partition stays a FOCUS 1.2 dataset on its own.
                produced = {name for name, typ, *_ in con.execute("DESCRIBE line_items_checked").fetchall()
                            if typ.strip('"') != "NULL"}
                # Streamed twice rather than materialised: a month of CUR can be tens of millions of rows.
                con.execute(
                    f"COPY (SELECT {select_list(written_columns(produced), available=produced)} FROM line_items_checked "
                    f"WHERE x_QuarantineReason IS NULL) TO {lit(str(li_part))} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 50000)"
                )
                # the second pass reads only the columns the reasons need (projection pushdown), from the
                # source's own `line_items_rejected` view when its SQL defines one (no FOCUS mapping at all)
                rejected = "line_items_rejected" if con.execute(
                    "SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = 'line_items_rejected'"
                ).fetchone()[0] else "line_items_checked"
                con.execute(
                    "COPY (SELECT x_SourceName, x_BillingMonth, x_DeliveryId, x_SourceFile, x_SourceRow, "
                    "x_QuarantineReason AS reason, CAST(BilledCost AS VARCHAR) AS billed_cost "
                    f"FROM {rejected} WHERE x_QuarantineReason IS NOT NULL "
                    f"ORDER BY x_SourceFile, x_SourceRow) TO {lit(str(q_part))} (FORMAT parquet)"
                )
            except BaseException as exc:
                discard_version(tmp)
                discard_version(qtmp)
                if isinstance(exc, duckdb.Error):
                    raise _locate_bad_file(con, connector, delivery, exc) from None
                raise
        li_file, q_file = tmp / "data*.parquet", qtmp / "rows*.parquet"
        rows, billed, effective = con.execute(
            "SELECT count(*), coalesce(sum(BilledCost), 0), coalesce(sum(EffectiveCost), 0) "
            f"FROM read_parquet({lit(str(li_file))})"
        ).fetchone()
        qrows, qbilled = con.execute(
            f"SELECT count(*), sum(TRY_CAST(billed_cost AS DECIMAL(38, 12))) FROM read_parquet({lit(str(q_file))})"
        ).fetchone()
        reasons = dict(
            con.execute(
                "SELECT split_part(reason, ' ', 1) || ' ' || split_part(reason, ' ', 2), count(*) "
                f"FROM read_parquet({lit(str(q_file))}) GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        publish_version(tmp)
        fault_point("line_items:replaced")
        publish_version(qtmp)
        promote(delivery)
        fault_point("line_items:promoted")
        return LineItemStats(source.name, month, delivery.delivery_id, rows, billed, effective, qrows, qbilled, reasons)
    finally:
        con.close()


def written_columns(produced: set[str]) -> tuple:
    """The contract columns a partition file holds, in contract order: every FOCUS column, and the x_ extensions
    the source's SQL produces (e.g. an AWS bill has no scheduler job, GPU-hours or reporting-currency columns)."""
    return tuple(c for c in LINE_ITEM_COLUMNS if c.name in produced or not c.name.startswith("x_"))


def _locate_bad_file(con, connector, delivery: Delivery, exc: Exception) -> SourceError:
    """The combined read failed; find which raw file is unreadable, so the error can name it."""
    for key, path in delivery.files:
        try:
            select = connector.file_select(con, key, path, 0)
            # every column of every row is decoded (count(*) may answer from the footer, missing a garbled body);
            # not a COPY to /dev/null: DuckDB locks the target, so two runs locating at once blamed a good file
            con.execute(f"SELECT count(*) FROM ({select}) AS s WHERE hash(s) IS NULL").fetchall()
        except SourceError as err:
            return err
        except duckdb.Error as file_exc:
            return SourceError(f"cannot read {key}: {str(file_exc).strip().splitlines()[0][:300]}", file=key)
    return SourceError(f"building line items failed: {str(exc).strip().splitlines()[0][:300]}")
