"""Benchmark: a backfill of N months x 3 sources with the lake and raw zone in S3 and Dagster on PostgreSQL.

    python bench/bench_scale_out.py [--months 12] [--rows 200] [--concurrency 1 2]

Starts a moto S3 server (over HTTP) and a throwaway PostgreSQL (initdb + pg_ctl, as tests/conftest.py does), then
for each concurrency: a fresh bucket and instance database, one `sources` run per month with its steps in
separate processes (the multiprocess executor, forkserver) at that concurrency, then one warehouse run (the single
writer). Prints and appends to bench/results.jsonl: the backfill's wall time, seconds per month, and the warehouse
step's time (from STEP_START to STEP_SUCCESS in the event log) with its lake sync share.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(base: Path) -> tuple[int, list[str], Path]:
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(base / "data"), "-U", "apportion", "--auth=trust",
                             "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-o",
                             f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "-w", "start"],
                   check=True, capture_output=True)
    return port, prefix + [str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"], bindir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import boto3
    import psycopg
    from moto.server import ThreadedMotoServer

    from apportion import steps
    from apportion.models.config import load_config
    from tests.test_scale_out import (
        SOURCES,
        expected_sums,
        instance_env,
        instance_on_postgres,
        months,
        run_month,
        step_events,
        stop_forkserver,
        write_project,
    )

    port = _free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                      AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}")
    base = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    pg_base = Path(tempfile.mkdtemp(prefix="bench-scale-out-pg-"))  # owned by the postgres user when run as root
    pg_port, stop_pg, _ = start_postgres(pg_base)
    results = []
    try:
        for conc in args.concurrency:
            bucket = f"bench-{conc}-{os.getpid()}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            root = base / f"c{conc}"
            cfg_path, expected = write_project(root, bucket, n_months=args.months, rows=args.rows)
            db = f"dagster_c{conc}"
            with psycopg.connect(f"postgresql://apportion@127.0.0.1:{pg_port}/postgres", autocommit=True) as con:
                con.execute(f'CREATE DATABASE "{db}"')
            os.environ.update(instance_env(root / "dagster_home", "127.0.0.1", pg_port, db, "apportion"))
            os.environ["SCALE_OUT_FORKSERVER_CONFIG"] = str(cfg_path)  # the forkserver builds the job once (PRELOAD)
            instance = instance_on_postgres(root / "dagster_home")
            start = time.perf_counter()
            for month in months(args.months):
                ok, _ = run_month(instance, cfg_path, month, conc)
                if not ok:
                    raise SystemExit(f"{month}: the sources run failed")
            backfill = time.perf_counter() - start
            start = time.perf_counter()
            ok, run_id = run_month(instance, cfg_path, months(args.months)[-1], 1, job="warehouse_job")
            publish = time.perf_counter() - start
            ev = step_events(instance, run_id)["out_warehouse"]
            step = max(t for k, t in ev if k == "STEP_SUCCESS") - min(t for k, t in ev if k == "STEP_START")
            cfg = load_config(cfg_path)  # the lake-wide sync alone, on an empty cache: what a fresh pod pays
            shutil.rmtree(cfg.lake, ignore_errors=True)
            t0 = time.perf_counter()
            for table in (steps.LINE_ITEMS, steps.ALLOCATIONS, steps.QUARANTINE):
                __import__("apportion.lake").lake.current_files(cfg.lake, table)
            sync_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            for table in (steps.LINE_ITEMS, steps.ALLOCATIONS, steps.QUARANTINE):
                __import__("apportion.lake").lake.current_files(cfg.lake, table)
            sync_warm = time.perf_counter() - t0
            con = __import__("duckdb").connect(str(cfg.duckdb_path), read_only=True)
            got = {(s, m): (b, e) for s, m, b, e in con.execute(
                "SELECT x_SourceName, x_BillingMonth, sum(BilledCost), sum(EffectiveCost) FROM allocations "
                "GROUP BY ALL").fetchall()}
            con.close()
            if got != expected_sums(expected):
                raise SystemExit("the warehouse does not tie out to the generated rows")
            row = {"bench": "scale_out", "months": args.months, "sources": len(SOURCES), "rows_per_partition": args.rows,
                   "concurrency": conc, "backfill_s": round(backfill, 1),
                   "s_per_month": round(backfill / args.months, 1), "warehouse_run_s": round(publish, 1),
                   "warehouse_step_s": round(step, 1), "lake_sync_cold_s": round(sync_cold, 2),
                   "lake_sync_warm_s": round(sync_warm, 2), "cpus": os.cpu_count(),
                   "load_avg_1m": round(os.getloadavg()[0], 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
            instance.dispose()
            stop_forkserver()
    finally:
        subprocess.run(stop_pg, capture_output=True)
        s3.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(pg_base, ignore_errors=True)
    with open(REPO / "bench" / "results.jsonl", "a") as out:
        for row in results:
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
