"""DuckDB connections for the steps: bounded memory, UTC, the shared macros; the published warehouse
opened read-only; quoting helpers; the fault points the crash tests use."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from apportion.models.config import ApportionConfig
from apportion.sql import sql_text


def connect(cfg: ApportionConfig | None = None, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(database, config=bounded(cfg))
    con.execute("SET TimeZone = 'UTC'")
    # Row order carries no meaning in the lake (x_LineId does); not preserving it saves memory on big months.
    con.execute("SET preserve_insertion_order = false")
    con.execute(sql_text("macros/create_macros.sql"))
    return con


def bounded(cfg: ApportionConfig | None = None) -> dict[str, str]:
    """The settings every DuckDB connection of a run opens with (steps, the published file read back, the lake
    checks): memory bounded by memory_limit(), spilling to the warehouse's temp folder. A connection without them
    takes DuckDB's default, 80 % of the machine: at 50 M rows the report's read-back peaked at 2 GB."""
    out = {"memory_limit": memory_limit()}
    if cfg is not None:
        tmp = cfg.warehouse / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        out["temp_directory"] = str(tmp)
    return out


@contextmanager
def one_commit(con: duckdb.DuckDBPyConnection):
    """Many small catalog writes (the COMMENT ONs of a warehouse) as one transaction: on a file-backed database
    every auto-committed statement is a commit of its own (~2 ms each; ~1 s of a warehouse build's fixed cost)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def memory_limit() -> str:
    """DuckDB's memory limit for a step: bounded so a big month streams (and spills) instead of growing with the
    bill. 800 MB keeps a 20 M-row month under 1.5 GB of process RSS (1 GB peaked at 1,560 MiB) at the same
    speed (bench/RESULTS.md); `APPORTION_MEMORY_LIMIT` overrides it."""
    return os.environ.get("APPORTION_MEMORY_LIMIT") or "800MB"  # set but empty: the default


def list_literal(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in sorted(paths)) + "]"


def lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def set_aside_stale_wal(path: Path) -> None:
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
        con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    except duckdb.Error as exc:
        if "WAL" not in str(exc) and "wal" not in str(exc):
            raise
        set_aside_stale_wal(cfg.duckdb_path)
        con = duckdb.connect(str(cfg.duckdb_path), read_only=True)
    # set, not passed to connect(): DuckDB refuses a second connection to a file with another configuration (an
    # analyst's session, or a test's, holding the file open in the same process)
    for name, value in bounded(cfg).items():
        con.execute(f"SET {name} = ?", [value])
    return con


def fault_point(name: str) -> None:
    """Fault injection for the crash tests: when APPORTION_FAULT_AT names this point, the process dies
    here at once (SIGKILL, no cleanup), as a killed worker or a power cut would leave it."""
    if os.environ.get("APPORTION_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
