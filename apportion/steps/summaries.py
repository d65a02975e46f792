"""Step 3b, summaries: the month's aggregates written to the lake once, when their inputs change.

Per source x month (right after `allocate`, from that partition's line items, allocations and quarantine):
`summary_totals` (the warehouse's `ledger_totals`: counts, totals, deliveries and the lake versions they were read
from), `summary_spend` (`monthly_spend`), `summary_untagged` (`untagged_spend`), `summary_coverage`
(`allocation_coverage`). Per month (source `_all`: LLM invoices reconcile against another source's usage, GPU
pieces borrow another source's utilisation): the LLM and GPU unit-economics tables, and `summary_month_inputs`
(the versions they were read from).

Each summary records the versions of its inputs; `refresh` recomputes only the summaries whose inputs are no
longer the current versions, so a nightly run of the open months reads only those months' partitions, however
long the history. The warehouse (step 4) then puts views over the summaries' current versions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from apportion.db import bounded, connect, list_literal, lit
from apportion.lake import (
    ALLOCATIONS,
    LINE_ITEMS,
    QUARANTINE,
    current_files,
    discard_version,
    new_version,
    publish_version,
)
from apportion.models.config import ApportionConfig
from apportion.models.focus import null_select_list, select_list
from apportion.sql import sql_text

ALL_SOURCES = "_all"  # the source folder of per-month summaries (a source name never starts with '_')
TOTALS, SPEND, UNTAGGED, COVERAGE = "summary_totals", "summary_spend", "summary_untagged", "summary_coverage"
MONTH_INPUTS = "summary_month_inputs"
# warehouse table -> (lake table, SQL under sql/warehouse/)
PER_SOURCE = {"ledger_totals": TOTALS, "monthly_spend": SPEND, "untagged_spend": UNTAGGED,
              "allocation_coverage": COVERAGE}
PER_MONTH = {"llm_reconciliation": "summary_llm_reconciliation", "llm_unit_economics": "summary_llm_unit_economics",
             "gpu_usage": "summary_gpu_usage", "gpu_job_waste": "summary_gpu_job_waste",
             "gpu_unit_economics": "summary_gpu_unit_economics"}
INPUTS = (LINE_ITEMS, ALLOCATIONS, QUARANTINE)


@dataclass
class Snapshot:
    """The current versions' files of line items, allocations and quarantine, per (source, month)."""

    files: dict[tuple[str, str], dict[str, list[Path]]] = field(default_factory=dict)

    @classmethod
    def of(cls, lake: Path, files: dict[str, list[Path]] | None = None) -> Snapshot:
        files = files if files is not None else {t: current_files(lake, t) for t in INPUTS}
        out: dict[tuple[str, str], dict[str, list[Path]]] = defaultdict(lambda: {t: [] for t in INPUTS})
        for table, paths in files.items():
            for p in paths:
                out[_source_month(p)][table].append(p)
        return cls(dict(out))

    def versions(self, key: tuple[str, str]) -> tuple[str | None, ...]:
        return tuple(version_of(self.files[key][t]) for t in INPUTS)

    def months(self) -> list[str]:
        return sorted({m for _, m in self.files})


def _source_month(path: Path) -> tuple[str, str]:
    parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in path.parts if "=" in p}
    return parts["x_SourceName"], parts["x_BillingMonth"]


def version_of(files: list[Path]) -> str | None:
    """The version the files are: their folder's name and a digest of each file's name, size and modification
    time (None: no partition). A file rewritten in place (a bad write, a hand edit) is a new version: its
    summaries are recomputed and the blocking checks see what the file now holds."""
    if not files:
        return None
    h = hashlib.sha1()
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return f"{files[0].parent.name}#{h.hexdigest()[:12]}"


def lake_views(con, li: list[Path], al: list[Path], q: list[Path], temp: bool = True) -> None:
    """line_items, allocations and quarantined_rows over exactly these lake files: the published file's views
    (temp=False, apportion/steps/warehouse.py) and a summary's own (temp views in its connection)."""
    parts = {"temp": "temp" if temp else ""}
    if li:
        src = f"read_parquet({list_literal(li)}, union_by_name = true)"
        produced = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        con.execute(sql_text("warehouse/create_line_items.sql").format(
            columns=select_list(available=produced), source=src, **parts))
    else:
        con.execute(sql_text("warehouse/create_line_items.sql").format(
            columns=null_select_list(), source="(select 1) as none where false", **parts))
    # no pieces: the line items' shape, no rows (totals still compare them)
    con.execute(sql_text("warehouse/create_allocations.sql").format(
        source=f"read_parquet({list_literal(al)}, union_by_name = true)" if al else "line_items where false", **parts))
    con.execute(sql_text("warehouse/create_quarantined_rows.sql").format(
        source=f"read_parquet({list_literal(q)}, union_by_name = true)" if q else "empty", **parts))


def dimensions(con) -> list[str]:
    """The allocations' dimension columns (x_Team with its x_TeamReason), in their order."""
    cols = [r[0] for r in con.execute("DESCRIBE allocations").fetchall()]
    return [c for c in cols if c.startswith("x_") and f"{c}Reason" in cols]


def dimension_union(dim_columns: list[str], untagged_only: bool) -> str:
    """allocations unpivoted to (dimension, value, reason, the piece's columns), one SELECT per dimension."""
    parts = []
    for col in dim_columns:
        name = _dimension_name(col)
        # spread pieces stay listed: spreading makes them attributed, never invisible
        where = f"WHERE {col} = 'untagged' OR {col}Reason LIKE 'spread:%'" if untagged_only else ""
        parts.append(f"SELECT {lit(name)} AS dimension, {col} AS value, {col}Reason AS reason, a.* "
                     f"FROM allocations AS a {where}")
    return "\n        UNION ALL BY NAME\n        ".join(parts)


def _dimension_name(col: str) -> str:
    name = col[2:]
    return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


def _write(con, cfg: ApportionConfig, table: str, source: str, month: str, query: str) -> Path:
    tmp = new_version(cfg.lake, table, source, month)
    try:
        con.execute(f"COPY ({query}) TO {lit(str(tmp / 'part-0.parquet'))} (FORMAT parquet, COMPRESSION zstd)")
    except BaseException:
        discard_version(tmp)
        raise
    return tmp


@contextmanager
def _published_together():
    """Collect the versions written inside; put them in force together at the end (the freshness marker,
    written last, last), or discard every one of them when anything fails."""
    written: list[Path] = []
    try:
        yield written
        for tmp in written:
            publish_version(tmp)
    except BaseException:
        for tmp in written:
            if tmp.exists():
                discard_version(tmp)
        raise


def summarise(cfg: ApportionConfig, source: str, month: str, snapshot: Snapshot | None = None) -> dict[str, int]:
    """Write the per-source summaries of one source x month from its current line items, allocations and
    quarantine (or the snapshot's). Returns rows per summary."""
    snapshot = snapshot or Snapshot.of(cfg.lake, {t: current_files(cfg.lake, t, month, source) for t in INPUTS})
    files = snapshot.files.get((source, month), {t: [] for t in INPUTS})
    li_v, al_v, q_v = (version_of(files[t]) for t in INPUTS)
    with closing(connect(cfg)) as con, _published_together() as written:
        lake_views(con, files[LINE_ITEMS], files[ALLOCATIONS], files[QUARANTINE])
        dims = dimensions(con) if files[ALLOCATIONS] else []
        queries = {}
        if dims:
            queries[SPEND] = sql_text("warehouse/monthly_spend.sql").format(dimensions=", ".join(dims))
            # one dimension at a time: its rows are grouped by resource, so one hash table over every dimension
            # outgrew the memory limit at 50 M rows (the dimension is a grouping key: the parts add up)
            con.execute(sql_text("warehouse/untagged_creators.sql"))
            queries[UNTAGGED] = [sql_text("warehouse/untagged_spend.sql").format(
                dimension_union=dimension_union([d], untagged_only=True)) for d in dims]
            queries[COVERAGE] = sql_text("warehouse/allocation_coverage.sql").format(
                dimension_union=dimension_union(dims, untagged_only=False))
        queries[TOTALS] = sql_text("warehouse/ledger_totals.sql").format(
            source=lit(source), month=lit(month), li_version=_lit_or_null(li_v), al_version=_lit_or_null(al_v),
            q_version=_lit_or_null(q_v))
        rows = {}
        for table, query in queries.items():  # TOTALS last: it marks the summaries fresh
            first, *more = query if isinstance(query, list) else [query]
            con.execute(f"CREATE OR REPLACE TEMP TABLE s AS {first}")
            for part in more:
                con.execute(f"INSERT INTO s BY NAME {part}")
            rows[table] = con.execute("SELECT count(*) FROM s").fetchone()[0]
            written.append(_write(con, cfg, table, source, month, "SELECT * FROM s"))
    return rows


def summarise_month(cfg: ApportionConfig, month: str, snapshot: Snapshot) -> dict[str, int]:
    """Write the per-month summaries (every source of the month: LLM and GPU unit economics)."""
    keys = sorted(k for k in snapshot.files if k[1] == month)
    files = {t: [f for k in keys for f in snapshot.files[k][t]] for t in INPUTS}
    with closing(connect(cfg)) as con, _published_together() as written:
        con.execute("SET VARIABLE reconciliation_tolerance = ?", [cfg.reconciliation_tolerance])
        lake_views(con, files[LINE_ITEMS], files[ALLOCATIONS], files[QUARANTINE])
        rows = {}
        if files[ALLOCATIONS] and {"x_Team", "x_Project", "x_Workload", "x_AllocatedRatio"} <= set(
                r[0] for r in con.execute("DESCRIBE allocations").fetchall()):
            for name, table in PER_MONTH.items():  # gpu_job_waste and gpu_unit_economics read gpu_usage
                con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql_text(f'warehouse/{name}.sql')}")
                rows[table] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                written.append(_write(con, cfg, table, ALL_SOURCES, month, f"SELECT * FROM {name}"))
        inputs = [(s, *snapshot.versions((s, m))) for s, m in keys]
        con.execute("CREATE OR REPLACE TEMP TABLE inputs (x_SourceName VARCHAR, line_items_version VARCHAR, "
                    "allocations_version VARCHAR, quarantine_version VARCHAR)")
        con.executemany("INSERT INTO inputs VALUES (?, ?, ?, ?)", inputs)
        written.append(_write(con, cfg, MONTH_INPUTS, ALL_SOURCES, month, "SELECT * FROM inputs"))
    return rows


def _lit_or_null(v: str | None) -> str:
    return "NULL::VARCHAR" if v is None else lit(v)


def recorded(cfg: ApportionConfig) -> tuple[dict[tuple[str, str], tuple], dict[str, set[tuple]]]:
    """What the current summaries were computed from: (source, month) -> input versions, and month -> the set of
    (source, versions...) of the per-month summaries."""
    per_source: dict[tuple[str, str], tuple] = {}
    per_month: dict[str, set[tuple]] = {}
    con = duckdb.connect(config=bounded(cfg))
    try:
        totals = current_files(cfg.lake, TOTALS)
        if totals:
            for s, m, *v in con.execute(
                    "SELECT x_SourceName, x_BillingMonth, line_items_version, allocations_version, quarantine_version "
                    f"FROM read_parquet({list_literal(totals)}, union_by_name = true, hive_partitioning = false)").fetchall():
                per_source[(s, m)] = tuple(v)
        inputs = current_files(cfg.lake, MONTH_INPUTS)
        if inputs:
            for path in inputs:
                month = _source_month(path)[1]
                per_month[month] = {tuple(r) for r in con.execute(
                    f"SELECT * FROM read_parquet({lit(str(path))}, hive_partitioning = false)").fetchall()}
    finally:
        con.close()
    return per_source, per_month


def refresh(cfg: ApportionConfig, snapshot: Snapshot) -> dict[str, list]:
    """Recompute the summaries whose inputs are not the snapshot's versions (new or changed months, a lake from
    before summaries, a run stopped between allocate and summarise). Returns what was recomputed."""
    per_source, per_month = recorded(cfg)
    stale = [k for k in sorted(snapshot.files) if per_source.get(k) != snapshot.versions(k)]
    for source, month in stale:
        summarise(cfg, source, month, snapshot)
    months = []
    for month in snapshot.months():
        want = {(s, *snapshot.versions((s, m))) for s, m in snapshot.files if m == month}
        if per_month.get(month) != want:
            summarise_month(cfg, month, snapshot)
            months.append(month)
    return {"source_months": stale, "months": months}


def summary_files(cfg: ApportionConfig, snapshot: Snapshot) -> dict[str, list[Path]]:
    """The current summary files of the snapshot's partitions: warehouse table -> files."""
    keys = set(snapshot.files)
    months = set(snapshot.months())
    out = {}
    for name, table in PER_SOURCE.items():
        out[name] = [f for f in current_files(cfg.lake, table) if _source_month(f) in keys]
    for name, table in PER_MONTH.items():
        out[name] = [f for f in current_files(cfg.lake, table, source=ALL_SOURCES) if _source_month(f)[1] in months]
    return out


def create_unit_economics(con, family: str | None = None) -> None:
    """Create the per-month unit-economics tables (family 'llm', 'gpu', or both) as tables on `con`, from its
    line_items, allocations and quarantined_rows (replacing the warehouse's views of the same names): the SQL
    the summaries run per month, run on a whole warehouse (tests, ad-hoc analysis)."""
    kinds = dict(con.execute("SELECT view_name, 'VIEW' FROM duckdb_views() WHERE NOT internal UNION ALL "
                             "SELECT table_name, 'TABLE' FROM duckdb_tables()").fetchall())
    if family in (None, "gpu") and "gpu_top_idle_jobs" in kinds:
        con.execute("DROP VIEW gpu_top_idle_jobs")
    for name in PER_MONTH:
        if family and not name.startswith(family):
            continue
        if name in kinds:
            con.execute(f"DROP {kinds[name]} {name}")
        con.execute(f"CREATE TABLE {name} AS {sql_text(f'warehouse/{name}.sql')}")
    if family in (None, "gpu"):
        con.execute(sql_text("warehouse/gpu_top_idle_jobs.sql"))
