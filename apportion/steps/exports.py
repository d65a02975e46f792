"""Step 5, exports: the month's finance pack written from the published warehouse; totals tie to the bill.

Summary-first: the summaries and control totals are always written (CSV for people, each with its Parquet
twin for tools); the line-level file (`allocation_lines`) is Parquet unless the config (`exports:
{lines: csv}`) or `apportion export --lines csv` asks for gzip CSV.

In the CSVs amounts are plain exact decimal text without trailing zeros (`12.5`, never `12.500000000000`
or `1.25E1`); every amount also has a `*_rounded` twin in cents, rounded by largest remainder within
each source x invoice x currency, so the rounded column of any summary sums exactly to the invoice total
rounded to cents (`control_totals`). A column that is empty on every row of a file is left out of it
(e.g. the reporting-currency columns when no reporting currency is configured).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from apportion.db import fault_point, lit, open_published
from apportion.models.config import ApportionConfig
from apportion.models.focus import dimension_column
from apportion.sql import sql_text

SUMMARY_TABLES = (
    "allocation_by_team", "allocation_by_source_and_team", "allocation_by_project", "allocation_by_workload",
    "allocation_by_value_class", "shared_cost_splits", "untagged_spend", "control_totals",
)
LINES_TABLE = "allocation_lines"
EXPORT_TABLES = (*SUMMARY_TABLES, LINES_TABLE)
LINES_FORMATS = ("parquet", "csv")


def export_files(lines: str = "parquet") -> tuple[str, ...]:
    """The files of a pack: every summary as CSV and its Parquet twin, the line-level file in `lines` format."""
    return (*(f"{t}.{ext}" for t in SUMMARY_TABLES for ext in ("csv", "parquet")),
            f"{LINES_TABLE}.parquet" if lines == "parquet" else f"{LINES_TABLE}.csv.gz")


EXPORT_FILES = export_files("parquet")  # the default pack

# The bill's invoice identifier: the line item's InvoiceId (AWS bill_invoice_id, Azure InvoiceId, FOCUS
# InvoiceId); a GCP billing export identifies the invoice by its invoice.month (YYYYMM, the month built).
INVOICE_ID = ("coalesce(InvoiceId, case when x_SourceKind = 'gcp_billing' "
              "then replace(x_BillingMonth, '-', '') end)")
ROUNDING_GROUP = ("source", "invoice_id", "billing_currency")
DIMENSION_FILES = ("team", "project", "workload", "value_class")


class ExportError(Exception):
    """The pack cannot be written (no warehouse, or the month is not in it)."""


def warehouse_months(cfg: ApportionConfig) -> dict[str, list[str]]:
    """source -> the billing months the published warehouse holds for it ({} without a warehouse)."""
    if not cfg.duckdb_path.exists():
        return {}
    con = open_published(cfg)
    try:
        rows = con.execute("SELECT DISTINCT x_SourceName, x_BillingMonth FROM line_items ORDER BY 1, 2").fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = {}
    for source, month in rows:
        out.setdefault(source, []).append(month)
    return out


def check_month_built(cfg: ApportionConfig, month: str) -> None:
    """Raise ExportError unless the published warehouse holds `month` (the message lists the months it has)."""
    if not cfg.duckdb_path.exists():
        raise ExportError(f"no warehouse at {cfg.duckdb_path}; run `apportion run` first")
    built = sorted({m for ms in warehouse_months(cfg).values() for m in ms})
    if month not in built:
        raise ExportError(f"month {month} is not in the warehouse {cfg.duckdb_path} "
                          f"(it has: {', '.join(built) or 'none'}; `apportion months` lists what each source has)")


def export_month(cfg: ApportionConfig, month: str, out_dir: Path | None = None, lines: str | None = None) -> Path:
    """Write the finance pack for one month from the published warehouse; totals tie to the bill."""
    lines = lines or cfg.export_options.lines
    if lines not in LINES_FORMATS:
        raise ValueError(f"lines must be one of {', '.join(LINES_FORMATS)}, not {lines!r}")
    check_month_built(cfg, month)
    out = Path(out_dir) if out_dir else cfg.exports / month
    tmp = out.with_name(out.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    con = open_published(cfg)
    try:
        con.execute("SET TimeZone = 'UTC'")  # the line-level file reads a month of pieces: open_published bounds it
        con.execute("SET VARIABLE export_month = ?", [month])
        _write_pack(con, tmp, lines)
        __import__("apportion.close.exports").close.exports.write_deltas(cfg, con, tmp, month)  # issue 17
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
    __import__("apportion.close.exports").close.exports.keep_history(cfg, month, out)  # --as-of (issue 17)
    return out


def _dimensions(con) -> list[tuple[str, str]]:
    """(dimension name, allocations column) of the taxonomy dimensions the warehouse carries (x_Team + x_TeamReason)."""
    columns = [r[0] for r in con.execute("DESCRIBE allocations").fetchall()]
    return [(_snake(c[2:]), c) for c in columns if c.startswith("x_") and f"{c}Reason" in columns]


def _snake(name: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


def _write_pack(con, tmp: Path, lines: str) -> None:
    dims = _dimensions(con)
    columns = {c for _, c in dims}
    for name in DIMENSION_FILES:
        col = dimension_column(name)
        expr = f"coalesce({col}, 'unclassified')" if name == "value_class" else col
        if col not in columns:
            expr = "'unclassified'" if name == "value_class" else "'untagged'"
        cells = sql_text("exports/allocation_by_dimension.sql").format(
            invoice_id=INVOICE_ID, column=expr, name=name)
        con.execute(f"CREATE OR REPLACE TEMP TABLE cells AS {_rounded(cells, ['provider', name])}")
        _write_summary(con, _totals(name, ("billing_month", "billing_currency", name)),
                       tmp / f"allocation_by_{name}.csv")
        if name == "team":
            _write_summary(con, _totals(name, ("billing_month", "source", "provider", "billing_currency", name)),
                           tmp / "allocation_by_source_and_team.csv")
    untagged = sql_text("exports/untagged_spend.sql").format(
        invoice_id=INVOICE_ID,
        flags=",\n        ".join(f"({c} = 'untagged') as untagged_{n}" for n, c in dims),
        flag_names=", ".join(f"p.untagged_{n}" for n, _ in dims),
        any_untagged=" or ".join(f"{c} = 'untagged'" for _, c in dims) or "false",
        reason="concat_ws('; ', " + ", ".join(
            f"case when {c} = 'untagged' then '{n}: ' || coalesce({c}Reason, 'untagged') end" for n, c in dims) + ")"
        if dims else "null")
    keys = [f"untagged_{n}" for n, _ in dims] + ["reason", "account_id", "service", "resource_id"]
    con.execute(f"CREATE OR REPLACE TEMP TABLE cells AS {_rounded(untagged, ['_keep', *keys])}")
    _write_summary(con, "SELECT * EXCLUDE (_keep, invoice_id), invoice_id FROM cells "
                        "WHERE _keep AND NOT (billed_cost = 0 AND effective_cost = 0) "
                        "ORDER BY source, billing_currency, effective_cost DESC, " + ", ".join(keys),
                   tmp / "untagged_spend.csv", order=["billing_month", "source", "billing_currency", *keys[:-4],
                                                      "reason", "account_id", "account_name", "service", "resource_id",
                                                      "created_by", "invoice_id", "pieces", "billed_cost",
                                                      "effective_cost", "billed_cost_rounded",
                                                      "effective_cost_rounded"])
    con.execute("DROP TABLE cells")
    _write_summary(con, sql_text("exports/shared_cost_splits.sql"), tmp / "shared_cost_splits.csv")
    _write_summary(con, sql_text("exports/control_totals.sql").format(invoice_id=INVOICE_ID),
                   tmp / "control_totals.csv")
    _write_lines(con, sql_text("exports/allocation_lines.sql").format(invoice_id=INVOICE_ID), tmp, lines)


def _rounded(cells: str, keys: list[str]) -> str:
    """`cells` with billed_cost_rounded / effective_cost_rounded: cents by largest remainder within each
    source x invoice x currency (the group's rounded cells sum to its exact total rounded half away from
    zero; ties broken by the cell's keys, so the result is deterministic)."""
    group = ", ".join(ROUNDING_GROUP)
    order = ", ".join(f'"{k}"' for k in keys)
    parts, ranks, picks = [], [], []
    for amount, tag in (("billed_cost", "b"), ("effective_cost", "e")):
        parts.append(f"CAST(floor({amount} * 100) AS DECIMAL(38, 0)) * 0.01 AS _f{tag}")
        ranks.append(f"row_number() OVER (PARTITION BY {group} ORDER BY {amount} - _f{tag} DESC, {order}) AS _r{tag}, "
                     f"CAST((round(sum({amount}) OVER g, 2) - sum(_f{tag}) OVER g) * 100 AS BIGINT) AS _k{tag}")
        picks.append(f"CAST(_f{tag} + CASE WHEN _r{tag} <= _k{tag} THEN 0.01 ELSE 0 END AS DECIMAL(38, 2)) "
                     f"AS {amount}_rounded")
    return (f"WITH c AS ({cells}), f AS (SELECT *, {', '.join(parts)} FROM c), "
            f"r AS (SELECT *, {', '.join(ranks)} FROM f WINDOW g AS (PARTITION BY {group})) "
            f"SELECT * EXCLUDE (_fb, _fe, _rb, _re, _kb, _ke), {', '.join(picks)} FROM r")


def _totals(name: str, by: tuple[str, ...]) -> str:
    """Sum the rounded cells (table `cells`) to one row per `by`."""
    cols = ", ".join(by)
    return (f"SELECT {cols}, CAST(sum(pieces) AS BIGINT) AS pieces, sum(billed_cost) AS billed_cost, "
            "sum(effective_cost) AS effective_cost, sum(billed_cost_rounded) AS billed_cost_rounded, "
            "sum(effective_cost_rounded) AS effective_cost_rounded, any_value(reporting_currency) AS reporting_currency, "
            "sum(reporting_billed_cost) AS reporting_billed_cost, sum(reporting_effective_cost) AS reporting_effective_cost "
            f"FROM cells GROUP BY {cols} ORDER BY {', '.join(b for b in by if b != name)}, billed_cost DESC, {name}")


def _csv_select(con, relation: str, columns: list[str]) -> str:
    """SELECT of `columns` from `relation` with exact amounts as plain decimal text without trailing zeros."""
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {relation})").fetchall())
    out = []
    for c in columns:
        t = types[c]
        if t.startswith("DECIMAL") and not t.endswith(",2)"):  # cents columns keep their two places
            out.append(f"""CASE WHEN "{c}" IS NULL THEN NULL WHEN CAST("{c}" AS VARCHAR) LIKE '%.%' THEN """
                       f"""rtrim(rtrim(CAST("{c}" AS VARCHAR), '0'), '.') ELSE CAST("{c}" AS VARCHAR) END AS "{c}" """)
        else:
            out.append(f'"{c}"')
    return f"SELECT {', '.join(out)} FROM {relation}"


def _write_summary(con, query: str, dest: Path, order: list[str] | None = None) -> None:
    """A summary as CSV and its Parquet twin (same columns and rows); all-empty columns are left out."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE summary AS {query}")
    columns = [r[0] for r in con.execute("DESCRIBE summary").fetchall()]
    if order:
        columns = [c for c in order if c in columns] + [c for c in columns if c not in order]
    rows = con.execute("SELECT count(*) FROM summary").fetchone()[0]
    if rows:
        counts = con.execute("SELECT " + ", ".join(f'count("{c}")' for c in columns) + " FROM summary").fetchone()
        columns = [c for c, n in zip(columns, counts) if n]
    cols = ", ".join(f'"{c}"' for c in columns)
    con.execute(f"COPY (SELECT {cols} FROM summary) TO {lit(str(dest.with_suffix('.parquet')))} "
                "(FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"COPY ({_csv_select(con, 'summary', columns)}) TO {lit(str(dest))} (HEADER, DELIMITER ',')")
    con.execute("DROP TABLE summary")


def _write_lines(con, query: str, tmp: Path, lines: str) -> None:
    """The line-level file: Parquet (typed, exact), or gzip CSV; streamed, never held in memory."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW lines AS {query}")
    columns = [r[0] for r in con.execute("DESCRIBE lines").fetchall()]
    reporting = [c for c in columns if c.startswith("reporting_")]
    if reporting and not con.execute("SELECT count(x_ReportingCurrency) FROM (SELECT x_ReportingCurrency FROM allocations "
                                     "WHERE x_BillingMonth = getvariable('export_month') "
                                     "AND x_ReportingCurrency IS NOT NULL LIMIT 1)").fetchone()[0]:
        columns = [c for c in columns if c not in reporting]  # no reporting currency: no empty columns
    if lines == "parquet":
        cols = ", ".join(f'"{c}"' for c in columns)
        con.execute(f"COPY (SELECT {cols} FROM lines) TO {lit(str(tmp / (LINES_TABLE + '.parquet')))} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 50000)")
    else:
        con.execute(f"COPY ({_csv_select(con, 'lines', columns)}) TO {lit(str(tmp / (LINES_TABLE + '.csv.gz')))} "
                    "(HEADER, DELIMITER ',', COMPRESSION gzip)")
    con.execute("DROP VIEW lines")
