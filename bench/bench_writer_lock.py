"""Why the warehouse needs its own writer lock: Dagster's pool slot claim against the lock, under the same contention.

    python bench/bench_writer_lock.py [--trials 200]

Starts a throwaway PostgreSQL (as bench/bench_scale_out.py does) and the instance from deploy/dagster.yaml on it. Each
trial: a pool with ONE slot, two threads released together by a barrier, each calling the event log storage's
`claim_concurrency_slot` for a step of its own run (what two run workers do when their warehouse steps are ready at
the same time); counted when both come back CLAIMED. Then the same two-at-once contention on the writer lock
(pipelines/writer_lock.py, the PostgreSQL advisory lock): counted when both held it at once. Prints and appends to
bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()

    import dagster as dg
    import psycopg
    from bench_scale_out import start_postgres

    from apportion.pipelines.writer_lock import warehouse_writer
    from tests.test_scale_out import instance_env

    base = Path(tempfile.mkdtemp(prefix="apportion-bench-pg-"))
    port, stop_pg, _ = start_postgres(base)
    home = Path(tempfile.mkdtemp(prefix="apportion-bench-home-"))
    try:
        with psycopg.connect(f"postgresql://apportion@127.0.0.1:{port}/postgres", autocommit=True) as con:
            con.execute('CREATE DATABASE "race"')
        os.environ.update(instance_env(home, "127.0.0.1", port, "race", "apportion"))
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        instance = dg.DagsterInstance.from_config(str(home))
        storage = instance.event_log_storage
        storage.set_concurrency_slots("apportion_warehouse", 1)

        def together(work) -> list:
            barrier, out = threading.Barrier(2), []
            threads = [threading.Thread(target=lambda i=i: (barrier.wait(), out.append(work(i)))) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out

        both_claimed = 0
        for _ in range(args.trials):
            runs = [uuid.uuid4().hex for _ in range(2)]
            got = together(lambda i: storage.claim_concurrency_slot("apportion_warehouse", runs[i],
                                                                    "out_warehouse").is_claimed)
            both_claimed += all(got)
            for run in runs:
                storage.free_concurrency_slots_for_run(run)

        cfg = SimpleNamespace(warehouse=home / "warehouse", publish_to="s3://bench/warehouse")
        holders, both_held = [0], 0

        def hold(_):
            with warehouse_writer(cfg, instance, log=lambda m: None):
                holders[0] += 1
                peak = holders[0]
                time.sleep(0.005)
                holders[0] -= 1
            return peak

        # each thread its own connection (index_connection): as two processes would be
        for _ in range(args.trials):
            both_held += max(together(hold)) > 1
        instance.dispose()
    finally:
        import subprocess

        subprocess.run(stop_pg, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    result = {"bench": "writer_lock", "trials": args.trials, "pool_slot_given_to_both": both_claimed,
              "writer_lock_held_by_both": both_held}
    print(f"{args.trials} trials, two claimers at once on a one-slot pool: both got the slot {both_claimed} times "
          f"({both_claimed / args.trials:.0%}); the writer lock was held by both {both_held} times")
    with open(REPO / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
