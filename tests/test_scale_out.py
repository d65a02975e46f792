"""Issue 13, scale-out: the lake and the raw zone in an S3 bucket (moto over HTTP), the Dagster instance on a real
PostgreSQL, source x month partitions executed as separate processes; a worker killed mid-partition.

Data: three FOCUS sources x four months (twelve with APPORTION_SCALE_MONTHS=12; one in the kill test), generated here (20-70 rows per
source-month in the tests, 200 in the bench; costs with twelve decimals); every expected sum is computed from the generated rows in Python (Decimal), not by the
engine.
"""

from __future__ import annotations

import functools
import os
import random
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
SOURCES = ("focus-a", "focus-b", "focus-c")
COLUMNS = ("BillingAccountId,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,"
           "ChargeDescription,ProviderName,PublisherName,InvoiceIssuerName,ServiceCategory,ServiceName,ResourceId,"
           "BilledCost,EffectiveCost,ListCost,ContractedCost,BillingCurrency,Tags")
TEAMS = ("platform", "research", "dispatch")


def months(n: int = 12, first: str = "2025-01") -> list[str]:
    y, m = map(int, first.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _next(month: str) -> str:
    y, m = map(int, month.split("-"))
    return f"{y + 1:04d}-01" if m == 12 else f"{y:04d}-{m + 1:02d}"


def write_focus_month(folder: Path, source: str, month: str, rows: int, seed: int = 0) -> dict[str, Decimal]:
    """One FOCUS CSV for the source and month; returns the sums {billed, effective} of its rows, by hand."""
    rnd = random.Random(f"{source}-{month}-{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [COLUMNS]
    billed = effective = Decimal(0)
    for i in range(rows):
        b = Decimal(rnd.randrange(0, 10**15)) / Decimal(10**12)  # up to 1000.000000000000
        e = (b * Decimal(rnd.randrange(60, 101)) / 100).quantize(Decimal("0.000000000001"))
        billed += b
        effective += e
        day = 1 + i % 28
        team = TEAMS[rnd.randrange(len(TEAMS))]
        tags = '"{""team"":""' + team + '"",""env"":""prod""}"' if i % 7 else '"{}"'
        lines.append(f"acct-{source},{month}-01T00:00:00Z,{_next(month)}-01T00:00:00Z,{month}-{day:02d}T00:00:00Z,"
                     f"{month}-{day:02d}T01:00:00Z,Usage,row {i},Acme Cloud,Acme Cloud,Acme Cloud,Compute,Acme VMs,"
                     f"vm-{source}-{i % 40},{b},{e},{b},{b},USD,{tags}")
    (folder / f"focus-{month}.csv").write_text("\n".join(lines) + "\n")
    return {"billed": billed, "effective": effective}


def write_project(root: Path, bucket: str | None, n_months: int = 12, rows: int = 200,
                  scheme: str = "s3") -> tuple[Path, dict]:
    """The config (lake and raw in `bucket` when given: an s3/gs bucket or an az container) and the generated sources;
    returns (config path, {(source, month): hand sums})."""
    expected = {}
    for source in SOURCES:
        for month in months(n_months):
            expected[(source, month)] = write_focus_month(root / "bills" / source, source, month, rows)
    store = f"{scheme}://{bucket}/apportion"
    remote = (f"lake: {store}/lake\nraw: {store}/raw\npublish_to: {store}/published\n") if bucket else ""
    cfg = root / "apportion.yaml"
    cfg.write_text(f"warehouse: {root / 'work'}\n{remote}taxonomy: {TAXONOMY}\nsources:\n" + "".join(
        f"  - name: {s}\n    kind: focus\n    uri: {root / 'bills' / s}\n" for s in SOURCES))
    return cfg, expected


# ---------------------------------------------------------------------------------- Dagster harness
# (also used by bench/bench_scale_out.py). Step processes rebuild the job from $APPORTION_CONFIG.
# What the forkserver imports once, before it forks any step: without the instance's PostgreSQL storage, pandas (the
# taxonomy tables) and the step modules' lazy imports here, every step process imported ~550-880 modules itself (1-3 s
# of a 20-row step's 1.5-4 s).
PRELOAD = ["dagster", "dagster_postgres", "dagster._core.storage.event_log", "dagster._core.storage.runs",
           "dagster._core.storage.schedules", "dagster._core.storage.local_compute_log_manager", "dagster._daemon",
           "dagster._core.workspace.context", "dagster._core.execution.api", "pandas", "pyarrow.parquet", "pyarrow.fs",
           "fsspec.implementations.arrow", "apportion.pipelines.location", "apportion.steps", "apportion.storage",
           "apportion.models.taxonomy", "apportion.connectors.focus", "apportion.connectors.azure_exports",
           "apportion.split_rules", "apportion.splits", "apportion.pipelines.close", "apportion.connectors.stores",
           "tests.test_scale_out", "psycopg2.extras", "dagster._core.instance.factory", "dagster._core.secrets.loader",
           "dagster._core.storage.root", "dagster._core.storage.sqlite_storage", "dagster._core.utility_ops",
           "dagster._core.definitions.external_asset", "dagster._core.system_config.composite_descent",
           "dagster._core.definitions.repository_definition.repository_data_builder", "dagster._utils.test.definitions",
           "dagster._core.workspace.autodiscovery", "dotenv", "upath", "pyarrow.pandas_compat",
           "fsspec.implementations.local"]


def _job(config: str, name: str, selection):
    """The code location's assets (rebuilt from the config in every step process) in a job with the multiprocess
    executor left configurable (max_concurrent and start method per run)."""
    import dagster as dg

    from apportion.models.config import load_config
    from apportion.pipelines.location import build_definitions

    defs = build_definitions(load_config(config))
    job = dg.define_asset_job(name, selection=selection, executor_def=dg.multiprocess_executor)
    return dg.Definitions(assets=defs.assets, jobs=[job], resources=defs.resources).resolve_job_def(name)


@functools.lru_cache(maxsize=4)
def sources_job(config: str):
    """The shipped `sources` job's selection: land, line items, allocation of every source for one month."""
    import dagster as dg

    from apportion.pipelines.location import OUTPUTS

    return _job(config, "sources", dg.AssetSelection.all() - OUTPUTS)


@functools.lru_cache(maxsize=4)
def warehouse_job(config: str):
    """out_warehouse alone: the single writer that builds apportion.duckdb from the whole lake."""
    import dagster as dg

    return _job(config, "warehouse", dg.AssetSelection.assets("out_warehouse"))


# Dagster reconstructs the job twice in every step process (for the step's plan, then to run it): ~0.3 s each for this
# graph. Memoised per process (lru_cache above), and built once in the forkserver itself when the test names the
# config in SCALE_OUT_FORKSERVER_CONFIG before the first run starts the forkserver (it imports this module, PRELOAD):
# every step process forked from it then starts with the definitions in hand, as a long-lived code server would.
if os.environ.get("SCALE_OUT_FORKSERVER_CONFIG") and __name__ != "__main__":
    try:
        sources_job(os.environ["SCALE_OUT_FORKSERVER_CONFIG"])
    except Exception:  # noqa: BLE001 - a forkserver that fails to preload dies; each step then builds the job itself
        pass


def instance_env(home: Path, host: str, port: int, db: str, user: str) -> dict[str, str]:
    """The environment deploy/dagster.yaml reads (trust authentication: the password is not checked)."""
    return {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": host, "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_DB": db,
            "DAGSTER_PG_USERNAME": user, "DAGSTER_PG_PASSWORD": "unused"}


def instance_on_postgres(home: Path):
    """A Dagster instance from the shipped deploy/dagster.yaml (its DAGSTER_PG_* environment already set)."""
    import shutil

    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def run_month(instance, config: Path, month: str, concurrency: int, job: str = "sources_job"):
    """One partition run with its steps in separate processes (the multiprocess executor), forked from a forkserver
    that imported dagster and apportion once. The forkserver keeps the environment it started with: a test that
    changes the environment between runs stops it first (stop_forkserver)."""
    import dagster as dg

    run_config = {"execution": {"config": {"max_concurrent": concurrency,
                                           "start_method": {"forkserver": {"preload_modules": PRELOAD}}}}}
    recon = dg.build_reconstructable_job("tests.test_scale_out", job, reconstructable_args=(str(config),),
                                         reconstructor_working_directory=str(REPO))
    with dg.execute_job(recon, instance=instance, run_config=run_config,
                        tags={"dagster/partition": f"{month}-01"}) as result:
        return result.success, result.run_id


def warehouse_run_in_a_process(config: Path, month: str):
    """A warehouse run in a separate run-worker process (the instance from $DAGSTER_HOME); prints its run id."""
    import subprocess
    import sys

    code = ("import dagster as dg; from tests.test_scale_out import run_month; "
            f"ok, run_id = run_month(dg.DagsterInstance.get(), {str(config)!r}, {month!r}, 1, job='warehouse_job'); "
            "print(run_id); raise SystemExit(0 if ok else 1)")
    env = {k: v for k, v in os.environ.items() if k != "SCALE_OUT_FORKSERVER_CONFIG"}  # no sources job needed here
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)


def stop_forkserver() -> None:
    """The forkserver outlives the runs and keeps the environment it started with: stopped after a test."""
    import multiprocessing.forkserver

    multiprocessing.forkserver._forkserver._stop()


# ---------------------------------------------------------------------------------- reading the object store
_VERSION_SUMS: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = {}


def s3_sums(bucket, table: str, prefix: str = "apportion/lake") -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """(source, month) -> (Σ BilledCost, Σ EffectiveCost) of the partition version the bucket's CURRENT object
    names, read with plain boto3 + DuckDB (not through apportion's cache). The CURRENT objects are read every time;
    a version's sums are computed once per bucket (a version is immutable once uploaded: tests/test_scale_out.py's
    kill tests check that a new upload gets a new version key)."""
    import tempfile

    import duckdb

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in bucket.keys(f"{prefix}/{table}/"):
            if not key.endswith("/CURRENT"):
                continue
            part = key[: -len("/CURRENT")]
            version = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read().decode().strip()
            source = part.split("x_SourceName=")[1].split("/")[0]
            month = part.split("x_BillingMonth=")[1]
            cached = (bucket.name, part, version)
            if cached not in _VERSION_SUMS:
                files = []
                for k in bucket.keys(f"{part}/{version}/"):
                    files.append(Path(tmp) / k.replace("/", "_"))
                    files[-1].write_bytes(bucket.client.get_object(Bucket=bucket.name, Key=k)["Body"].read())
                assert files, f"{part}: CURRENT names {version}, which has no objects"
                _VERSION_SUMS[cached] = tuple(duckdb.connect().execute(
                    "SELECT sum(BilledCost), sum(EffectiveCost) FROM read_parquet(?)",
                    [[str(f) for f in files]]).fetchone())
            out[(source, month)] = _VERSION_SUMS[cached]
    return out


def expected_sums(expected: dict) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    return {k: (v["billed"], v["effective"]) for k, v in expected.items()}


def build_month(config: Path, month: str) -> None:
    """What the `sources` job's steps do for one month, in this process (the assets' order and hooks)."""
    from apportion import steps
    from apportion.models.config import load_config
    from apportion.models.taxonomy import load_taxonomy

    cfg = load_config(config)
    for name in SOURCES:
        src = cfg.source(name)
        steps.land(cfg, src, month)
        steps.build_line_items(cfg, src, steps.current_delivery(cfg, src, month))
        steps.publish_raw_current(cfg, src, month)
    tax = load_taxonomy(cfg.taxonomy)
    for name in SOURCES:
        steps.allocate(cfg, cfg.source(name), month, tax)


def build_month_in_a_worker(config: Path, month: str, fault: str | None = None):
    """build_month in a separate process (a worker), optionally killed at an APPORTION_FAULT_AT point."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "APPORTION_FAULT_AT"}
    if fault:
        env["APPORTION_FAULT_AT"] = fault
    code = f"from tests.test_scale_out import build_month; build_month({str(config)!r}, {month!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)


def current_object(bucket, table: str, source: str, month: str, prefix: str = "apportion/lake") -> str:
    key = f"{prefix}/{table}/x_SourceName={source}/x_BillingMonth={month}/CURRENT"
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read().decode().strip()


# ---------------------------------------------------------------------------------- tests
def test_config_keeps_the_warehouse_local_and_takes_object_storage_for_lake_and_raw(tmp_path):
    import pytest

    from apportion.models._yaml import ConfigError
    from apportion.models.config import REMOTE_ROOTS, load_config

    def cfg(extra: str) -> Path:
        p = tmp_path / "apportion.yaml"
        p.write_text(f"{extra}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: a\n    kind: focus\n    uri: bills\n")
        return p

    with pytest.raises(ConfigError) as err:
        load_config(cfg("warehouse: s3://bucket/prefix"))
    assert "line 1" in str(err.value) and "lake:" in str(err.value) and "local working folder" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(cfg("warehouse: data\nlake: s3://AKIAEXAMPLE:s3cr3t@bucket/lake"))
    assert "line 2" in str(err.value) and "s3cr3t" not in str(err.value) and "credentials" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(cfg("warehouse: data\nraw: ftp://bucket/raw"))
    assert "line 2" in str(err.value) and "ftp://" in str(err.value) and "az://" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(cfg("warehouse: data\nlake: s3://"))
    assert "name a bucket" in str(err.value)

    c = load_config(cfg("warehouse: data\nlake: s3://bucket/apportion/lake/\nraw: raw-here\npublish_to: s3://b2/pub"))
    assert c.lake == tmp_path / "data" / "lake" and c.lake_remote == "s3://bucket/apportion/lake"
    assert c.raw == tmp_path / "raw-here" and c.raw_remote is None
    assert REMOTE_ROOTS[c.lake.resolve()] == "s3://bucket/apportion/lake" and c.raw.resolve() not in REMOTE_ROOTS
    local = load_config(cfg("warehouse: data"))  # the default layout is unchanged, and forgets the remote
    assert local.lake == tmp_path / "data" / "lake" and local.raw == tmp_path / "data" / "raw"
    assert local.lake.resolve() not in REMOTE_ROOTS


def test_lake_and_raw_on_s3_a_killed_upload_keeps_the_previous_version_and_the_retry_completes(tmp_path, s3_bucket,
                                                                                               monkeypatch):
    """`apportion run` with lake and raw in a moto S3 bucket (over HTTP): every partition is on the object store
    and ties out to the generated rows; a process killed after uploading a new version but before switching
    CURRENT leaves the previous version in force; the retry completes; a second machine (an empty cache) builds
    the warehouse from the bucket alone; the copy published to the bucket reads the lake's s3:// objects."""
    import duckdb

    from apportion import steps
    from apportion.models.config import load_config

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)  # the S3 SDKs' standard endpoint variable
    cfg_path, expected = write_project(tmp_path, s3_bucket.name, n_months=2, rows=60)
    for month in months(2):
        build_month(cfg_path, month)
    steps.build_warehouse(load_config(cfg_path))
    steps.publish_warehouse(load_config(cfg_path))
    want = expected_sums(expected)
    assert len(want) == 6
    first = dict(want)
    assert s3_sums(s3_bucket, "line_items") == want
    assert s3_sums(s3_bucket, "allocations") == want  # Σ allocations = Σ line items, per source and month
    raw_keys = s3_bucket.keys("apportion/raw/")
    for source in SOURCES:
        for month in months(2):
            assert any(k.startswith(f"apportion/raw/{source}/{month}/files-") and k.endswith(f"focus-{month}.csv")
                       for k in raw_keys)
            for pointer in ("LANDED", "CURRENT"):
                assert f"apportion/raw/{source}/{month}/{pointer}" in raw_keys

    # a restated month whose line-items upload is killed before CURRENT switches
    old_li = current_object(s3_bucket, "line_items", "focus-a", "2025-02")
    restated = write_focus_month(tmp_path / "bills" / "focus-a", "focus-a", "2025-02", rows=70, seed=1)
    killed = build_month_in_a_worker(cfg_path, "2025-02", fault="lake:uploaded")
    assert killed.returncode == -9, killed.stderr[-2000:]
    versions = {k.split("/")[5] for k in s3_bucket.keys(
        "apportion/lake/line_items/x_SourceName=focus-a/x_BillingMonth=2025-02/") if k.split("/")[5].startswith("v-")}
    assert len(versions) == 2  # the new version was uploaded whole ...
    assert current_object(s3_bucket, "line_items", "focus-a", "2025-02") == old_li  # ... but is not in force
    assert s3_sums(s3_bucket, "line_items") == want and s3_sums(s3_bucket, "allocations") == want

    retry = build_month_in_a_worker(cfg_path, "2025-02")
    assert retry.returncode == 0, retry.stderr[-3000:]
    want[("focus-a", "2025-02")] = (restated["billed"], restated["effective"])
    assert current_object(s3_bucket, "line_items", "focus-a", "2025-02") != old_li
    assert s3_sums(s3_bucket, "line_items") == want
    assert s3_sums(s3_bucket, "allocations") == want

    # a second machine: same bucket, empty local folder; the warehouse step alone rebuilds from the object store
    other = tmp_path / "other.yaml"
    other.write_text(cfg_path.read_text().replace(f"warehouse: {tmp_path / 'work'}", f"warehouse: {tmp_path / 'w2'}"))
    cfg2 = load_config(other)
    assert steps.sync_raw_records(cfg2) == 6
    counts = steps.build_warehouse(cfg2)
    assert counts["line_items"] == 60 * 5 + 70 and counts["deliveries"] >= 6
    con = duckdb.connect(str(cfg2.duckdb_path), read_only=True)
    got = {(s, m): (b, e) for s, m, b, e in con.execute(
        "SELECT x_SourceName, x_BillingMonth, sum(BilledCost), sum(EffectiveCost) FROM allocations GROUP BY ALL").fetchall()}
    assert got == want
    current = con.execute("SELECT source, billing_month FROM deliveries WHERE is_current ORDER BY ALL").fetchall()
    assert current == sorted((s, m) for s in SOURCES for m in months(2))
    con.close()
    # the copy published to the bucket before the restatement still reads (the previous build's versions are
    # kept, recorded on the object store): its lake views read s3:// objects through fsspec, no DuckDB extension
    assert published_sums(tmp_path, s3_bucket) == first
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "w2" / "lake").rglob("*.parquet")}
    steps.build_warehouse(cfg2)  # nothing changed in the bucket: nothing is downloaded again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "w2" / "lake").rglob("*.parquet")} == cached
    assert steps.publish_warehouse(cfg2) == f"s3://{s3_bucket.name}/apportion/published/apportion.duckdb"
    assert published_sums(tmp_path, s3_bucket) == want


def published_sums(tmp_path: Path, bucket) -> dict:
    """Σ per source and month of line_items and allocations in the copy published to the bucket (downloaded with
    boto3)."""
    published = tmp_path / "published.duckdb"
    published.write_bytes(bucket.client.get_object(
        Bucket=bucket.name, Key="apportion/published/apportion.duckdb")["Body"].read())
    return published_file_sums(published, f"s3://{bucket.name}/apportion/lake")


def published_file_sums(published: Path, lake_uri: str) -> dict:
    """Σ per source and month of line_items and allocations in a published copy, its lake views reading the objects
    under `lake_uri` through apportion.storage.fsspec_filesystem; the two tie."""
    import duckdb

    from apportion.storage import fsspec_filesystem

    con = duckdb.connect(str(published), read_only=True)
    try:
        con.register_filesystem(fsspec_filesystem(lake_uri))
        paths = [p for (p,) in con.execute("SELECT path FROM lake_files").fetchall()]
        assert paths and all(p.startswith(f"{lake_uri}/") for p in paths)
        assert con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'allocations'").fetchone()[0]
        sums = {}
        for table in ("line_items", "allocations"):
            sums[table] = {(s, m): (b, e) for s, m, b, e in con.execute(
                "SELECT x_SourceName, x_BillingMonth, sum(BilledCost), sum(EffectiveCost) "
                f"FROM {table} GROUP BY ALL").fetchall()}
        assert sums["line_items"] == sums["allocations"]
        return sums["line_items"]
    finally:
        con.close()


def step_events(instance, run_id: str) -> dict[str, list[tuple[str, float]]]:
    """step key -> [(event type, timestamp)] of one run, from the instance's event log (PostgreSQL)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.step_key:
            out.setdefault(event.step_key, []).append((event.event_type_value, record.timestamp))
    return out


def postgres_instance(tmp_path, postgres_server, monkeypatch, prefix: str = "dagster"):
    """A Dagster instance from deploy/dagster.yaml on a PostgreSQL database of its own, its DAGSTER_HOME and
    DAGSTER_PG_* set in this process's environment (which subprocesses inherit)."""
    import psycopg

    db = f"{prefix}_{tmp_path.name[-12:].replace('-', '_')}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    for k, v in instance_env(tmp_path / "dagster_home", postgres_server.host, postgres_server.port, db,
                             postgres_server.user).items():
        monkeypatch.setenv(k, v)
    instance = instance_on_postgres(tmp_path / "dagster_home")
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    return instance


def _instance_for(tmp_path, s3_bucket, postgres_server, monkeypatch, cfg_path):
    """A Dagster instance from deploy/dagster.yaml on its own PostgreSQL database; the lake in the S3 bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint_url)
    instance = postgres_instance(tmp_path, postgres_server, monkeypatch)
    monkeypatch.setenv("SCALE_OUT_FORKSERVER_CONFIG", str(cfg_path))
    return instance


@pytest.mark.first
def test_backfill_x_3_sources_on_postgres_in_step_processes(tmp_path, s3_bucket, postgres_server, monkeypatch):
    """A backfill as production runs it: one `sources` run per month, its steps in separate processes (the
    multiprocess executor, at concurrency 1 for half the months and 2 for the rest), the Dagster instance from
    deploy/dagster.yaml on a real PostgreSQL, the lake and raw zone in S3 (moto over HTTP). Every partition
    materialises and ties out on the object store."""
    # Four months in `make test` (half at concurrency 1, half at 2: the suite must stay well under 10 minutes on two
    # cores; the twelve took 155 s of it, six 98 s); APPORTION_SCALE_MONTHS=12 runs the twelve issue 13 names (a step
    # process starts in about a second: the forkserver has imported and built what every step needs, PRELOAD), and
    # bench/bench_scale_out.py times the twelve with 200 rows per partition.
    n = int(os.environ.get("APPORTION_SCALE_MONTHS", "4"))
    cfg_path, expected = write_project(tmp_path, s3_bucket.name, n_months=n, rows=20)
    instance = _instance_for(tmp_path, s3_bucket, postgres_server, monkeypatch, cfg_path)
    try:
        _backfill(s3_bucket, instance, cfg_path, expected, n)
    finally:
        stop_forkserver()
        instance.dispose()


@pytest.mark.first
def test_a_killed_partition_run_keeps_the_lake_its_retry_completes_and_one_writer_builds(tmp_path, s3_bucket,
                                                                                        postgres_server, monkeypatch):
    """On the same production set-up, a month built by a `sources` run is restated: a run whose step processes are
    killed mid-partition (after their upload, before CURRENT moves) leaves the lake as it was, and its retry
    completes; two warehouse runs started together, both admitted by the pool, build one after the other (the
    warehouse writer lock, on the instance's PostgreSQL): one writer. (A test of its own: it runs beside the backfill
    on the other worker.)"""
    cfg_path, expected = write_project(tmp_path, s3_bucket.name, n_months=1, rows=20)
    instance = _instance_for(tmp_path, s3_bucket, postgres_server, monkeypatch, cfg_path)
    try:
        build_month(cfg_path, months(1)[0])  # the month as a sources run leaves it (the backfill test runs those)
        want = expected_sums(expected)
        assert s3_sums(s3_bucket, "line_items") == want and s3_sums(s3_bucket, "allocations") == want
        _kill_retry_and_one_writer(tmp_path, s3_bucket, instance, cfg_path, want, months(1)[-1], monkeypatch)
    finally:
        stop_forkserver()
        instance.dispose()


def _backfill(s3_bucket, instance, cfg_path, expected, n):
    import dagster as dg

    for i, month in enumerate(months(n)):
        ok, run_id = run_month(instance, cfg_path, month, concurrency=1 if i < n // 2 else 2)
        assert ok, month
        steps_run = step_events(instance, run_id)
        assert len(steps_run) == 10  # 3 x (raw, line items, allocations) + the month's line items
        assert all(any(t == "STEP_SUCCESS" for t, _ in ev) for ev in steps_run.values())
        pids = {e.dagster_event.pid for e in instance.all_logs(run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
        assert len(pids) == 10 and os.getpid() not in pids  # every step in its own process
    for source in SOURCES:
        for asset in ("raw", "core_line_items", "core_allocations"):
            key = dg.AssetKey(f"{asset}_{source.replace('-', '_')}")
            done = instance.get_materialized_partitions(key)
            assert done == {f"{m}-01" for m in months(n)}, (key, done)
    want = expected_sums(expected)
    assert len(want) == len(SOURCES) * n
    assert s3_sums(s3_bucket, "line_items") == want
    assert s3_sums(s3_bucket, "allocations") == want


def _kill_retry_and_one_writer(tmp_path, s3_bucket, instance, cfg_path, want, last, monkeypatch):
    # restated, then every step process killed after its upload, before CURRENT moves: nothing moves
    before = {(t, s): current_object(s3_bucket, t, s, last) for t in ("line_items", "allocations") for s in SOURCES}
    restated = write_focus_month(tmp_path / "bills" / "focus-b", "focus-b", last, rows=25, seed=1)
    monkeypatch.setenv("APPORTION_FAULT_AT", "lake:uploaded")
    ok, run_id = run_month(instance, cfg_path, last, concurrency=2)  # a forkserver started with the fault set
    stop_forkserver()  # the retry's step processes must not inherit it
    assert not ok
    failed = [k for k, ev in step_events(instance, run_id).items() if any(t == "STEP_FAILURE" for t, _ in ev)]
    assert failed and all(k.startswith("core_line_items_") for k in failed)
    assert {(t, s): current_object(s3_bucket, t, s, last) for t, s in before} == before
    assert s3_sums(s3_bucket, "line_items") == want and s3_sums(s3_bucket, "allocations") == want
    monkeypatch.delenv("APPORTION_FAULT_AT")
    ok, run_id = run_month(instance, cfg_path, last, concurrency=1)
    assert ok
    want[("focus-b", last)] = (restated["billed"], restated["effective"])
    assert s3_sums(s3_bucket, "line_items") == want
    assert s3_sums(s3_bucket, "allocations") == want

    # two warehouse runs at once, each in its own run-worker process (as two machines would): one writer at a time.
    # The pool's row is created once, as `dagster instance concurrency set` does at deploy time (two runs that both
    # create it lazily race on PostgreSQL's unique key: seen, UniqueViolation in one of them). deploy/dagster.yaml
    # gives it one slot; the test then opens a second, which is what Dagster's slot claim does by itself when two
    # runs claim at the same instant (it checks for a free slot and assigns it in separate autocommitted statements:
    # two builds overlapped twice on 2 December). The warehouse writer lock (pipelines/writer_lock.py, a PostgreSQL
    # advisory lock here) must keep the builds apart whatever the pool admitted.
    instance.event_log_storage.initialize_concurrency_limit_to_default("apportion_warehouse")
    assert instance.event_log_storage.get_concurrency_info("apportion_warehouse").slot_count == 1
    instance.event_log_storage.set_concurrency_slots("apportion_warehouse", 2)
    workers = [warehouse_run_in_a_process(cfg_path, last) for _ in range(2)]
    run_ids = [w.communicate(timeout=900)[0].strip().splitlines()[-1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    sections = []
    for run_id in run_ids:
        assert instance.get_run_by_id(run_id).is_success
        assert list(step_events(instance, run_id)) == ["out_warehouse"]  # the warehouse is built once per run
        said = [(r.timestamp, r.user_message) for r in instance.all_logs(run_id) if r.dagster_event is None]
        acquired = [ts for ts, m in said if m.startswith("warehouse writer lock acquired (PostgreSQL advisory lock")]
        released = [ts for ts, m in said if m.startswith("warehouse writer lock released")]
        assert len(acquired) == len(released) == 1, said
        sections.append((acquired[0], released[0]))
    sections.sort()
    assert sections[0][1] <= sections[1][0], f"two warehouse writers at once: {sections}"
    assert published_sums(tmp_path, s3_bucket) == want
