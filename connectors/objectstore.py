"""Listing and downloading raw objects from s3:// URIs (boto3) or local folders.

Credentials come from boto3's default chain (environment, shared config, instance role);
`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` or the source option `endpoint_url` point it at an
S3-compatible server. Nothing here logs keys or credentials.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store root, '/'-separated
    size: int
    etag: str
    last_modified: str


class ObjectStore:
    """Read-only view of everything under one root URI."""

    def list(self, prefix: str = "", delimiter: str | None = None) -> tuple[list[ObjectInfo], list[str]]:
        raise NotImplementedError

    def download(self, key: str, dest: Path) -> None:
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError


class LocalStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root

    def list(self, prefix: str = "", delimiter: str | None = None):
        base = self.root / prefix if prefix else self.root
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        if delimiter:
            folder = base if prefix.endswith("/") or not prefix else base.parent
            if not folder.is_dir():
                return [], []
            for p in sorted(folder.iterdir()):
                rel = p.relative_to(self.root).as_posix()
                if not rel.startswith(prefix):
                    continue
                if p.is_dir():
                    prefixes.append(rel + "/")
                else:
                    objects.append(self._info(p))
            return objects, prefixes
        folder = base if base.is_dir() else base.parent
        if not folder.exists():
            return [], []
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    objects.append(self._info(p))
        return objects, prefixes

    def _info(self, p: Path) -> ObjectInfo:
        st = p.stat()
        # size+mtime identifies a local file version without hashing gigabytes.
        return ObjectInfo(p.relative_to(self.root).as_posix(), st.st_size, f"{st.st_size:x}-{st.st_mtime_ns:x}",
                          str(st.st_mtime_ns))

    def download(self, key: str, dest: Path) -> None:
        src = self.root / key
        if not src.is_file():
            raise FileNotFoundError(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A copy, not a hard link: an export rewritten in place must not change what was landed.
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    def read_bytes(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()


class S3Store(ObjectStore):
    def __init__(self, bucket: str, root_prefix: str, endpoint_url: str | None = None, region: str | None = None):
        import boto3

        self.bucket = bucket
        self.root_prefix = root_prefix.strip("/") + "/" if root_prefix.strip("/") else ""
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _full(self, key: str) -> str:
        return self.root_prefix + key.lstrip("/")

    def list(self, prefix: str = "", delimiter: str | None = None):
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        n = len(self.root_prefix)
        for page in paginator.paginate(**kwargs):
            for o in page.get("Contents", []):
                objects.append(ObjectInfo(o["Key"][n:], o["Size"], o["ETag"].strip('"'), o["LastModified"].isoformat()))
            for p in page.get("CommonPrefixes", []):
                prefixes.append(p["Prefix"][n:])
        return objects, prefixes

    def download(self, key: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            self.client.download_file(self.bucket, self._full(key), str(tmp))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise
        os.replace(tmp, dest)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError:
            return False


def open_store(uri: str, options: dict | None = None) -> ObjectStore:
    options = options or {}
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path, options.get("endpoint_url"), options.get("region"))
    if parsed.scheme == "file":
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain path (or a Windows drive letter)
        return LocalStore(Path(uri))
    raise ValueError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use s3://, file:// or a path)")
