"""Benchmark: does the nightly run cost grow with history? And does a backfill publish once?

    python bench/bench_history.py [--rows 200000] [--months 12] [--repeat 2]

1. generates N months of CUR 2.0 (the demo generator, ROWS rows per month);
2. project A: the lake holds only the 2 most recent months; project B: all N months (built by one
   `apportion run --all`, timed: the backfill); then times `apportion run` of the 2 most recent months in A and
   in B, alternately, --repeat times each;
3. prints both times, their ratio (target <= 1.2) and how many warehouse builds the backfill made
   (one `publish` run; read from the run's persistent Dagster instance);
4. prints where the fastest A and B runs spent their time: each Dagster step (from the instance's step stats),
   the Dagster runs' time outside the steps, and the process's time outside the runs (start-up, imports).
Each timed run is its own process; the minimum of --repeat runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def months_back(n: int, last: str = "2026-10") -> list[str]:
    y, m = map(int, last.split("-"))
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return sorted(out)


def project(root: Path, bucket: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", root / "taxonomy.yaml")
    cfg = root / "apportion.yaml"
    cfg.write_text(f"warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n"
                   f"    uri: {bucket / 'cur' / 'apportion-demo'}\n")
    return cfg


def timed(args: list[str]) -> float:
    return timed_with_steps(args)[0]


def timed_with_steps(args: list[str], dagster_home: Path | None = None) -> tuple[float, dict]:
    """(seconds, where they went): the Dagster steps of the runs this command made (read from its instance)."""
    apportion = str(Path(sys.executable).with_name("apportion"))
    wall_start = time.time()
    start = time.perf_counter()
    proc = subprocess.run([apportion, *args], capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        print(proc.stderr[-3000:], proc.stdout[-3000:], sep="\n", file=sys.stderr)  # --json: the errors are here
        raise SystemExit(f"apportion {' '.join(args)} failed: rc {proc.returncode}")
    return took, (step_times(dagster_home, wall_start, took) if dagster_home else {})


def step_times(home: Path, since: float, took: float) -> dict:
    """Per run (job month) and step: seconds; plus the runs' time outside their steps and the process's outside
    its runs."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    out: dict = {}
    in_runs = in_steps = 0.0
    for run in reversed(instance.get_runs(limit=50)):
        stats = instance.get_run_stats(run.run_id)
        if not stats.start_time or stats.start_time < since:
            continue
        label = f"{run.job_name} {run.tags.get('dagster/partition', '')[:7]}"
        steps = {s.step_key: round(s.end_time - s.start_time, 2) for s in instance.get_run_step_stats(run.run_id)
                 if s.end_time and s.start_time}
        out[label] = steps
        in_runs += stats.end_time - stats.start_time
        in_steps += sum(steps.values())
    out["dagster outside steps"] = round(in_runs - in_steps, 2)
    out["process outside runs"] = round(took - in_runs, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "out" / "history"))
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    months = months_back(args.months)
    bucket = out / "bucket"
    for m in months:  # one month at a time: each month gets ROWS rows
        subprocess.run([sys.executable, "-m", "apportion.demo.generators.aws_cur", str(bucket), "--months", m,
                        "--rows", str(args.rows)], check=True, capture_output=True)
    open_two = months[-2:]
    run_two = ["run", "--month", open_two[0], "--month", open_two[1], "--json"]

    cfg_a = project(out / "two", bucket)
    timed(["run", "--config", str(cfg_a), *run_two[1:]])  # the lake holds the 2 months

    cfg_b = project(out / "all", bucket)
    backfill = timed(["run", "--config", str(cfg_b), "--all", "--json"])
    # A and B alternately (the machine may be shared: a load that comes and goes hits both alike)
    runs_a, runs_b = [], []
    for _ in range(args.repeat):
        runs_a.append(timed_with_steps(["run", "--config", str(cfg_a), *run_two[1:]], out / "two" / "data" / ".dagster"))
        runs_b.append(timed_with_steps(["run", "--config", str(cfg_b), *run_two[1:]], out / "all" / "data" / ".dagster"))
    (a, a_steps), (b, b_steps) = (min(r, key=lambda x: x[0]) for r in (runs_a, runs_b))

    import dagster as dg

    runs = dg.DagsterInstance.from_config(str(out / "all" / "data" / ".dagster")).get_runs()
    publishes_in_backfill = sum(1 for r in runs if r.job_name == "publish") - args.repeat
    result = {"rows_per_month": args.rows, "months_in_lake_a": 2, "months_in_lake_b": args.months,
              "nightly_2_months_a_s": round(a, 2), "nightly_2_months_b_s": round(b, 2), "ratio": round(b / a, 3),
              "all_a_s": [round(t, 2) for t, _ in runs_a], "all_b_s": [round(t, 2) for t, _ in runs_b],
              "backfill_s": round(backfill, 2), "backfill_months": args.months,
              "warehouse_builds_in_backfill": publishes_in_backfill,
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({**result, "steps_a": a_steps, "steps_b": b_steps}, indent=2))
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "history", **result, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                 + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
