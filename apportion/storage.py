"""Object storage as the system of record of the lake and the raw zone (`lake:` / `raw:` set to an s3:// URI).

The engine keeps working on local folders: `cfg.lake` and `cfg.raw` are then *local caches* of the object
store. A writer builds a partition version (or lands a delivery) locally, uploads it under its final,
immutable prefix, and only then PUTs the pointer object (`CURRENT`, `LANDED`): a single PUT is atomic, so
a worker killed mid-upload leaves the previous version in force. A reader GETs the pointer and downloads
the version only when its cache does not hold it yet (versions never change once uploaded).

Reading and writing go through pyarrow's filesystems (Arrow's C++ S3 client, already a dependency for
Parquet): credentials come from the AWS default chain (environment, shared config, SSO, instance or pod
role), `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` point it at an S3-compatible server, and nothing here
logs a key. `fsspec_filesystem` wraps the same client for DuckDB's `register_filesystem`, which is how a
warehouse file published with `publish_to:` reads the lake's s3:// URIs without any DuckDB extension.
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


@dataclass(frozen=True)
class Remote:
    """One object-store root (`s3://bucket/prefix`); keys are '/'-separated and relative to it."""

    uri: str

    @functools.cached_property
    def _fs_base(self):
        import pyarrow.fs as pafs

        scheme, rest = self.uri.split("://", 1)
        if scheme != "s3":
            raise ValueError(f"{self.uri}: only s3:// object storage is supported for the lake")
        bucket = rest.split("/", 1)[0]
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint or region:
            fs = pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1",
                                   scheme="http" if endpoint and endpoint.startswith("http://") else "https")
        else:
            fs = pafs.S3FileSystem(region=pafs.resolve_s3_region(bucket))
        return fs, rest.strip("/")

    @property
    def fs(self):
        return self._fs_base[0]

    def key(self, rel: str) -> str:
        base = self._fs_base[1]
        return f"{base}/{rel.strip('/')}" if rel.strip("/") else base

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel.strip('/')}"

    def get_text(self, rel: str) -> str | None:
        """The object's text, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(self.key(rel)) as f:
                return f.read().decode()
        except FileNotFoundError:
            return None

    def put_bytes(self, rel: str, data: bytes) -> None:
        """One PUT: the object appears whole or not at all (S3 has no half-written object)."""
        with self.fs.open_output_stream(self.key(rel)) as f:
            f.write(data)

    def upload_file(self, local: Path, rel: str) -> None:
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), self.key(rel), destination_filesystem=self.fs)

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
        for k, _ in self.list_files(rel):
            self.fs.delete_file(self.key(k))


@functools.lru_cache(maxsize=16)
def remote(uri: str) -> Remote:
    return Remote(uri)


def remote_for(local_root: Path) -> Remote | None:
    """The object store a local lake or raw folder caches (ApportionConfig.register_remotes), or None."""
    uri = REMOTE_ROOTS.get(Path(local_root).resolve()) if REMOTE_ROOTS else None
    return remote(uri) if uri else None


def fsspec_filesystem(uri: str):
    """An fsspec filesystem over the same client, for `duckdb_connection.register_filesystem(...)`: DuckDB then
    reads `s3://` paths through it (no httpfs extension, nothing downloaded at run time)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    return ArrowFSWrapper(remote(uri.rstrip("/")).fs)


def write_pointer(local: Path, target: str) -> None:
    """A local pointer file (CURRENT / LANDED), replaced atomically."""
    tmp = local.with_name(f".{local.name}.tmp-{work_suffix()}")
    tmp.write_text(target + "\n")
    os.replace(tmp, local)


def publish_warehouse(cfg) -> str | None:
    """Copy the published apportion.duckdb to `publish_to` (an s3:// URI or a folder), one PUT / one rename. With the
    lake on object storage the copy's lake views (and `lake_files.path`) name the objects' s3:// URIs instead of the
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
            remote(cfg.publish_to).upload_file(staged, "apportion.duckdb")
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
