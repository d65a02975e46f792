"""The Parquet lake: one folder per table, source and billing month, holding versions of the partition.

`lake/<table>/x_SourceName=<source>/x_BillingMonth=<month>/` holds version folders (`v-<time>-<id>/`)
and a `CURRENT` file naming the one in force. A build writes a new version beside the others and then
switches `CURRENT` (an atomic file replace), so a failed or interrupted build leaves the previous version
in force. The published warehouse's views name the exact files of the versions it was built from;
versions that neither the published nor the previous warehouse uses are pruned after each publish, so
an analyst holding the previous file keeps a consistent picture. Temporary names carry host and pid so
a later run can clean up what a crashed run left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from apportion.db import list_literal
from apportion.models.config import ApportionConfig

LINE_ITEMS = "line_items"
ALLOCATIONS = "allocations"
QUARANTINE = "quarantine"
TABLES = (LINE_ITEMS, ALLOCATIONS, QUARANTINE)
CURRENT = "CURRENT"


def partition_root(lake: Path, table: str, source: str, month: str) -> Path:
    """The folder of one source x month partition of a table (its versions and CURRENT)."""
    return lake / table / f"x_SourceName={source}" / f"x_BillingMonth={month}"


def current_version(root: Path) -> Path | None:
    """The version folder CURRENT names; a partition written before versions existed is its own version."""
    pointer = root / CURRENT
    if pointer.is_file():
        version = root / pointer.read_text().strip()
        return version if version.is_dir() else None
    if root.is_dir() and any(root.glob("*.parquet")):
        return root
    return None


def partition_dir(cfg: ApportionConfig, table: str, source: str, month: str) -> Path:
    """The folder holding the current version's Parquet files (a path that does not exist when the
    partition was never built)."""
    root = partition_root(cfg.lake, table, source, month)
    return current_version(root) or root / "not-built"


def partition_files(root: Path) -> list[Path]:
    version = current_version(root)
    return sorted(version.glob("*.parquet")) if version else []


def current_files(lake: Path, table: str, month: str | None = None, source: str | None = None) -> list[Path]:
    """The Parquet files of the current version of every partition of `table` (optionally one month or
    one source)."""
    pattern = f"{table}/x_SourceName={source or '*'}/x_BillingMonth={month or '????-??'}"
    return [f for root in sorted(lake.glob(pattern)) if root.is_dir() for f in partition_files(root)]


def work_suffix() -> str:
    """`<host>-<pid>-<random>`: names a run's temporary files so that cleanup can tell a crashed run's
    leftovers (this host, process gone) from the work of a run still going."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def new_version(lake: Path, table: str, source: str, month: str) -> Path:
    """A new, empty version folder of the partition, under a temporary name until `publish_version`."""
    root = partition_root(lake, table, source, month)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = root / f"v-{stamp}-{uuid.uuid4().hex[:8]}.tmp-{work_suffix()}"
    tmp.mkdir(parents=True)
    return tmp


def publish_version(tmp: Path) -> Path:
    """Put a written version in force: name it, then switch CURRENT to it (atomic file replace)."""
    version = tmp.with_name(tmp.name.split(".tmp-", 1)[0])
    tmp.rename(version)
    pointer_tmp = version.parent / f".{CURRENT}.tmp-{work_suffix()}"
    pointer_tmp.write_text(version.name + "\n")
    os.replace(pointer_tmp, version.parent / CURRENT)
    return version


def discard_version(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def prune_versions(lake: Path, keep: set[Path]) -> list[Path]:
    """Remove version folders that are neither current nor in `keep` (the versions the published and
    the previous warehouse file read) nor frozen by a month close. Returns what was removed."""
    keep = keep | closed_month_versions(lake)
    removed = []
    for table in TABLES:
        for root in lake.glob(f"{table}/x_SourceName=*/x_BillingMonth=????-??"):
            current = current_version(root)
            for version in root.glob("v-*"):
                if not version.is_dir() or ".tmp-" in version.name or version == current:
                    continue
                if version.resolve() not in keep:
                    shutil.rmtree(version, ignore_errors=True)
                    removed.append(version)
    return removed


def closed_month_versions(lake: Path) -> set[Path]:
    """The versions a closed month was frozen from (`<warehouse>/closed/<month>/manifest.json`, docs/close.md):
    never pruned while the month stays closed."""
    out = set()
    for path in (lake.parent / "closed").glob("????-??/manifest.json"):
        out |= {Path(v).resolve() for v in json.loads(path.read_text()).get("lake_versions", [])}
    return out


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
    roots = [cfg.warehouse, cfg.exports, *[p for p in (cfg.lake.glob("*/x_SourceName=*") if cfg.lake.exists() else [])],
             *[p for p in (cfg.lake.glob("*/x_SourceName=*/x_BillingMonth=*") if cfg.lake.exists() else [])]]
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
    have = {t: current_files(cfg.lake, t) for t in (LINE_ITEMS, ALLOCATIONS)}
    if not have[LINE_ITEMS] and not have[ALLOCATIONS]:
        return []
    con = duckdb.connect()
    try:
        parts = []
        for table, files in have.items():
            if not files:
                parts.append("SELECT NULL::VARCHAR s, NULL::VARCHAR m, NULL::VARCHAR d WHERE false")
                continue
            reader = f"read_parquet({list_literal(files)}, union_by_name = true)"
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
