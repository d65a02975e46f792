"""Shared by the Azure, GCP and FOCUS connectors: blob stores, file readers, month discovery.

* `AzureBlobStore` (azure-storage-blob) and `GcsStore` (google-cloud-storage) are read-only
  `ObjectStore`s like the S3 one in `connectors.objectstore`; `open_cloud_store` picks one from the
  URI scheme (`az://`, `abfs[s]://`, `https://<account>.blob.core.windows.net/`, `gs://`) and falls
  back to `objectstore.open_store` (s3://, file://, plain paths).
* Credentials come from the environment only (connection string / SAS / key variables, the SDK's
  default chain); nothing here logs or returns them.
* `reader_sql` reads one landed file (CSV, CSV.gz, Parquet, JSON lines) with DuckDB; CSV is read
  as text so that nothing is guessed: the line-item SQL parses and validates every value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from connectors.aws_cur import quote_ident, quote_literal  # noqa: F401  (re-exported for the connectors)
from connectors.base import Connector, Delivery, SourceError, _point, safe_dirname
from connectors.objectstore import ObjectInfo, ObjectStore, open_store

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


def reader_sql(path: Path, fmt: str | None = None) -> str:
    """A DuckDB table function reading one local file; CSV columns all VARCHAR (BOM stripped)."""
    fmt = fmt or file_format(path.name)
    p = quote_literal(str(path))
    if fmt == "parquet":
        return f"read_parquet({p}, file_row_number = true)"
    if fmt == "json":
        return f"read_json({p}, format = 'newline_delimited', records = true, union_by_name = true, maximum_depth = 1)"
    return (f"read_csv({p}, all_varchar = true, header = true, compression = 'auto', delim = ',', "
            "quote = '\"', escape = '\"', null_padding = true, strict_mode = false)")


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
    from importlib import resources

    con.execute(resources.files("sql").joinpath("macros/cloud_macros.sql").read_text(encoding="utf-8"))


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
class AzureBlobStore(ObjectStore):
    """Read-only view of `<container>/<prefix>` in an Azure storage account (or Azurite).

    Credentials, in order: AZURE_STORAGE_CONNECTION_STRING; AZURE_STORAGE_SAS_TOKEN;
    AZURE_STORAGE_KEY (with the account from the URL); azure-identity's DefaultAzureCredential
    when installed; anonymous (public containers).
    """

    def __init__(self, container: str, prefix: str, account_url: str | None = None):
        from azure.storage.blob import BlobServiceClient

        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn and not account_url:
            service = BlobServiceClient.from_connection_string(conn)
        elif conn and account_url:
            service = BlobServiceClient.from_connection_string(conn)
            if service.url.rstrip("/") != account_url.rstrip("/"):
                service = BlobServiceClient(account_url, credential=_azure_credential(account_url))
        else:
            if not account_url:
                account = os.environ.get("AZURE_STORAGE_ACCOUNT")
                if not account:
                    raise SourceError("Azure storage account unknown: set options.account_url, use an "
                                      "https://<account>.blob.core.windows.net/... URI, or set "
                                      "AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT")
                account_url = f"https://{account}.blob.core.windows.net"
            service = BlobServiceClient(account_url, credential=_azure_credential(account_url))
        self.container = service.get_container_client(container)
        self.root_prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _full(self, key: str) -> str:
        return self.root_prefix + key.lstrip("/")

    def list(self, prefix: str = "", delimiter: str | None = None):
        from azure.core.exceptions import ResourceNotFoundError

        n = len(self.root_prefix)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        try:
            if delimiter:
                for item in self.container.walk_blobs(name_starts_with=self._full(prefix), delimiter=delimiter):
                    if hasattr(item, "size") and item.size is not None and not item.name.endswith(delimiter):
                        objects.append(_blob_info(item, n))
                    else:
                        prefixes.append(item.name[n:])
            else:
                for item in self.container.list_blobs(name_starts_with=self._full(prefix)):
                    objects.append(_blob_info(item, n))
        except ResourceNotFoundError:
            raise SourceError(f"container {self.container.container_name} does not exist") from None
        return objects, prefixes

    def download(self, key: str, dest: Path) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with open(tmp, "wb") as fh:
                self.container.download_blob(self._full(key)).readinto(fh)
        except ResourceNotFoundError:
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(key) from None
        os.replace(tmp, dest)

    def read_bytes(self, key: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.container.download_blob(self._full(key)).readall()
        except ResourceNotFoundError:
            raise FileNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self.container.get_blob_client(self._full(key)).exists()


def _blob_info(item, n: int) -> ObjectInfo:
    modified = item.last_modified.isoformat() if item.last_modified else ""
    return ObjectInfo(item.name[n:], int(item.size or 0), str(item.etag or "").strip('"'), modified)


def _azure_credential(account_url: str):
    if os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
        return os.environ["AZURE_STORAGE_SAS_TOKEN"]
    if os.environ.get("AZURE_STORAGE_KEY"):
        account = urlparse(account_url).hostname.split(".")[0]
        if urlparse(account_url).path.strip("/"):  # path-style (Azurite): http://host:port/<account>
            account = urlparse(account_url).path.strip("/").split("/")[0]
        return {"account_name": account, "account_key": os.environ["AZURE_STORAGE_KEY"]}
    try:
        from azure.identity import DefaultAzureCredential  # optional dependency
    except ImportError:
        return None
    return DefaultAzureCredential()


class GcsStore(ObjectStore):
    """Read-only view of `gs://bucket/prefix` (google-cloud-storage; STORAGE_EMULATOR_HOST honoured)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, project: str | None = None,
                 anonymous: bool = False):
        from google.cloud import storage

        endpoint = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
        if endpoint or anonymous:
            from google.auth.credentials import AnonymousCredentials

            opts = {"api_endpoint": endpoint} if endpoint else None
            client = storage.Client(project=project or "apportion", credentials=AnonymousCredentials(),
                                    client_options=opts)
        else:
            client = storage.Client(project=project)
        self.bucket = client.bucket(bucket)
        self.client = client
        self.root_prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _full(self, key: str) -> str:
        return self.root_prefix + key.lstrip("/")

    def list(self, prefix: str = "", delimiter: str | None = None):
        from google.api_core.exceptions import NotFound

        n = len(self.root_prefix)
        try:
            it = self.client.list_blobs(self.bucket, prefix=self._full(prefix), delimiter=delimiter)
            objects = [ObjectInfo(b.name[n:], int(b.size or 0), str(b.etag or b.md5_hash or b.generation),
                                  b.updated.isoformat() if b.updated else "")
                       for b in it if not b.name.endswith("/")]
            prefixes = [p[n:] for p in sorted(it.prefixes)] if delimiter else []
        except NotFound:
            raise SourceError(f"bucket {self.bucket.name} does not exist") from None
        return objects, prefixes

    def download(self, key: str, dest: Path) -> None:
        from google.api_core.exceptions import NotFound

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            self.bucket.blob(self._full(key)).download_to_filename(str(tmp))
        except NotFound:
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(key) from None
        os.replace(tmp, dest)

    def read_bytes(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._full(key)).download_as_bytes()
        except NotFound:
            raise FileNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self.bucket.blob(self._full(key)).exists()


def open_cloud_store(uri: str, options: dict | None = None) -> ObjectStore:
    options = options or {}
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "az":
        container, _, prefix = (parsed.netloc + parsed.path).partition("/")
        return AzureBlobStore(container, unquote(prefix), options.get("account_url"))
    if scheme in ("abfs", "abfss", "wasb", "wasbs"):  # container@account.dfs.core.windows.net/prefix
        container, _, host = parsed.netloc.partition("@")
        account = host.split(".")[0]
        url = options.get("account_url") or f"https://{account}.blob.core.windows.net"
        return AzureBlobStore(container, unquote(parsed.path), url)
    if scheme in ("http", "https") and (".blob.core.windows.net" in parsed.netloc or options.get("account_url")):
        parts = parsed.path.strip("/").split("/")
        if ".blob.core.windows.net" in parsed.netloc:
            account_url = f"{parsed.scheme}://{parsed.netloc}"
        else:  # path-style endpoint (Azurite): http://host:port/<account>/<container>/<prefix>
            account_url = options["account_url"].rstrip("/")
            parts = parsed.path.strip("/").split("/")[1:] if parsed.path.strip("/").startswith(
                urlparse(account_url).path.strip("/")) and urlparse(account_url).path.strip("/") else parts
        container, prefix = parts[0], "/".join(parts[1:])
        return AzureBlobStore(container, unquote(prefix), account_url)
    if scheme == "gs":
        return GcsStore(parsed.netloc, unquote(parsed.path), options.get("endpoint_url"), options.get("project"),
                        bool(options.get("anonymous", False)))
    return open_store(uri, options)


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
