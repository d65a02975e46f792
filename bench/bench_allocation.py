"""Benchmark: the whole nightly run vs one hand-written DuckDB query doing the same allocation.

    python bench/bench_allocation.py --rows 5000000 [--keep]

1. generates a CUR 2.0 Parquet export of N rows (the demo generator, one month);
2. times `apportion run` for that month (Dagster in-process: land, line items with validation and
   quarantine, allocation with the exactness check, warehouse build, finance exports);
3. times one hand-written DuckDB query that reads the same files and allocates the same way for
   the demo taxonomy (tag priority, normalisation, aliases, allowed values, account mappings, rules),
   writing Parquet;
4. prints rows/s, the ratio and the peak RSS of each step (each runs in its own process).
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
MONTH = "2026-10"

HAND_WRITTEN = r"""
copy (
    with src as (
        select *, map_from_entries(list_transform(map_entries(resource_tags),
                   lambda e: struct_pack(key := lower(regexp_replace(e.key, '^user_', '')), value := e.value))) as t
        from read_parquet('{files}')
    ),
    norm as (
        select *,
            regexp_replace(lower(trim(coalesce(nullif(t['team'], ''), nullif(t['owner'], '')))), '[\s_]+', '-', 'g') as team_raw,
            regexp_replace(lower(trim(coalesce(nullif(t['project'], ''), nullif(t['app'], '')))), '[\s_]+', '-', 'g') as project_raw,
            regexp_replace(lower(trim(nullif(t['workload'], ''))), '[\s_]+', '-', 'g') as workload_raw
        from src
    ),
    decided as (
        select *,
            case
                when coalesce(case team_raw when 'mlplatform' then 'ml-platform' when 'ml-infra' then 'ml-platform'
                                   when 'data-engineering' then 'data-eng' when 'dataeng' then 'data-eng' else team_raw end, '')
                     in ('ml-platform', 'research', 'search', 'data-eng', 'finance-apps')
                    then case team_raw when 'mlplatform' then 'ml-platform' when 'ml-infra' then 'ml-platform'
                                   when 'data-engineering' then 'data-eng' when 'dataeng' then 'data-eng' else team_raw end
                when coalesce(product['product_name'], '') ilike 'amazon sagemaker' and line_item_usage_type ilike '%notebk%' then 'research'
                when line_item_usage_account_id = '333333333333' then 'research'
                when coalesce(line_item_resource_id, '') = '' and line_item_line_item_type not in
                     ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', 'SavingsPlanNegation') then 'shared'
                else 'untagged'
            end as team,
            case
                when project_raw in ('llm-serving', 'recsys', 'fraud-detection', 'data-lake', 'chatbot', 'research-sandbox') then project_raw
                when line_item_usage_account_id = '333333333333' then 'research-sandbox'
                when line_item_usage_account_id = '444444444444' then 'data-lake'
                when coalesce(line_item_resource_id, '') = '' and line_item_line_item_type not in
                     ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', 'SavingsPlanNegation') then 'shared'
                else 'untagged'
            end as project,
            case
                when workload_raw in ('training', 'inference', 'etl', 'notebooks', 'batch-scoring', 'storage', 'general') then workload_raw
                when line_item_product_code = 'AmazonSageMaker' and line_item_operation ilike 'createtrainingjob%' then 'training'
                when line_item_product_code = 'AmazonSageMaker' and line_item_usage_type ilike '%host:%' then 'inference'
                when coalesce(product['product_name'], '') ilike '%bedrock%' then 'inference'
                when line_item_product_code = 'AmazonS3' then 'storage'
                when coalesce(line_item_resource_id, '') = '' and line_item_line_item_type not in
                     ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', 'SavingsPlanNegation') then 'shared'
                else 'untagged'
            end as workload,
            cast(line_item_unblended_cost as decimal(38, 12)) as billed,
            cast(case line_item_line_item_type
                when 'SavingsPlanCoveredUsage' then savings_plan_savings_plan_effective_cost
                when 'SavingsPlanRecurringFee' then savings_plan_total_commitment_to_date - savings_plan_used_commitment
                when 'SavingsPlanNegation' then 0
                when 'SavingsPlanUpfrontFee' then 0
                when 'DiscountedUsage' then reservation_effective_cost
                when 'RIFee' then coalesce(reservation_unused_amortized_upfront_fee_for_billing_period, 0)
                                  + coalesce(reservation_unused_recurring_fee, 0)
                else line_item_unblended_cost end as decimal(38, 12)) as effective
        from norm
    )
    select line_item_usage_account_id, line_item_resource_id, line_item_product_code, team, project, workload,
           billed, effective
    from decided
) to '{out}' (format parquet, compression zstd)
"""


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB of the process tree's largest process, exit code). Output goes to files (a pipe
    nobody reads while waiting can fill and stall the process); on failure their tails are printed: with `--json`
    the cause is in stdout."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        if proc.returncode not in (0, 3):
            for fh in (out, err):
                fh.seek(0)
                print(fh.read().decode(errors="replace")[-3000:], file=sys.stderr)
    return elapsed, usage.ru_maxrss // 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--keep", action="store_true", help="reuse generated data if present")
    args = ap.parse_args()

    out = Path(args.out) / f"rows-{args.rows}"
    bucket = out / "bucket"
    if not (args.keep and bucket.exists()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        t, rss, rc = run_measured([sys.executable, "-m", "apportion.demo.generators.aws_cur", str(bucket), "--months", MONTH,
                                   "--rows", str(args.rows)])
        print(f"generate   {args.rows:>12,} rows  {t:8.1f} s  peak {rss:6,} MiB")
    shutil.rmtree(out / "data", ignore_errors=True)
    shutil.copy(REPO / "demo" / "taxonomy.yaml", out / "taxonomy.yaml")
    (out / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n"
        "    uri: bucket/cur/apportion-demo\n"
    )
    apportion = str(Path(sys.executable).with_name("apportion"))
    t_e2e, rss_e2e, rc = run_measured([apportion, "run", "--config", str(out / "apportion.yaml"), "--month", MONTH,
                                       "--json"])
    if rc not in (0, 3):
        print(f"apportion run failed with exit code {rc}", file=sys.stderr)
        return 1
    files = str(bucket / "cur" / "apportion-demo" / "data" / f"BILLING_PERIOD={MONTH}" / "*.parquet")
    query = HAND_WRITTEN.format(files=files, out=out / "hand_written.parquet")
    script = f"import duckdb; c = duckdb.connect(); c.execute(\"SET TimeZone='UTC'\"); c.execute({query!r})"
    t_raw, rss_raw, rc = run_measured([sys.executable, "-c", script])
    if rc:
        return 1
    result = {
        "rows": args.rows,
        "end_to_end_s": round(t_e2e, 2),
        "end_to_end_rows_per_s": round(args.rows / t_e2e),
        "end_to_end_peak_rss_mib": rss_e2e,
        "hand_written_query_s": round(t_raw, 2),
        "hand_written_rows_per_s": round(args.rows / t_raw),
        "hand_written_peak_rss_mib": rss_raw,
        "ratio": round(t_e2e / t_raw, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps({**result, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
