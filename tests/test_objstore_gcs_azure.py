"""Issue 13, the lake and the raw zone on gs:// (the GCS emulator over HTTP) and az:// (Azurite over HTTP): the same
semantics as s3:// (tests/test_scale_out.py): versions uploaded whole, then the CURRENT object; a worker killed between
the two leaves the previous version in force; a second machine builds the warehouse from the store alone; the copy
published to the store reads the lake's gs:// / az:// objects through apportion.storage.fsspec_filesystem.

The store is read back with Google's and Azure's own Python SDKs (google-cloud-storage, azure-storage-blob), not
through apportion's cache; every expected sum comes from the generated rows (Decimal, tests/test_scale_out.py).
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_scale_out import (
    SOURCES,
    build_month,
    build_month_in_a_worker,
    expected_sums,
    months,
    published_file_sums,
    write_focus_month,
    write_project,
)

MONTH = months(1)[0]


@dataclass
class Store:
    """One bucket (gs) or container (az), read with the cloud's own SDK."""

    scheme: str
    name: str
    _keys: object
    _get: object

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._keys(prefix) if not k.endswith("/"))  # not Arrow's folder-marker blobs

    def get(self, key: str) -> bytes:
        return self._get(key)


@pytest.fixture(params=["gs", "az"])
def store(request, monkeypatch):
    if request.param == "gs":
        emulator = request.getfixturevalue("gcs_emulator")
        bucket = request.getfixturevalue("gcs_bucket")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)  # the variable Google's SDKs read
        client = emulator.client()
        yield Store("gs", bucket.name, lambda p: [b.name for b in client.list_blobs(bucket, prefix=p)],
                    lambda k: bucket.blob(k).download_as_bytes())
    else:
        request.getfixturevalue("azurite_server")  # AZURE_STORAGE_CONNECTION_STRING (path-style BlobEndpoint)
        container = request.getfixturevalue("azure_container")
        for k in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
            monkeypatch.delenv(k, raising=False)
        yield Store("az", container.container_name, lambda p: list(container.list_blob_names(name_starts_with=p)),
                    lambda k: container.download_blob(k).readall())


def store_sums(store: Store, table: str, prefix: str = "apportion/lake") -> dict:
    """(source, month) -> (Σ BilledCost, Σ EffectiveCost) of the version each CURRENT object names, downloaded with
    the cloud's SDK and read with DuckDB."""
    import duckdb

    out = {}
    keys = store.keys(f"{prefix}/{table}/")
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            if not key.endswith("/CURRENT"):
                continue
            part = key[: -len("/CURRENT")]
            version = store.get(key).decode().strip()
            source = part.split("x_SourceName=")[1].split("/")[0]
            month = part.split("x_BillingMonth=")[1]
            cached = (store.uri, part, version)  # a version is immutable once uploaded: summed once
            if cached not in _VERSION_SUMS:
                files = []
                for k in (k for k in keys if k.startswith(f"{part}/{version}/")):
                    files.append(Path(tmp) / k.replace("/", "_"))
                    files[-1].write_bytes(store.get(k))
                assert files, f"{part}: CURRENT names {version}, which has no objects"
                _VERSION_SUMS[cached] = tuple(duckdb.connect().execute(
                    "SELECT sum(BilledCost), sum(EffectiveCost) FROM read_parquet(?)",
                    [[str(f) for f in files]]).fetchone())
            out[(source, month)] = _VERSION_SUMS[cached]
    return out


_VERSION_SUMS: dict = {}


def current_of(store: Store, table: str, source: str, month: str) -> str:
    return store.get(f"apportion/lake/{table}/x_SourceName={source}/x_BillingMonth={month}/CURRENT").decode().strip()


def published_sums(tmp_path: Path, store: Store) -> dict:
    """Σ per source and month in the copy published to the store, its lake views reading the store's objects."""
    published = tmp_path / f"published-{store.scheme}.duckdb"
    published.write_bytes(store.get("apportion/published/apportion.duckdb"))
    return published_file_sums(published, f"{store.uri}/apportion/lake")


def test_lake_and_raw_on_gs_and_az_a_killed_upload_keeps_current_and_a_second_machine_rebuilds(tmp_path, store):
    import duckdb

    from apportion import steps
    from apportion.models.config import load_config

    # one small month of three sources (each step costs seconds; the S3 test and the bench run more months)
    cfg_path, expected = write_project(tmp_path, store.name, n_months=1, rows=40, scheme=store.scheme)
    build_month(cfg_path, MONTH)
    steps.build_warehouse(load_config(cfg_path))
    assert steps.publish_warehouse(load_config(cfg_path)) == f"{store.uri}/apportion/published/apportion.duckdb"
    want = expected_sums(expected)
    first = dict(want)
    assert len(want) == 3
    assert store_sums(store, "line_items") == want
    assert store_sums(store, "allocations") == want  # Σ allocations = Σ line items, per source and month
    raw_keys = store.keys("apportion/raw/")
    for source in SOURCES:
        assert any(k.startswith(f"apportion/raw/{source}/{MONTH}/files-") and k.endswith(f"focus-{MONTH}.csv")
                   for k in raw_keys)
        for pointer in ("LANDED", "CURRENT"):
            assert f"apportion/raw/{source}/{MONTH}/{pointer}" in raw_keys
    assert not [k for k in store.keys("apportion/") if ".tmp-" in k]  # no staging object left behind

    # a restated month whose worker is killed after uploading the new version, before CURRENT is PUT
    old = current_of(store, "line_items", "focus-a", MONTH)
    restated = write_focus_month(tmp_path / "bills" / "focus-a", "focus-a", MONTH, rows=45, seed=1)
    killed = build_month_in_a_worker(cfg_path, MONTH, fault="lake:uploaded")
    assert killed.returncode == -9, killed.stderr[-2000:]
    part = f"apportion/lake/line_items/x_SourceName=focus-a/x_BillingMonth={MONTH}/"
    assert len({k.split("/")[5] for k in store.keys(part) if k.split("/")[5].startswith("v-")}) == 2  # uploaded ...
    assert current_of(store, "line_items", "focus-a", MONTH) == old  # ... but not in force
    assert store_sums(store, "line_items") == want and store_sums(store, "allocations") == want

    retry = build_month_in_a_worker(cfg_path, MONTH)
    assert retry.returncode == 0, retry.stderr[-3000:]
    want[("focus-a", MONTH)] = (restated["billed"], restated["effective"])
    assert current_of(store, "line_items", "focus-a", MONTH) != old
    assert store_sums(store, "line_items") == want
    assert store_sums(store, "allocations") == want

    # a second machine: the same store, an empty local folder; the warehouse step rebuilds from the store alone
    other = tmp_path / "other.yaml"
    other.write_text(cfg_path.read_text().replace(f"warehouse: {tmp_path / 'work'}", f"warehouse: {tmp_path / 'w2'}"))
    cfg2 = load_config(other)
    assert steps.sync_raw_records(cfg2) == 3  # the raw zone's folders, listed level by level
    counts = steps.build_warehouse(cfg2)
    assert counts["line_items"] == 40 * 2 + 45
    con = duckdb.connect(str(cfg2.duckdb_path), read_only=True)
    got = {(s, m): (b, e) for s, m, b, e in con.execute(
        "SELECT x_SourceName, x_BillingMonth, sum(BilledCost), sum(EffectiveCost) FROM allocations GROUP BY ALL").fetchall()}
    assert got == want
    current = con.execute("SELECT source, billing_month FROM deliveries WHERE is_current ORDER BY ALL").fetchall()
    assert current == [(s, MONTH) for s in SOURCES]
    con.close()
    # the copy published before the restatement still reads its (kept) versions from the store
    assert published_sums(tmp_path, store) == first
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "w2" / "lake").rglob("*.parquet")}
    steps.build_warehouse(cfg2)  # nothing changed in the store: nothing downloaded again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "w2" / "lake").rglob("*.parquet")} == cached
    assert steps.publish_warehouse(cfg2) == f"{store.uri}/apportion/published/apportion.duckdb"
    assert published_sums(tmp_path, store) == want
    assert not [k for k in store.keys("apportion/") if ".tmp-" in k]


def test_config_takes_gs_and_az_and_still_refuses_credentials_in_the_uri(tmp_path):
    from apportion.models._yaml import ConfigError
    from apportion.models.config import REMOTE_ROOTS, load_config

    def cfg(extra: str) -> Path:
        p = tmp_path / "apportion.yaml"
        p.write_text(f"warehouse: data\n{extra}\ntaxonomy: {Path(__file__).parents[1] / 'demo' / 'taxonomy.yaml'}\n"
                     "sources:\n  - name: a\n    kind: focus\n    uri: bills\n")
        return p

    c = load_config(cfg("lake: gs://finops-lake/apportion/lake/\nraw: az://finops/apportion/raw\n"
                        "publish_to: az://finops/apportion/published"))
    assert c.lake_remote == "gs://finops-lake/apportion/lake" and c.raw_remote == "az://finops/apportion/raw"
    assert REMOTE_ROOTS[c.raw.resolve()] == "az://finops/apportion/raw" and c.publish_to == "az://finops/apportion/published"
    for bad in ("gs://key:s3cr3t@finops-lake/lake", "az://s3cr3t@finops/lake"):
        with pytest.raises(ConfigError) as err:
            load_config(cfg(f"lake: {bad}"))
        assert "line 2" in str(err.value) and "s3cr3t" not in str(err.value) and "credentials" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(cfg("raw: az://"))
    assert "line 2" in str(err.value) and "name a bucket or container" in str(err.value)


def test_azure_options_come_from_the_environment_and_errors_never_show_the_key():
    from apportion.storage import azure_options

    key = "c2VjcmV0LWtleS1ub3QtcmVhbA=="
    azurite = azure_options({"AZURE_STORAGE_CONNECTION_STRING": (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")})
    assert azurite == {"account_name": "devstoreaccount1", "account_key": key,
                       "blob_storage_authority": "127.0.0.1:10000", "dfs_storage_authority": "127.0.0.1:10000",
                       "blob_storage_scheme": "http", "dfs_storage_scheme": "http"}
    cloud = azure_options({"AZURE_STORAGE_CONNECTION_STRING": (
        f"DefaultEndpointsProtocol=https;AccountName=finops;AccountKey={key};EndpointSuffix=core.chinacloudapi.cn")})
    assert cloud["blob_storage_authority"] == ".blob.core.chinacloudapi.cn"
    assert cloud["dfs_storage_authority"] == ".dfs.core.chinacloudapi.cn" and cloud["account_name"] == "finops"
    endpoint = azure_options({"AZURE_STORAGE_CONNECTION_STRING": (
        "AccountName=finops;SharedAccessSignature=sv=2024&sig=abc;BlobEndpoint=https://finops.blob.core.windows.net/")})
    assert endpoint == {"account_name": "finops", "sas_token": "sv=2024&sig=abc",
                        "blob_storage_authority": ".blob.core.windows.net",
                        "dfs_storage_authority": ".dfs.core.windows.net",
                        "blob_storage_scheme": "https", "dfs_storage_scheme": "https"}
    # an account without a key: Arrow's DefaultAzureCredential (AZURE_CLIENT_ID / workload or managed identity)
    assert azure_options({"AZURE_STORAGE_ACCOUNT_NAME": "finops"}) == {"account_name": "finops"}
    assert azure_options({"AZURE_STORAGE_ACCOUNT": "finops", "AZURE_STORAGE_KEY": key}) == {
        "account_name": "finops", "account_key": key}
    with pytest.raises(ValueError) as err:
        azure_options({"AZURE_STORAGE_ACCOUNT_KEY": key})
    assert "AZURE_STORAGE_ACCOUNT_NAME" in str(err.value) and key not in str(err.value)
    with pytest.raises(ValueError) as err:
        azure_options({"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=a;AccountKey={key};BlobEndpoint=https://cdn.example"})
    assert "BlobEndpoint" in str(err.value) and key not in str(err.value)


def test_a_pointer_replaced_on_the_store_is_never_seen_empty(store):
    """Arrow's Azure output stream commits an empty blob when it opens: a CURRENT written in place would read as
    "no version" meanwhile (and for good if the writer died); and Arrow reads an object with a metadata request
    then a GET of that size, which cuts a pointer replaced in between by a longer name. A reader polling while
    the pointer is replaced sees the old or the new name whole, never anything else."""
    from apportion.storage import remote

    lake = remote(f"{store.uri}/pointer-test")
    names = [f"v-{'x' * (i % 4)}{i}\n" for i in range(16)]  # longer and shorter names in turn (delivery names vary)
    lake.put_bytes("t/CURRENT", names[0].encode())
    seen: set[str | None] = set()
    done = threading.Event()

    errors = []

    def reader():
        while not done.is_set():
            try:
                seen.add(lake.get_text("t/CURRENT"))
            except Exception as e:  # noqa: BLE001 - reported below, with what was seen
                errors.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for name in names[1:]:
            lake.put_bytes("t/CURRENT", name.encode())
    finally:
        done.set()
        thread.join()
    assert not errors, errors[:3]
    assert seen and seen <= set(names), seen - set(names)
    assert store.get("pointer-test/t/CURRENT") == names[-1].encode()
    assert store.keys("pointer-test/") == ["pointer-test/t/CURRENT"]  # the staging blobs are gone


def test_a_killed_azure_pointer_write_leaves_a_staging_folder_the_next_write_sweeps(azurite_server, azure_container,
                                                                                     monkeypatch):
    """On az:// a pointer is staged in `.CURRENT.tmp-<host>-<pid>-<id>/` and copied over CURRENT. A writer killed
    between the two leaves the old CURRENT in force and its staging folder behind; the next successful write of that
    pointer removes it. A live writer's folder (this process's) and another host's recent one are kept (deleting them
    would fail that writer's copy); another host's older than STALE_STAGING_SECONDS is removed."""
    import os
    import socket
    import subprocess
    import sys

    from apportion import storage

    for k in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    uri = f"az://{azure_container.container_name}/sweep"
    lake = storage.remote(uri)
    lake.put_bytes("t/CURRENT", b"v-1\n")

    def blobs() -> list[str]:
        return sorted(b for b in azure_container.list_blob_names(name_starts_with="sweep/") if not b.endswith("/"))

    def staging_folders() -> set[str]:
        return {b.split("/")[2] for b in blobs() if ".tmp-" in b}

    # a writer killed after staging its new CURRENT, before the Copy Blob
    code = ("import os, signal\n"
            "from apportion import storage\n"
            "class Dies:  # the client, killed when it starts the Copy Blob\n"
            "    def __init__(self, fs): self.fs = fs\n"
            "    def __getattr__(self, name): return getattr(self.fs, name)\n"
            "    def copy_file(self, *a): os.kill(os.getpid(), signal.SIGKILL)\n"
            "storage.Remote.fs = property(lambda self: Dies(self._fs_base[0]))\n"
            f"storage.remote({uri!r}).put_bytes('t/CURRENT', b'v-2\\n')\n")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (dead,) = staging_folders()
    host = socket.gethostname().replace("-", "_")
    assert dead.startswith(f".CURRENT.tmp-{host}-") and f"-{os.getpid()}-" not in dead
    assert azure_container.download_blob("sweep/t/CURRENT").readall() == b"v-1\n"  # the old pointer is in force

    live = f".CURRENT.tmp-{host}-{os.getpid()}-0123abcd"  # a writer still going on this host: this process
    elsewhere = ".CURRENT.tmp-other_host-4242-89abcdef"  # another host's writer, staged just now
    for folder in (live, elsewhere):
        azure_container.upload_blob(f"sweep/t/{folder}/CURRENT", b"v-x\n")
    lake.put_bytes("t/CURRENT", b"v-3\n")
    assert azure_container.download_blob("sweep/t/CURRENT").readall() == b"v-3\n"
    assert staging_folders() == {live, elsewhere}  # the dead writer's folder is gone, the others kept

    monkeypatch.setattr(storage, "STALE_STAGING_SECONDS", 0.0)  # as if an hour had passed
    lake.put_bytes("t/CURRENT", b"v-4\n")
    assert staging_folders() == set()
    assert blobs() == ["sweep/t/CURRENT"]
    assert azure_container.download_blob("sweep/t/CURRENT").readall() == b"v-4\n"
