"""The Parquet lake: one folder per table, source and billing month, holding versions of the partition.

`lake/<table>/x_SourceName=<source>/x_BillingMonth=<month>/` holds version folders (`v-<time>-<id>/`)
and a `CURRENT` file naming the one in force. A build writes a new version beside the others and then
switches `CURRENT` (an atomic file replace), so a failed or interrupted build leaves the previous version
in force. The published warehouse's views name the exact files of the versions it was built from;
versions that neither the published nor the previous warehouse uses are pruned after each publish, so
an analyst holding the previous file keeps a consistent picture. Temporary names carry host and pid so
a later run can clean up what a crashed run left.

With `lake:` on object storage (apportion/storage.py) the object store is the system of record and
`cfg.lake` its local cache: `publish_version` uploads the version under its final prefix, then PUTs the
`CURRENT` object (atomic), then switches the local pointer; readers (`current_version`, `current_files`)
GET the pointers and download only the versions the cache does not hold (versions are immutable).
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

from apportion.db import bounded, fault_point, list_literal
from apportion.models.config import LAKE_WAREHOUSE, ApportionConfig
from apportion.storage import Remote, process_alive, remote_for, work_suffix, write_pointer

LINE_ITEMS = "line_items"
ALLOCATIONS = "allocations"
QUARANTINE = "quarantine"
# Summaries (apportion/steps/summaries.py): per source x month, and per month (source `_all`, every source of the
# month together); written once when their inputs change, the warehouse only puts views over them.
SUMMARY_TABLES = ("summary_totals", "summary_spend", "summary_untagged", "summary_coverage", "summary_month_inputs",
                  "summary_llm_reconciliation", "summary_llm_unit_economics", "summary_gpu_usage",
                  "summary_gpu_job_waste", "summary_gpu_unit_economics")
TABLES = (LINE_ITEMS, ALLOCATIONS, QUARANTINE, *SUMMARY_TABLES)
CURRENT = "CURRENT"


def partition_root(lake: Path, table: str, source: str, month: str) -> Path:
    """The folder of one source x month partition of a table (its versions and CURRENT)."""
    return lake / table / f"x_SourceName={source}" / f"x_BillingMonth={month}"


def _lake_remote(root: Path) -> tuple[Path, Remote] | None:
    """(lake, object store) when the partition folder `root` belongs to a lake kept on object storage."""
    if len(root.parts) < 4:
        return None
    lake = root.parents[2]
    remote = remote_for(lake)
    return (lake, remote) if remote else None


def _sync_partition(lake: Path, remote: Remote, root: Path, name: str | None,
                    files: list[str] | None = None) -> Path | None:
    """Bring the local cache of one partition to the object store's CURRENT `name` (downloading that version if
    the cache lacks it) and return the local version folder; None when the partition has no CURRENT."""
    if not name:
        return None
    version = root / name
    if not version.is_dir():
        remote.download_dir(version.relative_to(lake).as_posix(), version, files)
    pointer = root / CURRENT
    if not pointer.is_file() or pointer.read_text().strip() != name:
        write_pointer(pointer, name)
    return version


def current_version(root: Path) -> Path | None:
    """The version folder CURRENT names; a partition written before versions existed is its own version.
    On object storage, the CURRENT object decides (the version is cached locally on first read)."""
    on_remote = _lake_remote(root)
    if on_remote:
        lake, remote = on_remote
        name = remote.get_text(f"{root.relative_to(lake).as_posix()}/{CURRENT}")
        return _sync_partition(lake, remote, root, name.strip() if name else None)
    return _local_current_version(root)


def _local_current_version(root: Path) -> Path | None:
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
    remote = remote_for(lake)
    if remote:
        return [f for version in _sync_table(lake, remote, table, month, source) for f in sorted(version.glob("*.parquet"))]
    return [f for root in sorted(lake.glob(pattern)) if root.is_dir() for f in partition_files(root)]


def _remote_partitions(remote: Remote, table: str, source: str | None = None) -> dict[str, dict[str, list[str]]]:
    """One listing of a table on the object store: partition folder (relative to the lake) -> version name ->
    its object keys; the CURRENT object is listed under the version name CURRENT."""
    prefix = f"{table}/x_SourceName={source}" if source else table
    parts: dict[str, dict[str, list[str]]] = {}
    for key, _size in remote.list_files(prefix):
        bits = key.split("/")
        if len(bits) < 4 or not bits[1].startswith("x_SourceName=") or not bits[2].startswith("x_BillingMonth="):
            continue  # quarantine/files/... (copies of unusable raw files) is not a partition
        parts.setdefault("/".join(bits[:3]), {}).setdefault(bits[3], []).append(key)
    return parts


def _sync_table(lake: Path, remote: Remote, table: str, month: str | None, source: str | None) -> list[Path]:
    """The local folders of the current versions of every partition of `table` on the object store (optionally
    one month or one source), downloading the versions the cache does not hold."""
    out = []
    for rel, versions in sorted(_remote_partitions(remote, table, source).items()):
        if CURRENT not in versions or (month and not rel.endswith(f"x_BillingMonth={month}")):
            continue
        if not re.fullmatch(r"\d{4}-\d{2}", rel.rsplit("=", 1)[1]):
            continue
        name = (remote.get_text(f"{rel}/{CURRENT}") or "").strip()
        version = _sync_partition(lake, remote, lake / rel, name, versions.get(name))
        if version is not None:
            out.append(version)
    return out




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
    on_remote = _lake_remote(version.parent)
    if on_remote:  # the object store is the record: upload the version whole, then switch its CURRENT object
        lake, remote = on_remote
        rel = version.parent.relative_to(lake).as_posix()
        remote.upload_dir(version, f"{rel}/{version.name}")
        fault_point("lake:uploaded")
        remote.put_bytes(f"{rel}/{CURRENT}", (version.name + "\n").encode())
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
            current = _local_current_version(root)  # the cache's view: the object store is pruned below
            for version in root.glob("v-*"):
                if not version.is_dir() or ".tmp-" in version.name or version == current:
                    continue
                if version.resolve() not in keep:
                    shutil.rmtree(version, ignore_errors=True)
                    removed.append(version)
    remote = remote_for(lake)
    if remote:
        removed += _prune_remote(lake, remote, keep)
    return removed


KEPT = "_published"  # on the object store: what each warehouse build kept (the versions its files read)


def _remote_keep(lake: Path, remote: Remote, keep: set[Path]) -> set[str]:
    """Record this build's kept versions on the object store (`_published/<time>.json`) and return those of the last
    two records: the warehouse may be built on another machine next time (an ephemeral pod), whose local
    files know nothing of the versions the previous published file reads."""
    rels = sorted(p.relative_to(lake.resolve()).as_posix() for p in keep if p.is_relative_to(lake.resolve()))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    remote.put_bytes(f"{KEPT}/{stamp}-{uuid.uuid4().hex[:8]}.json", json.dumps(rels).encode())
    records = sorted(k for k, _ in remote.list_files(KEPT) if k.endswith(".json"))
    kept: set[str] = set()
    for key in records[-2:]:
        kept |= set(json.loads(remote.get_text(key) or "[]"))
    for key in records[:-2]:
        remote.delete_prefix(key)
    return kept


def _prune_remote(lake: Path, remote: Remote, keep: set[Path]) -> list[Path]:
    """On the object store, remove the versions older than the partition's CURRENT that neither this nor the previous
    warehouse build kept (nor a month close). A version newer than CURRENT may be an upload still going on
    elsewhere: it stays until a later version is current."""
    removed = []
    kept = _remote_keep(lake, remote, keep)
    for table in TABLES:
        for rel, versions in _remote_partitions(remote, table).items():
            current = (remote.get_text(f"{rel}/{CURRENT}") or "").strip() if CURRENT in versions else ""
            for name in versions:
                if not name.startswith("v-") or not current or name >= current:
                    continue
                if f"{rel}/{name}" not in kept and (lake / rel / name).resolve() not in keep:
                    remote.delete_prefix(f"{rel}/{name}")
                    removed.append(lake / rel / name)
    return removed


def closed_month_versions(lake: Path) -> set[Path]:
    """The versions a closed month was frozen from (`<warehouse>/closed/<month>/manifest.json`, docs/close.md):
    never pruned while the month stays closed. (`lake:` may be a folder outside the warehouse folder.)"""
    out = set()
    for path in (LAKE_WAREHOUSE.get(lake.resolve(), lake.parent) / "closed").glob("????-??/manifest.json"):
        out |= {Path(v).resolve() for v in json.loads(path.read_text()).get("lake_versions", [])}
    return out


LEFTOVER = re.compile(r"\.(tmp|old|building)-(?P<host>[^-]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.wal)?$")


LEGACY_LEFTOVER = re.compile(r"\.(tmp|old|building)-[0-9a-f]{8}(\.wal)?$")  # before names carried host and pid


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
                dead = m["host"] == host and not process_alive(int(m["pid"]))
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
    con = duckdb.connect(config=bounded(cfg))
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
