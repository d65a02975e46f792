"""Object storage as the system of record of the lake and the raw zone (`lake:` / `raw:` set to an s3://, gs:// or
az:// URI).

The engine keeps working on local folders: `cfg.lake` and `cfg.raw` are then *local caches* of the object
store. A writer builds a partition version (or lands a delivery) locally, uploads it under its final,
immutable prefix, and only then PUTs the pointer object (`CURRENT`, `LANDED`): a single PUT is atomic, so
a worker killed mid-upload leaves the previous version in force. A reader GETs the pointer and downloads
the version only when its cache does not hold it yet (versions never change once uploaded).

Reading and writing go through pyarrow's filesystems (Arrow's C++ S3, GCS and Azure clients, already a dependency
for Parquet; no other package). Credentials come from the environment and the SDKs' default chains only, and nothing
here logs a key:
* s3:// : the AWS default chain (environment, shared config, SSO, instance or pod role); `AWS_ENDPOINT_URL_S3` /
  `AWS_ENDPOINT_URL` point it at an S3-compatible server.
* gs:// : Google's default chain (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default login, the metadata
  server); `STORAGE_EMULATOR_HOST` (the variable Google's SDKs read for the emulator) points it at an emulator,
  spoken to anonymously.
* az:// (`az://container/prefix`): AZURE_STORAGE_CONNECTION_STRING (AccountName, AccountKey or
  SharedAccessSignature, BlobEndpoint or EndpointSuffix: Azurite's path-style BlobEndpoint included), or
  AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN, or with neither the Azure
  SDK's DefaultAzureCredential (AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, workload or managed
  identity, the Azure CLI's login).
`fsspec_filesystem` wraps the same client for DuckDB's `register_filesystem`, which is how a warehouse file published
with `publish_to:` reads the lake's object URIs without any DuckDB extension.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from apportion.models.config import REMOTE_ROOTS


def work_suffix() -> str:
    """`<host>-<pid>-<random>`: names temporary files so that cleanup (lake.clean_leftovers) can tell a crashed
    process's leftovers from the work of one still going."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


POINTERS = ("CURRENT", "LANDED")  # objects replaced in place; every other object is written once under its own name
STALE_STAGING_SECONDS = 3600.0  # az:// staging folder of another host's writer older than this: swept (Remote._replace)


def process_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a leftover's writer, a run's worker)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Remote:
    """One object-store root (`s3://bucket/prefix`); keys are '/'-separated and relative to it."""

    uri: str

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @functools.cached_property
    def _fs_base(self):
        scheme, rest = self.uri.split("://", 1)
        makers = {"s3": _s3_filesystem, "gs": _gcs_filesystem, "az": _azure_filesystem}
        if scheme not in makers:
            raise ValueError(f"{self.uri}: object storage for the lake is s3://, gs:// or az://")
        return makers[scheme](rest.split("/", 1)[0]), rest.strip("/")

    @property
    def fs(self):
        return self._fs_base[0]

    def key(self, rel: str) -> str:
        base = self._fs_base[1]
        return f"{base}/{rel.strip('/')}" if rel.strip("/") else base

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel.strip('/')}"

    def get_text(self, rel: str) -> str | None:
        """The object's text, or None when it does not exist. A pointer (CURRENT, LANDED: written as a name and a
        newline) is read again when it comes back without its newline or the read fails: Arrow reads an S3 or Azure
        object with a metadata request, then a GET of the size it learnt, so a pointer replaced in between by a
        longer name is cut short, and by a shorter one fails (HTTP 416)."""
        pointer = rel.rsplit("/", 1)[-1] in POINTERS
        for attempt in range(5):
            try:
                with self.fs.open_input_stream(self.key(rel)) as f:
                    text = f.read().decode()
            except FileNotFoundError:
                return None
            except OSError:  # replaced by a shorter name in between: the GET's range is past the new end (416)
                if not pointer or attempt == 4:
                    raise
                continue
            if not pointer or not text or text.endswith("\n"):
                return text
        return text

    def put_bytes(self, rel: str, data: bytes) -> None:
        """One PUT: the object appears whole or not at all, and an object it replaces stays readable until then (S3
        and GCS have no half-written object; on Azure see `_replace`)."""
        if self.scheme == "az":
            return self._replace(rel, lambda staged: self._write(staged, data))
        self._write(rel, data)

    def _write(self, rel: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.key(rel)) as f:
            f.write(data)

    def upload_file(self, local: Path, rel: str, replace: bool = False) -> None:
        """One file to `rel`. `replace`: the object may exist and readers must see the old or the new one whole (the
        published apportion.duckdb), never a partial one."""
        import pyarrow.fs as pafs

        def upload(target: str) -> None:
            pafs.copy_files(str(local), self.key(target), destination_filesystem=self.fs)

        if replace and self.scheme == "az":
            return self._replace(rel, upload)
        upload(rel)

    def _replace(self, rel: str, write) -> None:
        """Azure: Arrow's blob output stream commits an *empty* blob when it opens and the content only when it closes,
        so writing over an object in place would leave it empty for a reader meanwhile (and for good when the writer
        is killed in between). The content goes to a staging folder beside it instead, then one server-side Copy Blob
        (same account: done in one step) replaces the object, then the staging folder is removed (a folder: Arrow
        deletes it in one batch, where deleting a single blob takes leases and may stall for seconds)."""
        parent, _, name = rel.rpartition("/")
        staging = f"{parent + '/' if parent else ''}.{name}.tmp-{work_suffix()}"
        write(f"{staging}/{name}")
        try:
            self.fs.copy_file(self.key(f"{staging}/{name}"), self.key(rel))
        finally:
            self.fs.delete_dir(self.key(staging))
        try:
            self._sweep_staging(parent, name)
        except OSError:  # housekeeping only: the object is in place; the next write sweeps again
            pass

    def _sweep_staging(self, parent: str, name: str) -> list[str]:
        """After a successful replace of `parent/name`: remove the staging folders of that object that writers killed
        between staging and Copy Blob left behind (`.<name>.tmp-<host>-<pid>-<id>/`). One is stale when its writer
        ran on this host and its process is gone, or when its staged blob is older than STALE_STAGING_SECONDS
        (another host's writer: its process cannot be checked from here, and a live one copies within seconds of
        staging). A live writer's folder is kept: deleting it would fail that writer's copy. Returns what was
        removed."""
        import time

        prefix = f".{name}.tmp-"
        _, folders = self.list_dir(parent)
        host = socket.gethostname().replace("-", "_")
        removed = []
        for folder in folders:
            if not folder.startswith(prefix):
                continue
            rel = f"{parent + '/' if parent else ''}{folder}"
            owner = folder[len(prefix):].split("-")
            dead = (len(owner) == 3 and owner[0] == host and owner[1].isdigit()
                    and not process_alive(int(owner[1])))
            staged = self.fs.get_file_info(self.key(f"{rel}/{name}"))
            old = staged.mtime is not None and time.time() - staged.mtime.timestamp() > STALE_STAGING_SECONDS
            if dead or old:
                try:
                    self.fs.delete_dir(self.key(rel))
                except FileNotFoundError:  # another writer swept it first
                    continue
                removed.append(rel)
        return removed

    def upload_dir(self, local_dir: Path, rel: str, last: str | None = None) -> int:
        """Every file under `local_dir` to `rel/...`; `last` (a file name) is uploaded after all the others, so
        its presence marks a complete upload. Returns the number of files."""
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == last)
        for p in files:
            self.upload_file(p, f"{rel}/{p.relative_to(local_dir).as_posix()}")
        return len(files)

    def list_files(self, rel: str) -> list[tuple[str, int]]:
        """(key relative to the root, size) of every object under `rel/`, recursively."""
        import pyarrow.fs as pafs

        base = self._fs_base[1]
        infos = self.fs.get_file_info(pafs.FileSelector(self.key(rel), recursive=True, allow_not_found=True))
        return sorted((i.path[len(base):].lstrip("/"), i.size) for i in infos if i.type == pafs.FileType.File)

    def list_dir(self, rel: str) -> tuple[list[str], list[str]]:
        """(object names, sub-folder names) directly under `rel/` (one listing level, not recursive)."""
        import pyarrow.fs as pafs

        if self.scheme == "gs":  # Arrow's GCS listing names only objects, not the folders a '/' delimiter implies
            keys = [k[len(rel.strip("/")):].lstrip("/") for k, _ in self.list_files(rel)]
            return (sorted(k for k in keys if "/" not in k), sorted({k.split("/", 1)[0] for k in keys if "/" in k}))
        infos = self.fs.get_file_info(pafs.FileSelector(self.key(rel), recursive=False, allow_not_found=True))
        names = [(i.base_name, i.type) for i in infos]
        return ([n for n, t in names if t == pafs.FileType.File], [n for n, t in names if t == pafs.FileType.Directory])

    def download_dir(self, rel: str, dest: Path, files: list[str] | None = None) -> Path:
        """The objects under `rel/` into the folder `dest`, written aside and renamed into place (a reader never
        sees half a version). `files`: the keys (relative to the root) when a listing already named them."""
        keys = files if files is not None else [k for k, _ in self.list_files(rel)]
        tmp = dest.with_name(f"{dest.name}.tmp-{work_suffix()}")
        try:
            for k in keys:
                target = tmp / k[len(rel.strip("/")):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(self.key(k)) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(dest)
            except OSError:  # another reader on this machine put the same (immutable) version in place first
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def delete_prefix(self, rel: str) -> None:
        """The object `rel`, or every object under `rel/`. An object already gone is no error: two builds pruning the
        same old version (seen: two warehouse runs under heavy load) both succeed."""
        import pyarrow.fs as pafs

        try:
            if self.fs.get_file_info(self.key(rel)).type == pafs.FileType.File:
                return self.fs.delete_file(self.key(rel))
            if self.scheme == "az":  # one batch (and no folder-marker blob left behind, as per-file deletes leave)
                return self.fs.delete_dir(self.key(rel))
        except FileNotFoundError:
            return None
        for k, _ in self.list_files(rel):
            try:
                self.fs.delete_file(self.key(k))
            except FileNotFoundError:
                continue


@functools.lru_cache(maxsize=16)
def remote(uri: str) -> Remote:
    return Remote(uri)


def remote_for(local_root: Path) -> Remote | None:
    """The object store a local lake or raw folder caches (ApportionConfig.register_remotes), or None."""
    uri = REMOTE_ROOTS.get(Path(local_root).resolve()) if REMOTE_ROOTS else None
    return remote(uri) if uri else None


def fsspec_filesystem(uri: str):
    """An fsspec filesystem over the same client, for `duckdb_connection.register_filesystem(...)`: DuckDB then
    reads `s3://`, `gs://` or `az://` paths through it (no httpfs or azure extension, nothing downloaded at run
    time)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    store = remote(uri.rstrip("/"))
    if store.scheme == "s3":
        return ArrowFSWrapper(store.fs)
    return _wrapper_class(store.scheme)(store.fs)


@functools.lru_cache(maxsize=None)
def _wrapper_class(scheme: str):
    """ArrowFSWrapper names the protocol after Arrow's filesystem ("gcs", "abfs") and parses `az://container/key` as
    a host and a path: this one answers for the lake's own scheme and hands Arrow `bucket/key` / `container/key`."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class ObjectStoreWrapper(ArrowFSWrapper):
        protocol = (scheme,)
        root_marker = ""

        @classmethod
        def _strip_protocol(cls, path):
            path = str(path)
            return (path[len(scheme) + 3:] if path.startswith(f"{scheme}://") else path).rstrip("/")

    ObjectStoreWrapper.__name__ = f"{scheme.capitalize()}ArrowWrapper"
    return ObjectStoreWrapper


def _s3_filesystem(bucket: str):
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    # allow_delayed_open: an object smaller than one upload part (a pointer, most partitions) goes up in one
    # PutObject when the stream closes, instead of a multipart upload's three requests (create, part, complete)
    if endpoint or region:
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1",
                                 scheme="http" if endpoint and endpoint.startswith("http://") else "https",
                                 allow_delayed_open=True)
    return pafs.S3FileSystem(region=pafs.resolve_s3_region(bucket), allow_delayed_open=True)


def _gcs_filesystem(bucket: str):
    """Google's default credentials chain; with STORAGE_EMULATOR_HOST (`host:port` or `http://host:port`), that
    emulator, anonymously (as google-cloud-storage does)."""
    import pyarrow.fs as pafs

    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if emulator:
        scheme, _, host = emulator.rpartition("://")
        return pafs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=host)
    return pafs.GcsFileSystem()


def _azure_filesystem(container: str):
    import pyarrow.fs as pafs

    return pafs.AzureFileSystem(**azure_options(os.environ))


def azure_options(env) -> dict:
    """pyarrow.fs.AzureFileSystem's arguments from the environment: AZURE_STORAGE_CONNECTION_STRING, else
    AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_ACCOUNT) with AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_KEY) or
    AZURE_STORAGE_SAS_TOKEN, else that account with Arrow's DefaultAzureCredential. Errors never show a key."""
    from urllib.parse import urlparse

    conn = (env.get("AZURE_STORAGE_CONNECTION_STRING") or "").strip()
    if conn:
        parts = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in conn.split(";")) if k.strip()}
        account, key, sas = parts.get("accountname"), parts.get("accountkey"), parts.get("sharedaccesssignature")
        endpoint, protocol = parts.get("blobendpoint"), parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix")
        where = "AZURE_STORAGE_CONNECTION_STRING"
    else:
        account = env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
        key = env.get("AZURE_STORAGE_ACCOUNT_KEY") or env.get("AZURE_STORAGE_KEY")
        sas, endpoint, protocol, suffix = env.get("AZURE_STORAGE_SAS_TOKEN"), None, "https", None
        where = "AZURE_STORAGE_ACCOUNT_NAME"
    opts: dict = {}
    if endpoint:
        url = urlparse(endpoint)
        path = url.path.strip("/")
        if path:  # path-style (Azurite): http://host:port/<account>
            account = account or path.split("/")[0]
            opts.update(blob_storage_authority=url.netloc, dfs_storage_authority=url.netloc)
        elif account and url.netloc.lower().startswith(account.lower() + ".blob."):
            rest = url.netloc[len(account):]
            opts.update(blob_storage_authority=rest, dfs_storage_authority=rest.replace(".blob.", ".dfs.", 1))
        else:
            raise ValueError(f"{where}: BlobEndpoint {url.scheme}://{url.netloc} is neither "
                             "https://<account>.blob.<suffix> nor path-style http://host:port/<account>")
        opts.update(blob_storage_scheme=url.scheme or "https", dfs_storage_scheme=url.scheme or "https")
    elif suffix:
        opts.update(blob_storage_authority=f".blob.{suffix}", dfs_storage_authority=f".dfs.{suffix}",
                    blob_storage_scheme=protocol, dfs_storage_scheme=protocol)
    if not account:
        raise ValueError("az:// object storage needs the storage account: set AZURE_STORAGE_ACCOUNT_NAME (with "
                         "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, or the DefaultAzureCredential "
                         "variables AZURE_CLIENT_ID / AZURE_TENANT_ID / ...) or AZURE_STORAGE_CONNECTION_STRING")
    opts["account_name"] = account
    if key:
        opts["account_key"] = key
    elif sas:
        opts["sas_token"] = sas
    return opts


def write_pointer(local: Path, target: str) -> None:
    """A local pointer file (CURRENT / LANDED), replaced atomically."""
    tmp = local.with_name(f".{local.name}.tmp-{work_suffix()}")
    tmp.write_text(target + "\n")
    os.replace(tmp, local)


def publish_warehouse(cfg) -> str | None:
    """Copy the published apportion.duckdb to `publish_to` (an object-store URI or a folder), one PUT / one rename. With
    the lake on object storage the copy's lake views (and `lake_files.path`) name the objects' URIs instead of the
    builder's local cache, so an analyst anywhere reads it after registering `fsspec_filesystem` (docs/warehouse.md).
    Returns where it went, or None without `publish_to`."""
    import duckdb

    if not cfg.publish_to or not cfg.duckdb_path.exists():
        return None
    staged = cfg.warehouse / f".apportion.duckdb.publish.tmp-{work_suffix()}"
    try:
        shutil.copyfile(cfg.duckdb_path, staged)
        if cfg.lake_remote:
            _point_views_at(duckdb.connect(str(staged)), f"{cfg.lake}/", f"{cfg.lake_remote}/", cfg.lake_remote)
        if "://" in cfg.publish_to:
            remote(cfg.publish_to).upload_file(staged, "apportion.duckdb", replace=True)
            return remote(cfg.publish_to).uri_of("apportion.duckdb")
        folder = Path(cfg.publish_to)
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(shutil.copyfile(staged, folder / f"{staged.name}.copy"), folder / "apportion.duckdb")
        return str(folder / "apportion.duckdb")
    finally:
        staged.unlink(missing_ok=True)
        staged.with_name(staged.name + ".wal").unlink(missing_ok=True)


def _point_views_at(con, local_prefix: str, uri_prefix: str, lake_uri: str) -> None:
    """Rewrite every view whose SQL names files under `local_prefix` to name them under `uri_prefix` (keeping the
    view's and its columns' comments), and `lake_files.path` likewise."""
    try:
        con.register_filesystem(fsspec_filesystem(lake_uri))
        views = con.execute("SELECT view_name, sql, comment FROM duckdb_views() WHERE NOT internal "
                            "AND contains(sql, ?)", [local_prefix]).fetchall()
        for name, sql, comment in views:
            cols = con.execute("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ? "
                               "AND comment IS NOT NULL", [name]).fetchall()
            con.execute(sql.replace(local_prefix, uri_prefix).replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
            if comment:
                con.execute(f"COMMENT ON VIEW {_ident(name)} IS {_lit(comment)}")
            for col, text in cols:
                con.execute(f"COMMENT ON COLUMN {_ident(name)}.{_ident(col)} IS {_lit(text)}")
        con.execute("UPDATE lake_files SET path = ? || substr(path, ?) WHERE starts_with(path, ?)",
                    [uri_prefix, len(local_prefix) + 1, local_prefix])
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
