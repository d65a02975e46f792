"""Object stores for the cloud-billing sources: Azure Blob Storage and Google Cloud Storage beside the S3
and local stores of `connectors.objectstore`, and `open_cloud_store`, which picks one by URI scheme."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from apportion.connectors.errors import SourceError
from apportion.connectors.objectstore import ObjectInfo, ObjectStore, open_store


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
