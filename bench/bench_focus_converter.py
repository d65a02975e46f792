"""Benchmark: the whole nightly job vs the FinOps Foundation's focus-converter 1.0 on one legacy CUR CSV.

    python bench/bench_focus_converter.py [--rows 1000000] [--repeat 2] [--keep] [--timeout 900]

1. builds a legacy CUR CSV of about N rows from the real legacy sample (`../shared/data/aws/test_cur.csv`,
   read in place; 19 rows, 131 columns), each copy with its own line item id (`<id>-<copy>`) so every row is
   a line item of its own, not a re-delivered duplicate. The header stays as AWS delivers it (`lineItem/UsageStartDate`,
   dates as text); the 7 columns focus-converter's `aws-cur` plans require that this 2018 sample lacks
   (`bill/InvoicingEntity`, `lineItem/LegalEntity`, ...) are added empty, which both tools accept. The file lands
   in a legacy report layout (`<report>/20180601-20180701/`) under bench/out/;
2. runs, back to back and alternating (ours, theirs, ours, theirs for `--repeat 2`), on that same CSV file:
   - `apportion run` for the month (land, FOCUS line items with validation, allocation with the demo taxonomy,
     warehouse, finance pack, report), on a fresh warehouse each time;
   - `focus-converter convert --provider aws-cur --data-format csv` (its own venv: `.cache/focus-converter-venv`,
     see docs/benchmark.md). `aws-cur` is the converter's plan set for the legacy `category/Name` header: it
     parses the text dates itself (its `aws` plan set is for snake_case exports with typed timestamps, e.g.
     CUR 2.0 Parquet, and fails on text dates). Nothing is converted for it: the converter reads the same bytes;
3. checks both outputs hold every input row (converter: the rows of its Parquet output; ours: line items +
   quarantined rows of the month in the published warehouse);
4. prints each run's seconds, peak RSS and the load average (`os.getloadavg`, as `uptime` shows) before and
   after it, the ratio per pair and of the medians, and appends a line to bench/results.jsonl.

Skips (exit 0, with the reason) when the converter venv or the shared sample is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE = REPO.parent / "shared" / "data" / "aws" / "test_cur.csv"
CONVERTER = REPO / ".cache" / "focus-converter-venv" / "bin" / "focus-converter"
MONTH = "2018-06"
PERIOD = "20180601-20180701"
MONEY_SCALE = Decimal("1e-12")  # apportion keeps money as DECIMAL(38,12), each line rounded half up


def run_measured(cmd: list[str], timeout: float | None = None) -> tuple[float, int, int, str, float]:
    """(seconds, peak RSS in MiB of the process, exit code, stderr tail, CPU seconds user + system), as
    bench_allocation.py measures; CPU seconds depend far less than wall time on what else the machine runs.
    Past `timeout` the process group is killed (focus-converter 1.0 can hang in its workers after an error)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL)) if timeout else None
    if timer:
        timer.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if timer:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (time.perf_counter() - start, usage.ru_maxrss // 1024, proc.returncode, stderr.decode(errors="replace"),
            usage.ru_utime + usage.ru_stime)


# Columns focus-converter 1.0's `aws-cur` plans read (conversion_configs/aws-cur/*.yaml in its package) that the
# 2018 legacy sample does not have: it stops with "Column(s) ... not found in data" without them. Added empty.
CONVERTER_MISSING_COLUMNS = (
    "bill/InvoicingEntity", "lineItem/LegalEntity", "pricing/RateCode", "pricing/RateId", "product/region",
    "reservation/EffectiveCost", "savingsPlan/SavingsPlanEffectiveCost",
)


def build_csv(path: Path, rows: int) -> tuple[int, Decimal]:
    """Copies of the sample's rows, each copy's line item ids made unique, the header as delivered plus the
    converter's missing columns (empty); returns the row count written and its unblended cost, summed by hand
    (each line at apportion's scale, DECIMAL(38,12) rounded half up)."""
    with open(SAMPLE, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        sample = [r + [""] * (len(header) - len(r)) for r in reader if r]
    extra = [c for c in CONVERTER_MISSING_COLUMNS if c not in header]
    id_col = header.index("identity/LineItemId")
    cost_col = header.index("lineItem/UnblendedCost")
    copies = max(1, round(rows / len(sample)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header + extra)
        blank = [""] * len(extra)
        for copy in range(copies):
            for r in sample:
                r = list(r)
                r[id_col] = f"{r[id_col]}-{copy}"
                writer.writerow(r + blank)
    return copies * len(sample), sum(money(r[cost_col]) for r in sample) * copies


def money(text: str) -> Decimal:
    return Decimal(text or "0").quantize(MONEY_SCALE, rounding=ROUND_HALF_UP)


def csv_facts(path: Path) -> tuple[int, Decimal]:
    """(data rows, summed unblended cost) of a CSV written by build_csv, for --keep."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        cost_col = next(reader).index("lineItem/UnblendedCost")
        rows, total = 0, Decimal(0)
        for r in reader:
            rows += 1
            total += money(r[cost_col])
    return rows, total


def converter_facts(converted: Path) -> tuple[int, float]:
    """(rows, sum of BilledCost) of the converter's Parquet output."""
    import duckdb

    files = sorted(str(p) for p in converted.rglob("*.parquet"))
    if not files:
        return 0, 0.0
    con = duckdb.connect()
    try:
        rows, billed = con.execute("select count(*), sum(BilledCost) from read_parquet(?)", [files]).fetchone()
    finally:
        con.close()
    return rows, float(billed or 0)


def apportion_facts(config: Path) -> tuple[int, int, Decimal]:
    """(line items, quarantined rows, sum of BilledCost) of the month in the published warehouse."""
    from apportion.db import open_published
    from apportion.models.config import load_config

    con = open_published(load_config(config))
    try:
        items, billed = con.execute("select count(*), sum(BilledCost) from line_items").fetchone()
        quarantined = con.execute("select count(*) from quarantined_rows").fetchone()[0]
    finally:
        con.close()
    return items, quarantined, Decimal(billed or 0)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2, help="pairs of runs (ours, theirs), alternating")
    ap.add_argument("--out", default=str(HERE / "out" / "focus-converter"))
    ap.add_argument("--keep", action="store_true", help="reuse the generated CSV if present")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before either process is stopped")
    args = ap.parse_args()
    if not CONVERTER.exists():
        print(f"SKIP: focus-converter is not installed at {CONVERTER} (python3 -m venv .cache/focus-converter-venv && "
              ".cache/focus-converter-venv/bin/pip install focus-converter==1.0.0 'multimethod<1.11' 'click<8.2')")
        return 0
    if not SAMPLE.exists():
        print(f"SKIP: the legacy CUR sample {SAMPLE} is absent (../shared/data)")
        return 0

    out = Path(args.out)
    data = out / "bucket" / "legacy" / "apportion-legacy" / PERIOD / "apportion-legacy-00001.csv"
    if args.keep and data.exists() and "lineItem/UnblendedCost" in data.open().readline():
        rows, unblended = csv_facts(data)
    else:  # (a file from an older version of this bench has the snake_case header: rebuilt)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        rows, unblended = build_csv(data, args.rows)
        print(f"generate   {rows:>12,} rows  {data.stat().st_size / 2**20:8.1f} MiB  "
              f"{time.perf_counter() - start:8.1f} s", flush=True)

    config = out / "apportion.yaml"
    shutil.copy(REPO / "demo" / "taxonomy.yaml", out / "taxonomy.yaml")
    config.write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-legacy\n    kind: aws_cur\n"
        "    uri: bucket/legacy/apportion-legacy\n    options:\n      format: legacy\n"
    )
    apportion = str(Path(sys.executable).with_name("apportion"))
    converted = out / "converted"
    ours_cmd = [apportion, "run", "--config", str(config), "--month", MONTH, "--json"]
    theirs_cmd = [str(CONVERTER), "convert", "--provider", "aws-cur", "--data-path", str(data),
                  "--data-format", "csv", "--export-path", str(converted)]

    runs: list[dict] = []
    problems: list[str] = []
    for pair in range(1, args.repeat + 1):
        # ours: a fresh warehouse each time, so every run does the whole month
        shutil.rmtree(out / "data", ignore_errors=True)
        before = load()
        t, rss, rc, err, cpu = run_measured(ours_cmd, timeout=args.timeout)
        run = {"tool": "apportion", "pair": pair, "s": round(t, 2), "cpu_s": round(cpu, 1), "peak_rss_mib": rss, "exit": rc,
               "load_before": before, "load_after": load()}
        if rc in (0, 3):
            items, quarantined, billed = apportion_facts(config)
            run.update(line_items=items, quarantined=quarantined, billed=str(billed))
            if items + quarantined != rows:
                problems.append(f"apportion run {pair}: {items:,} line items + {quarantined:,} quarantined "
                                f"!= {rows:,} rows in")
            if billed != unblended:
                problems.append(f"apportion run {pair}: BilledCost {billed} != unblended cost of the file {unblended}")
        else:
            problems.append(f"apportion run {pair} failed ({rc}): {err.strip()[-1000:]}")
        runs.append(run)
        print(f"pair {pair}  apportion run    {t:8.1f} s  cpu {cpu:6.1f} s  peak {rss:6,} MiB  load {before} -> {run['load_after']}"
              f"  {run.get('line_items', 0):,} line items, {run.get('quarantined', 0):,} quarantined", flush=True)

        shutil.rmtree(converted, ignore_errors=True)
        before = load()
        t, rss, rc, err, cpu = run_measured(theirs_cmd, timeout=args.timeout)
        run = {"tool": "focus-converter", "pair": pair, "s": round(t, 2), "cpu_s": round(cpu, 1), "peak_rss_mib": rss, "exit": rc,
               "load_before": before, "load_after": load()}
        if rc == 0:
            conv_rows, billed = converter_facts(converted)
            run.update(rows_out=conv_rows, billed=round(billed, 6),
                       output_mib=round(sum(p.stat().st_size for p in converted.rglob("*") if p.is_file()) / 2**20, 1))
            if conv_rows != rows:
                problems.append(f"focus-converter run {pair}: {conv_rows:,} rows out != {rows:,} rows in")
        else:
            lines = [ln for ln in err.splitlines() if "Error" in ln or "error" in ln]
            problems.append(f"focus-converter run {pair} exit {rc} after {t:.1f} s: "
                            + (lines[-1].strip() if lines else err.strip()[-300:]))
        runs.append(run)
        print(f"pair {pair}  focus-converter  {t:8.1f} s  cpu {cpu:6.1f} s  peak {rss:6,} MiB  load {before} -> {run['load_after']}"
              f"  {run.get('rows_out', 0):,} rows out", flush=True)

    ours = [r["s"] for r in runs if r["tool"] == "apportion" and r["exit"] in (0, 3)]
    theirs = [r["s"] for r in runs if r["tool"] == "focus-converter" and r["exit"] == 0]
    pairs = [round(c["s"] / a["s"], 2) for a, c in zip(runs[::2], runs[1::2])
             if a["exit"] in (0, 3) and c["exit"] == 0]
    result = {
        "bench": "focus_converter", "rows": rows, "csv_mib": round(data.stat().st_size / 2**20, 1),
        "converter_input": "the same CSV, header as delivered + 7 empty columns; --provider aws-cur",
        "apportion_run_s": ours, "focus_converter_s": theirs,
        "apportion_run_peak_rss_mib": max((r["peak_rss_mib"] for r in runs if r["tool"] == "apportion"), default=None),
        "focus_converter_peak_rss_mib": max((r["peak_rss_mib"] for r in runs if r["tool"] != "apportion"),
                                            default=None),
        "apportion_run_cpu_s": [r["cpu_s"] for r in runs if r["tool"] == "apportion" and r["exit"] in (0, 3)],
        "focus_converter_cpu_s": [r["cpu_s"] for r in runs if r["tool"] != "apportion" and r["exit"] == 0],
        "speedup_per_pair": pairs,
        "speedup_median": round(statistics.median(theirs) / statistics.median(ours), 2) if ours and theirs else None,
        "runs": runs, "problems": problems, "cpus": os.cpu_count(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps({**result, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
