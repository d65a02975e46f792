"""Benchmark: the whole nightly job vs the FinOps Foundation's focus-converter 1.0 on one legacy CUR CSV.

    python bench/bench_focus_converter.py [--rows 1000000] [--keep]

1. builds a legacy CUR CSV of about N rows from the real legacy sample (`../shared/data/aws/test_cur.csv`,
   read in place; 19 rows, 120+ columns), each copy with its own line item id (`<id>-<copy>`) so every row is
   a line item of its own, not a re-delivered duplicate; the header in the snake_case (Athena) spelling,
   which is what focus-converter reads, plus the few columns it requires that the sample lacks, empty; the
   file lands in a legacy report layout (`<report>/20180601-20180701/`) under bench/out/;
2. times focus-converter's conversion of that file to FOCUS Parquet (its own venv: `.cache/focus-converter-venv`,
   see docs/benchmark.md for the install line);
3. times `apportion run` for the month on the same file: land, FOCUS line items with validation, allocation
   with the demo taxonomy, warehouse, finance pack, report;
4. prints both, their peak RSS and the ratio, and appends a line to bench/results.jsonl.

Skips (exit 0, with the reason) when the converter venv or the shared sample is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE = REPO.parent / "shared" / "data" / "aws" / "test_cur.csv"
CONVERTER = REPO / ".cache" / "focus-converter-venv" / "bin" / "focus-converter"
MONTH = "2018-06"
PERIOD = "20180601-20180701"


def run_measured(cmd: list[str], timeout: float | None = None) -> tuple[float, int, int, str]:
    """(seconds, peak RSS in MiB of the process, exit code, stderr tail), as bench_allocation.py measures.
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
    return time.perf_counter() - start, usage.ru_maxrss // 1024, proc.returncode, stderr.decode(errors="replace")


# Columns focus-converter 1.0 reads from an AWS export (snake_case, as Athena and CUR 2.0 spell them); the
# sample lacks a few (pricing_rate_code, bill_invoicing_entity, ...): they are added empty, which both tools accept.
CONVERTER_COLUMNS = (
    "bill_bill_type", "bill_billing_period_end_date", "bill_billing_period_start_date", "bill_invoicing_entity",
    "bill_payer_account_id", "line_item_availability_zone", "line_item_currency_code", "line_item_legal_entity",
    "line_item_line_item_description", "line_item_line_item_type", "line_item_product_code",
    "line_item_usage_account_id", "line_item_usage_amount", "line_item_usage_end_date", "line_item_usage_start_date",
    "pricing_public_on_demand_cost", "pricing_rate_code", "pricing_rate_id", "pricing_unit", "product_region_code",
    "product_sku", "reservation_effective_cost", "reservation_total_reserved_units",
    "savings_plan_savings_plan_effective_cost",
)


def build_csv(path: Path, rows: int) -> int:
    """Copies of the sample's rows, each copy's line item ids made unique, header in snake_case (the converter
    does not read `category/Name` headers; apportion reads both); returns the row count written."""
    from apportion.connectors.aws_cur import canonical_column

    with open(SAMPLE, newline="") as fh:
        reader = csv.reader(fh)
        raw_header = next(reader)
        sample = [r + [""] * (len(raw_header) - len(r)) for r in reader if r]
    header = [canonical_column(h) for h in raw_header]
    extra = [c for c in CONVERTER_COLUMNS if c not in header]
    id_col = header.index("identity_line_item_id")
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
    return copies * len(sample)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(HERE / "out" / "focus-converter"))
    ap.add_argument("--keep", action="store_true", help="reuse the generated CSV if present")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before the converter is stopped")
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
    if args.keep and data.exists():
        with open(data, "rb") as fh:
            rows = sum(1 for _ in fh) - 1
    else:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        rows = build_csv(data, args.rows)
        print(f"generate   {rows:>12,} rows  {data.stat().st_size / 2**20:8.1f} MiB  {time.perf_counter() - start:8.1f} s")

    converted = out / "converted"
    shutil.rmtree(converted, ignore_errors=True)
    t_conv, rss_conv, rc, err = run_measured([str(CONVERTER), "convert", "--provider", "aws", "--data-path",
                                              str(data), "--data-format", "csv",
                                              "--export-path", str(converted)], timeout=args.timeout)
    converter_error = None
    if rc:  # recorded, and our side still measured
        lines = [ln for ln in err.splitlines() if "Error" in ln or "error" in ln]
        converter_error = f"exit {rc}: " + (lines[0].strip() if lines else err.strip()[-300:])
        print(f"focus-converter failed after {t_conv:.1f} s: {converter_error}", file=sys.stderr)
    conv_bytes = sum(p.stat().st_size for p in converted.rglob("*") if p.is_file()) if converted.exists() else 0
    print(f"focus-converter  {t_conv:8.1f} s  peak {rss_conv:6,} MiB  output {conv_bytes / 2**20:.1f} MiB", flush=True)

    shutil.rmtree(out / "data", ignore_errors=True)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", out / "taxonomy.yaml")
    (out / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-legacy\n    kind: aws_cur\n"
        "    uri: bucket/legacy/apportion-legacy\n    options:\n      format: legacy\n"
    )
    apportion = str(Path(sys.executable).with_name("apportion"))
    t_job, rss_job, rc, err = run_measured([apportion, "run", "--config", str(out / "apportion.yaml"), "--month", MONTH,
                                            "--json"])
    if rc not in (0, 3):
        print(f"apportion run failed ({rc}):\n{err}", file=sys.stderr)
        return 1
    summary = subprocess.run([apportion, "months", "--config", str(out / "apportion.yaml")], capture_output=True,
                             text=True).stdout
    print(f"apportion run    {t_job:8.1f} s  peak {rss_job:6,} MiB", flush=True)
    result = {
        "bench": "focus_converter", "rows": rows, "csv_mib": round(data.stat().st_size / 2**20, 1),
        "focus_converter_s": round(t_conv, 2), "focus_converter_peak_rss_mib": rss_conv,
        "apportion_run_s": round(t_job, 2), "apportion_run_peak_rss_mib": rss_job,
        "speedup": None if converter_error else round(t_conv / t_job, 2), "converter_error": converter_error,
        "cpus": os.cpu_count(),
    }
    print(summary.strip())
    print(json.dumps(result, indent=2))
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps({**result, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
