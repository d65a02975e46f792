"""Shared by the Azure, GCP and FOCUS connectors: file readers, month discovery, landing blobs.

The blob stores (`AzureBlobStore`, `GcsStore`, `open_cloud_store`) are in `connectors.stores`.
* `reader_sql` reads one landed file (CSV, CSV.gz, Parquet, JSON lines) with DuckDB; CSV is read
  as text so that nothing is guessed: the line-item SQL parses and validates every value.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from apportion.connectors.base import Connector, Delivery, SourceError, _point, safe_dirname
from apportion.connectors.sqltext import quote_ident, quote_literal  # noqa: F401  (re-exported for the connectors)
from apportion.sql import sql_text

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.gzip", ".gz")
PARQUET_SUFFIXES = (".parquet", ".snappy.parquet", ".parq")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")

# A billing month in a path segment: BILLING_PERIOD=2026-10, invoice_month=202610, 2026-10, 202610_..., 20261001-20261031
MONTH_IN_PATH = re.compile(
    r"(?:^|[/_=.-])(?:billing_period=|invoice_month=|invoice\.month=|month=)?"
    r"(20\d\d)-?(0[1-9]|1[0-2])(?:\d\d)?(?=$|[/_.=-])",
    re.I,
)


def file_format(name: str) -> str | None:
    low = name.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(JSON_SUFFIXES):
        return "json"
    if low.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def reader_sql(path: Path, fmt: str | None = None, delimiter: str = ",", strict: bool | None = None) -> str:
    """A DuckDB table function reading one local file; CSV columns all VARCHAR (BOM stripped).

    CSV rows with the wrong number of fields: `strict=None` (default) pads / ignores them; `strict=True`
    makes them an error (the caller has checked there are none); `strict=False` reads them one row per
    record, padded, in file order (single-threaded), so that a caller who located them can quarantine them.
    """
    fmt = fmt or file_format(path.name)
    p = quote_literal(str(path))
    if fmt == "parquet":
        return f"read_parquet({p}, file_row_number = true)"
    if fmt == "json":
        return f"read_json({p}, format = 'newline_delimited', records = true, union_by_name = true, maximum_depth = 1)"
    shape = {None: "null_padding = true, strict_mode = false",
             True: "null_padding = false, strict_mode = true",
             False: "null_padding = true, strict_mode = false, parallel = false"}[strict]
    return (f"read_csv({p}, all_varchar = true, header = true, compression = 'auto', delim = {quote_literal(delimiter)}, "
            f"quote = '\"', escape = '\"', {shape})")


def row_number_sql(fmt: str) -> str:
    return "file_row_number + 1" if fmt == "parquet" else "row_number() OVER ()"


def describe(con, reader: str, key: str) -> dict[str, str]:
    """Column name -> DuckDB type of a reader; SourceError naming the file when it cannot be read."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        raise SourceError(f"cannot read {key}: {first_line(exc)}", file=key) from None
    return {name: typ for name, typ, *_ in rows if name != "file_row_number"}


def load_cloud_macros(con) -> None:
    """Create the helpers of sql/macros/cloud_macros.sql on this connection."""

    con.execute(sql_text("macros/cloud_macros.sql"))


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def digest(objects) -> str:
    h = hashlib.sha1()
    for o in sorted(objects, key=lambda o: o.key):
        h.update(f"{o.key}\0{o.etag}\0".encode())
    return h.hexdigest()[:16]


def month_from_path(key: str) -> str | None:
    """The last billing month named in a key's folders or file name (None when there is none)."""
    found = None
    for m in MONTH_IN_PATH.finditer(key):
        found = f"{m.group(1)}-{m.group(2)}"
    return found


def months_of_files(objects, months_in_files) -> list[str]:
    """The months a folder of exports holds: named by each file's path, or, for files whose path names
    none, read from the files themselves by `months_in_files(objects) -> set[str]`."""
    months: set[str] = set()
    unlabelled = []
    for o in objects:
        m = month_from_path(o.key)
        if m:
            months.add(m)
        else:
            unlabelled.append(o)
    if unlabelled:
        months |= months_in_files(unlabelled)
    return sorted(months)


def column_picker(columns, aliases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """canonical name -> the file's column, matching names case-insensitively, first alias wins."""
    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(c.lower().replace(" ", "").replace("_", ""), c)
    picked: dict[str, str] = {}
    for canon, names in aliases.items():
        for n in names:
            hit = by_lower.get(n.lower().replace("_", ""))
            if hit is not None:
                picked[canon] = hit
                break
    return picked


def varchar_expr(col: str | None, typ: str | None = None) -> str:
    """A file column as trimmed text; structured (MAP/STRUCT/LIST) values become JSON text."""
    if col is None:
        return "CAST(NULL AS VARCHAR)"
    ref = quote_ident(col)
    if typ and (typ.startswith(("MAP", "STRUCT")) or typ.endswith("[]")):
        return f"CAST(to_json({ref}) AS VARCHAR)"
    if typ and typ.startswith("TIMESTAMP"):
        return f"strftime(CAST({ref} AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%SZ')"
    return f"nullif(trim(CAST({ref} AS VARCHAR)), '')"


# ----------------------------------------------------------------------------------- blob stores
def land_blobs(connector: Connector, month: str, raw_root: Path, blobs: dict[str, bytes], layout: str,
               prefix: str) -> Delivery:
    """Land API response pages (key -> bytes as received) as the month's delivery; same content = same id."""
    h = hashlib.sha1()
    for key in sorted(blobs):
        h.update(key.encode() + b"\0" + hashlib.sha1(blobs[key]).digest())
    delivery_id = f"{prefix}-{h.hexdigest()[:16]}"
    month_dir = raw_root / connector.source.name / month
    target = month_dir / safe_dirname(delivery_id)
    if (target / "delivery.json").exists():
        old = json.loads((target / "delivery.json").read_text())
        _point(month_dir, "LANDED", target.name)
        return Delivery(**{**old, "reused": True})
    staging = month_dir / (safe_dirname(delivery_id) + ".landing")
    if staging.exists():
        shutil.rmtree(staging)
    fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    objects = []
    for key in sorted(blobs):
        dest = staging / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blobs[key])
        objects.append({"key": key, "size": len(blobs[key]), "etag": hashlib.md5(blobs[key]).hexdigest(),
                        "last_modified": fetched_at})
    staging.mkdir(parents=True, exist_ok=True)  # a month with no pages is still a delivery
    delivery = Delivery(source=connector.source.name, kind=connector.kind, month=month, delivery_id=delivery_id,
                        layout=layout, manifest_key=None, objects=objects, fetched_at=fetched_at, local_dir=str(target))
    (staging / "delivery.json").write_text(json.dumps(asdict(delivery), indent=2))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    with open(month_dir / "deliveries.jsonl", "a") as log:
        log.write(json.dumps({k: v for k, v in asdict(delivery).items() if k != "reused"}) + "\n")
    _point(month_dir, "LANDED", target.name)
    return delivery
