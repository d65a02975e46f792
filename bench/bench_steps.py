"""Benchmark: rows/s of each step of the nightly job, and the month's output sizes.

    python bench/bench_steps.py --rows 1000000 [--keep]

Generates one month of CUR 2.0 Parquet with the demo generator (as bench_allocation.py does, same folder
layout, so `--keep` reuses its data), then calls the steps one by one in this process, exactly as the
nightly job does (land, line items, allocate, warehouse, finance pack, report), timing each and sampling
this process's RSS, and prints rows/s per step and the sizes of what the month wrote: the raw delivery, the
lake (line items, quarantine, allocations), the DuckDB file and the finance pack. Appends one line to
`bench/results.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MONTH = "2026-10"


def tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class RssSampler:
    """Peak RSS of this process while a step runs (ru_maxrss only ever grows, so sample /proc)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as fh:
                self.peak = max(self.peak, int(fh.read().split()[1]) * page)
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def prepare(rows: int, out_root: Path, keep: bool) -> Path:
    out = out_root / f"rows-{rows}"
    bucket = out / "bucket"
    if not (keep and bucket.exists()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "apportion.demo.generators.aws_cur", str(bucket), "--months", MONTH,
                        "--rows", str(rows)], check=True, stdout=subprocess.DEVNULL)
        print(f"generate   {rows:>12,} rows  {time.perf_counter() - start:8.1f} s")
    shutil.rmtree(out / "data", ignore_errors=True)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", out / "taxonomy.yaml")
    (out / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n"
        "    uri: bucket/cur/apportion-demo\n"
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--keep", action="store_true", help="reuse generated data if present")
    args = ap.parse_args()
    out = prepare(args.rows, Path(args.out), args.keep)

    from apportion import steps
    from apportion.models.config import load_config
    from apportion.report import write_report

    cfg = load_config(out / "apportion.yaml")
    source = cfg.sources[0]
    timings: dict[str, dict] = {}

    def timed(name: str, fn, *a, **kw):
        with RssSampler() as rss:
            start = time.perf_counter()
            result = fn(*a, **kw)
            seconds = time.perf_counter() - start
        timings[name] = {"s": round(seconds, 2), "rows_per_s": round(args.rows / seconds),
                         "peak_rss_mib": rss.peak // 2**20}
        print(f"{name:<12} {seconds:8.1f} s  {args.rows / seconds:>12,.0f} rows/s  peak {rss.peak // 2**20:6,} MiB",
              flush=True)
        return result

    total_start = time.perf_counter()
    delivery = timed("land", steps.land, cfg, source, MONTH)
    stats = timed("line_items", steps.build_line_items, cfg, source, delivery)
    timed("allocate", steps.allocate, cfg, source, MONTH)
    timed("warehouse", steps.build_warehouse, cfg)
    pack = timed("exports", steps.export_month, cfg, MONTH)
    timed("report", write_report, cfg)
    total = time.perf_counter() - total_start
    sizes = {
        "raw_bucket_mib": tree_bytes(out / "bucket") / 2**20,
        "lake_line_items_mib": tree_bytes(steps.partition_dir(cfg, steps.LINE_ITEMS, source.name, MONTH)) / 2**20,
        "lake_quarantine_mib": tree_bytes(steps.partition_dir(cfg, steps.QUARANTINE, source.name, MONTH)) / 2**20,
        "lake_allocations_mib": tree_bytes(steps.partition_dir(cfg, steps.ALLOCATIONS, source.name, MONTH)) / 2**20,
        "duckdb_file_mib": tree_bytes(cfg.duckdb_path) / 2**20,
        "finance_pack_mib": tree_bytes(pack) / 2**20,
    }
    sizes = {k: round(v, 1) for k, v in sizes.items()}
    result = {
        "bench": "steps", "rows": args.rows, "line_items": stats.rows, "quarantined": stats.quarantined_rows,
        "total_s": round(total, 2), "rows_per_s": round(args.rows / total),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "steps": timings, "sizes": sizes, "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps({**result, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
