"""The `apportion` command.

Exit codes (for schedulers): 0 ok; 1 at least one month could not be built (previous build kept);
2 invalid config, taxonomy or arguments; 3 built, but rows were quarantined (see quarantined_rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_QUARANTINE = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apportion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"apportion {_version()}",
                        help="print apportion's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = f"config file (default: ./{DEFAULT_CONFIG}; the demo's: demo/apportion.yaml)"

    run = sub.add_parser("run", help="run the nightly job in-process (land, normalise, allocate, publish)")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    run.add_argument("--month", action="append", help="billing month YYYY-MM (repeatable); default: the open months")
    run.add_argument("--all", action="store_true", help="every month the sources have")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")

    export = sub.add_parser("export", help="write a month's finance pack (summary CSVs, line-level Parquet) from the "
                                           "warehouse")
    export.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    export.add_argument("--month", required=True, help="billing month YYYY-MM; it must be in the warehouse "
                                                       "(`apportion months` lists them)")
    export.add_argument("--out", required=True, help="output directory (replaced by the new pack)")
    export.add_argument("--lines", choices=("parquet", "csv"), default=None,
                        help="format of the line-level file allocation_lines: parquet, or csv (gzip); default: the "
                             "config's exports.lines, else parquet")
    export.add_argument("--as-of", default=None, help="DATE (YYYY-MM-DD) or time: the pack as published then "
                                                      "(kept packs; docs/close.md)")

    tax = sub.add_parser("taxonomy", help="taxonomy tools")
    tax_sub = tax.add_subparsers(dest="taxonomy_command", required=True)
    check = tax_sub.add_parser("check", help="validate a taxonomy file (schema, dead rules, cycles)")
    check.add_argument("file", help="the taxonomy YAML file")
    tdiff = tax_sub.add_parser("diff", help="how coverage and team totals would change under a new taxonomy")
    tdiff.add_argument("old", help="the current taxonomy YAML file")
    tdiff.add_argument("new", help="the proposed taxonomy YAML file")
    tdiff.add_argument("--month", required=True, help="billing month YYYY-MM to compare on; it must be in the warehouse")
    tdiff.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    tdiff.add_argument("--json", action="store_true", help="print the comparison as JSON")

    report = sub.add_parser("report", help="write the static HTML report (charts) from the warehouse")
    report.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    report.add_argument("--month", default=None, help="billing month YYYY-MM; it must be in the warehouse "
                                                      "(default: the report's choice of month)")
    report.add_argument("--out", default=None, help="output file (default: <warehouse>/report/index.html)")
    report.add_argument("--all", action="store_true", help="re-render every month's page (default: only the pages "
                                                           "whose data changed, plus the index)")

    months = sub.add_parser("months", help="list, per source, the months it offers and the months built in the "
                                           "warehouse")
    months.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    months.add_argument("--json", action="store_true", help="print the months as JSON")

    savings = sub.add_parser("savings", help="savings advice with dollar estimates (the recommendations table)")
    savings.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    savings.add_argument("--month", default=None, help="billing month YYYY-MM (default: the newest in the warehouse)")
    savings.add_argument("--json", action="store_true", help="print the findings and skipped scopes as JSON")

    demo = sub.add_parser("demo", help="generate the bundled demo data (deterministic)")
    demo.add_argument("--dir", default=None,
                      help="write a demo project here (DIR/demo/apportion.yaml, data under DIR/data); default: "
                           "the checkout's demo/ folder, or ./apportion-demo when apportion is installed from a wheel")
    demo.add_argument("--out", default=None, help="only the CUR 2.0 export, into this folder")
    demo.add_argument("--late-credit", action="store_true", help="re-deliver the previous month's CUR with a late "
                      "credit (the month close demo, docs/close.md)")

    from apportion.guardrails import cli as guardrails_cli  # `budgets`, `anomalies` (issue 11)

    guardrails_cli.add_parsers(sub)
    __import__("apportion.close.cli").close.cli.add_parser(sub, config_help, DEFAULT_CONFIG)  # issue 17
    args = parser.parse_args(argv)
    missing = _missing_config(args)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "taxonomy" and args.taxonomy_command == "diff":
            return cmd_taxonomy_diff(args)
        if args.command == "taxonomy":
            return cmd_taxonomy_check(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "months":
            return cmd_months(args)
        if args.command in ("budgets", "anomalies", "policies"):
            return guardrails_cli.dispatch(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "close":
            return cmd_close_as_writer(args)
        if args.command == "savings":
            from apportion.savings.cli import cmd_savings

            return cmd_savings(args)
    except _config_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_CONFIG


DEFAULT_CONFIG = "apportion.yaml"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apportion")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _missing_config(args) -> str | None:
    """The message for a --config file that does not exist: which file was looked for, how to point at one."""
    config = getattr(args, "config", None)
    if config is None or Path(config).exists():
        return None
    where = Path(config).resolve()
    if config == DEFAULT_CONFIG:
        return (f"no config file: looked for ./{DEFAULT_CONFIG} ({where}) because --config was not given; "
                "pass --config FILE, e.g. `--config demo/apportion.yaml` for the demo (`make demo` builds it)")
    return f"config file {config} not found ({where}); for the demo: `--config demo/apportion.yaml`"


def _not_built(cfg, month: str) -> str | None:
    """Why `month` cannot be read from the warehouse (no warehouse, or not built), or None."""
    from apportion.steps.exports import ExportError, check_month_built

    try:
        check_month_built(cfg, month)
    except ExportError as exc:
        return str(exc)
    return None


def _config_errors():
    from apportion.models._yaml import ConfigError

    return (ConfigError, ValueError)


def cmd_taxonomy_check(args) -> int:
    from apportion.models._yaml import ConfigError, line_of, load_yaml_with_lines
    from apportion.models.taxonomy import load_taxonomy
    from apportion.taxonomy_tools import lint

    try:
        tax = load_taxonomy(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    problems = lint(tax)
    if problems:
        _, lines = load_yaml_with_lines(Path(args.file))
        for p in problems:
            path = tuple(int(x) if x.isdigit() else x for x in
                         p.split(" ", 1)[0].replace("[", ".").replace("]", "").split("."))
            line = line_of(lines, path)
            print(f"{args.file}: line {line}: {p}" if line else f"{args.file}: {p}", file=sys.stderr)
        return EXIT_CONFIG
    for name in tax.dimension_names:
        d = tax.dimensions[name]
        print(f"{name}: {len(d.keys)} keys, {len(d.allowed) or 'any'} allowed values, "
              f"{sum(len(v) for v in d.aliases.values())} aliases, {len(d.accounts)} accounts, {len(d.rules)} rules"
              + (f", default {d.default!r}" if d.default else ""))
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_taxonomy_diff(args) -> int:
    from apportion.models.config import check_month, load_config
    from apportion.models.taxonomy import load_taxonomy
    from apportion.taxonomy_tools import diff

    cfg = load_config(args.config)
    problem = _not_built(cfg, check_month(args.month))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    result = diff(cfg, load_taxonomy(args.old), load_taxonomy(args.new), check_month(args.month))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return EXIT_OK
    print(f"taxonomy diff for {result['month']}: {args.old} -> {args.new}")
    print("coverage (spend-weighted):")
    for row in result["coverage"]:
        old, new = row["old"], row["new"]
        fmt = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
        print(f"  {row['dimension']:<14} {fmt(old):>8} -> {fmt(new):>8}")
    print("EffectiveCost by team:")
    for row in result["teams"]:
        print(f"  {row['team']:<16} {row['old']:>16,.2f} -> {row['new']:>16,.2f}  ({row['change']:+,.2f})")
    return EXIT_OK


def cmd_months(args) -> int:
    """Per source: the months it offers (files found, or the months an API source can be asked for) and the
    months built in the warehouse. Only built months can be exported or reported."""
    from apportion.connectors.registry import connector_for
    from apportion.models.config import load_config
    from apportion.steps.exports import warehouse_months

    cfg = load_config(args.config)
    built = warehouse_months(cfg)
    rows = []
    for s in cfg.sources:
        try:
            offered, problem = connector_for(s).months(), None
        except Exception as exc:  # noqa: BLE001 - one unreachable source must not hide the others
            offered, problem = [], f"{type(exc).__name__}: {exc}"
        have = built.get(s.name, [])
        rows.append({"source": s.name, "kind": s.kind, "enabled": s.enabled, "built": have,
                     "not_built": [m for m in offered if m not in have], "error": problem})
    all_built = sorted({m for ms in built.values() for m in ms})
    if args.json:
        print(json.dumps({"warehouse": str(cfg.duckdb_path), "built": all_built, "sources": rows}, indent=2))
        return EXIT_OK
    print(f"warehouse {cfg.duckdb_path}: " + (f"months built {' '.join(all_built)}" if all_built else
                                              "nothing built yet (`apportion run` builds the open months)"))
    width = max(len(f"{r['source']} ({r['kind']})") for r in rows)
    for r in rows:
        name = f"{r['source']} ({r['kind']})"
        line = f"  {name:<{width}}  built: {' '.join(r['built']) or '-'}"
        if r["not_built"]:
            line += f"; offered, not built: {' '.join(r['not_built'])}"
        if r["error"]:
            line += f"; cannot list its months: {r['error']}"
        if not r["enabled"]:
            line += " (disabled)"
        print(line)
    if any(r["not_built"] for r in rows):
        print("build a month with `apportion run --month YYYY-MM`; export and report read built months only")
    return EXIT_OK


def cmd_export(args) -> int:
    from apportion import steps
    from apportion.models.config import check_month, load_config

    cfg = load_config(args.config)
    month = check_month(args.month)
    if args.as_of:  # a pack as published on that day, from the kept versions (issue 17)
        return __import__("apportion.close.cli").close.cli.export_as_of(cfg, month, args.as_of, Path(args.out))
    problem = _not_built(cfg, month)
    if problem:  # never an empty pack that a scheduler would take as valid
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    out = steps.export_month(cfg, month, Path(args.out), lines=args.lines)
    for p in sorted(out.iterdir()):
        print(p)
    return EXIT_OK


def cmd_report(args) -> int:
    from apportion.models.config import check_month, load_config
    from apportion.report import ReportError, write_report

    cfg = load_config(args.config)
    month = check_month(args.month) if args.month else None
    problem = _not_built(cfg, month) if month else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    try:
        out = write_report(cfg, month, Path(args.out) if args.out else None, all_pages=args.all)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(out)
    return EXIT_OK


def cmd_demo(args) -> int:
    import shutil

    from apportion.demo import DEMO_CONFIG, DEMO_DIR, DEMO_TAXONOMY
    from apportion.demo.generators.aws_cur import demo_months, generate_cur2
    from apportion.models.config import load_config

    config = DEMO_CONFIG
    in_checkout = (DEMO_DIR.parent / "pyproject.toml").exists()
    if args.dir or not in_checkout:  # an installed package never writes its demo data into site-packages
        project = Path(args.dir or "apportion-demo").resolve() / "demo"
        project.mkdir(parents=True, exist_ok=True)
        for f in (DEMO_CONFIG, DEMO_TAXONOMY):
            shutil.copyfile(f, project / f.name)
        shutil.copytree(DEMO_DIR / "guardrails", project / "guardrails", dirs_exist_ok=True)  # budgets file
        config = project / DEMO_CONFIG.name
    cfg = load_config(config)
    if args.late_credit:  # month close demo (issue 17)
        return __import__("apportion.close.cli").close.cli.demo_late_credit(cfg)
    print(f"demo config: {config} (run it with `apportion run --config {config}`)")
    out = Path(args.out) if args.out else Path(cfg.sources[0].uri).parents[1]
    files = generate_cur2(out, demo_months())
    print(f"demo CUR 2.0 export for {', '.join(demo_months())}: {len(files)} data files under {out}")
    if not args.out:  # the GPU sources read the CUR just written (their nodes are its p5/g5 instances)
        from apportion.demo.generators.gpu import generate_gpu_demo

        for line in generate_gpu_demo(cfg, demo_months()):
            print(line)
    from apportion.demo.generators.llm import generate_llm_demo

    llm_out = out.parent / "demo-llm"  # next to the demo bucket: data/demo-llm
    llm_files = generate_llm_demo(llm_out, demo_months())
    print(f"demo LLM gateway logs and OpenAI/Anthropic pages: {len(llm_files)} files under {llm_out}")
    from apportion.demo.generators.clouds import generate_cloud_demo
    print(*generate_cloud_demo(out.parent, demo_months()), sep="\n")
    return EXIT_OK


def cmd_run(args) -> int:
    from apportion.models.config import check_month, load_config

    cfg = load_config(args.config)
    from apportion.models.taxonomy import load_taxonomy

    load_taxonomy(cfg.taxonomy)  # a taxonomy error stops the run here (rc 2, with its lines), before any data moves
    if args.all:
        from apportion.connectors.registry import connector_for

        months = sorted({m for s in cfg.sources if s.enabled for m in connector_for(s).months()})
    elif args.month:
        months = [check_month(m) for m in args.month]
    else:
        from apportion.pipelines.partitions import open_months

        months = open_months(datetime.now(timezone.utc), cfg.open_months)
    from apportion.lake import clean_leftovers, mixed_delivery_months

    for p in clean_leftovers(cfg):
        print(f"removed the leftover of an interrupted run: {p}", file=sys.stderr)
    for source, month, li, al in mixed_delivery_months(cfg):
        if month not in months and any(s.name == source and s.enabled for s in cfg.sources):
            print(f"{month}: {source}'s line items (delivery {li or '-'}) and allocations (delivery {al or '-'}) "
                  "differ, left by an interrupted run: rebuilding the month", file=sys.stderr)
            months = sorted({*months, month})
    results = run_months(cfg, months, quiet=args.json)
    summary = summarise(cfg, months, results)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    if any(not r["success"] for r in results):
        return EXIT_FAILED
    if summary["quarantined_rows"]:
        return EXIT_QUARANTINE
    return EXIT_OK


def run_months(cfg, months: list[str], quiet: bool = False) -> list[dict]:
    """Build the months in-process with Dagster: the `sources` job once per month (land, line items,
    allocation), then `publish` once (warehouse, the latest month's finance pack, the report) and the
    other months' finance packs: a backfill of N months builds the warehouse once, not N times.
    Runs are recorded in a persistent Dagster instance (DAGSTER_HOME, else <warehouse>/.dagster), so the
    UI (`make dev`) shows what ran."""
    import logging

    import dagster as dg

    from apportion.pipelines.location import build_definitions

    logging.getLogger("dagster").setLevel(logging.WARNING)
    months = sorted(months)
    defs = build_definitions(cfg, tuple(months))
    loggers = {"console": {"config": {"log_level": os.environ.get("APPORTION_LOG_LEVEL", "CRITICAL")}}}
    progress = RunProgress() if sys.stderr.isatty() else None  # progress bars only for a person at a terminal
    if progress:
        defs = dg.Definitions.merge(defs, dg.Definitions(
            loggers={"console": dg.colored_console_logger, "progress": progress.logger_def()}))
        loggers["progress"] = {}
    instance = dagster_instance(cfg)
    results = {m: {"month": m, "success": True, "errors": [], "steps": {}, "warehouse_published": False}
               for m in months}

    def execute(job_name: str, month: str, label: str, skip: tuple[str, ...] = ()) -> bool:
        job = defs.resolve_job_def(job_name)
        selection = [k for k in job.asset_layer.selected_asset_keys if k.path[-1] not in skip] if skip else None
        if progress:
            progress.begin(f"{month} {label}", len(job.nodes_in_topological_order))
        elif not quiet:
            print(f"{label} {month} ...", file=sys.stderr, flush=True)
        try:
            result = job.execute_in_process(partition_key=f"{month}-01", instance=instance, raise_on_error=False,
                                            run_config={"loggers": loggers}, tags=_run_tags(), asset_selection=selection)
        finally:
            if progress:
                progress.end()
        outcome = results[month]
        for event in result.all_events:
            kind = event.event_type_value
            if kind == "STEP_SUCCESS":
                outcome["steps"][event.step_key] = "succeeded"
            elif kind == "STEP_SKIPPED":
                outcome["steps"][event.step_key] = "skipped (an upstream step failed)"
            elif kind == "STEP_FAILURE":
                outcome["steps"][event.step_key] = "failed"
                outcome["errors"].append(
                    f"{event.step_key}: {failure_text(getattr(event.event_specific_data, 'error', None))}")
        for node in job.nodes_in_topological_order:  # steps that never started (after a failure)
            outcome["steps"].setdefault(node.name, "not run")
        outcome["success"] = outcome["success"] and result.success
        return result.success

    built = [m for m in months if execute("sources", m, "building")]
    before = _file_identity(cfg.duckdb_path)
    if built:  # nothing new in the lake: nothing to publish, every previous output stays
        # several months: the report once, after every month's pack (it is rendered per month: issue 10)
        published_ok = execute("publish", built[-1], "publishing", skip=("out_report",) if len(built) > 1 else ())
        for month in built[:-1]:
            if published_ok:
                execute("export_month", month, "finance pack")
            else:  # the warehouse did not pass: the month's previous pack stays
                results[month]["success"] = False
                results[month]["errors"].append(f"out_warehouse: not published this run (see {built[-1]}); "
                                                "the previous finance pack is kept")
        if published_ok and len(built) > 1:  # the report links every month's pack, written after it
            execute("report", built[-1], "report")
    changed = _file_identity(cfg.duckdb_path) != before
    for outcome in results.values():
        outcome["warehouse_published"] = changed
    return [results[m] for m in months]


DAGSTER_YAML = """# Written by `apportion run` for its runs (the UI: `make dev`, or dagster dev with DAGSTER_HOME here).
concurrency:
  pools:
    default_limit: 1   # the warehouse steps name a pool (and hold the writer lock): one warehouse writer
telemetry:
  enabled: false
"""


def dagster_instance(cfg):
    """DAGSTER_HOME's instance when set; else a persistent one in <warehouse>/.dagster (SQLite)."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        home = cfg.warehouse / ".dagster"
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            (home / "dagster.yaml").write_text(DAGSTER_YAML)
        instance = dg.DagsterInstance.from_config(str(home))
    _fail_runs_of_dead_processes(instance)
    return instance


def cmd_close_as_writer(args) -> int:
    """`apportion close` writes the warehouse folder like the month-close step: it holds the same writer lock
    (pipelines/writer_lock.py), so a close by hand waits for a nightly build in progress, and the other way round."""
    from apportion.close.cli import cmd_close
    from apportion.models.config import load_config
    from apportion.pipelines.writer_lock import warehouse_writer

    cfg = load_config(args.config)
    with warehouse_writer(cfg, dagster_instance(cfg), log=lambda m: print(m, file=sys.stderr)):
        return cmd_close(args)


RUN_HOST, RUN_PID = "apportion/host", "apportion/pid"


def _run_tags() -> dict[str, str]:
    import socket

    return {RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())}


def _fail_runs_of_dead_processes(instance) -> None:
    """A CLI run killed mid-step (OOM, SIGKILL, power cut) stays STARTED in the instance and keeps its
    claim on the warehouse pool, which would hold every later run forever: mark it failed and free its
    slots when its process (on this host) is gone."""
    import socket

    import dagster as dg

    from apportion.storage import process_alive

    host = socket.gethostname()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                                 dg.DagsterRunStatus.STARTING])):
        if run.tags.get(RUN_HOST) != host or not run.tags.get(RUN_PID, "").isdigit():
            continue
        if process_alive(int(run.tags[RUN_PID])):
            continue
        instance.report_run_failed(run, "the process running it is gone (killed or crashed)")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def _file_identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def failure_text(error) -> str:
    """The underlying cause of a failed step (the DuckDB or Python error, or our own message), not
    Dagster's wrapper ('Error occurred while executing op ...')."""
    if error is None:
        return "failed"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = (getattr(error, "message", "") or "").strip()
    message = message.removeprefix("dagster._core.definitions.events.Failure: ")
    lines = [ln for ln in message.splitlines() if ln.strip()]
    text = " ".join(ln.strip() for ln in lines[:3]) if lines else getattr(error, "cls_name", None) or "failed"
    return text[:1000]


STEP_LABELS = (("raw_", "download"), ("core_line_items_", "convert"), ("core_allocations_", "allocate"),
               ("out_warehouse", "publish warehouse"), ("out_finance_exports", "finance pack"),
               ("out_report", "HTML report"))


class RunProgress:
    """rich progress bars on stderr, one per month, advanced by the Dagster step events of the run."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console or Console(stderr=True), transient=False)
        self.month, self.task = None, None

    @staticmethod
    def label(step_key: str) -> str:
        for prefix, label in STEP_LABELS:
            if step_key.startswith(prefix):
                rest = step_key[len(prefix):]
                return f"{label} {rest.replace('_', '-')}".strip()
        return step_key

    def begin(self, month: str, steps: int) -> None:
        self.progress.start()
        self.month = month
        self.task = self.progress.add_task(f"{month}: starting", total=steps)

    def end(self) -> None:
        if self.task is not None:
            t = self.progress.tasks[-1]
            self.progress.update(self.task, completed=t.total, description=f"{self.month}: done")
        self.progress.stop()
        self.task = None

    def on_event(self, event) -> None:
        if self.task is None:
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.progress.update(self.task, description=f"{self.month}: {self.label(event.step_key)}", refresh=True)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            self.progress.update(self.task, advance=1, refresh=True)

    def logger_def(self):
        import logging

        import dagster as dg
        from dagster._core.log_manager import LOG_RECORD_EVENT_ATTR

        progress = self

        class _Handler(logging.Handler):
            def emit(self, record):
                event = getattr(record, LOG_RECORD_EVENT_ATTR, None)
                if event is not None:
                    progress.on_event(event)

        @dg.logger(description="apportion CLI progress bars")
        def _progress(_context):
            log = logging.Logger("apportion.progress", level=logging.DEBUG)
            log.addHandler(_Handler())
            return log

        return _progress


def summarise(cfg, months: list[str], results: list[dict]) -> dict:
    summary: dict = {"config": str(cfg.config_path), "months": results, "warehouse": str(cfg.duckdb_path),
                     "exports": {m: str(cfg.exports / m) for m in months if (cfg.exports / m).exists()},
                     "report": str(cfg.warehouse / "report" / "index.html")
                     if (cfg.warehouse / "report" / "index.html").exists() else None,
                     "quarantined_rows": 0}
    if not cfg.duckdb_path.exists():
        return summary
    from apportion.db import open_published

    con = open_published(cfg)
    try:
        params = [months]
        summary["spend_by_team"] = [
            dict(zip(("month", "currency", "team", "effective_cost", "billed_cost"), row))
            for row in con.execute(
                "SELECT x_BillingMonth, BillingCurrency, x_Team, sum(EffectiveCost), sum(BilledCost) FROM allocations "
                "WHERE list_contains(?, x_BillingMonth) GROUP BY ALL ORDER BY 1, 2, 4 DESC", params).fetchall()
        ]
        summary["coverage"] = [
            dict(zip(("month", "source", "dimension", "coverage", "untagged_cost", "shared_cost"), row))
            for row in con.execute(
                "SELECT x_BillingMonth, x_SourceName, dimension, coverage, untagged_cost, shared_cost "
                "FROM allocation_coverage WHERE list_contains(?, x_BillingMonth) ORDER BY 1, 2, 3", params).fetchall()
        ]
        summary["top_untagged"] = [
            dict(zip(("month", "dimension", "reason", "account", "service", "resource", "effective_cost"), row))
            for row in con.execute(
                "SELECT x_BillingMonth, dimension, reason, SubAccountId, ServiceName, ResourceId, EffectiveCost "
                "FROM untagged_spend WHERE list_contains(?, x_BillingMonth) AND dimension = 'team' "
                "ORDER BY EffectiveCost DESC LIMIT 10", params).fetchall()
        ]
        summary["totals"] = [
            dict(zip(("month", "source", "currency", "line_items", "billed_cost", "allocated_billed_cost"), row))
            for row in con.execute(sql_totals(), params).fetchall()
        ]
        summary["splits"] = [
            dict(zip(("month", "rule", "method", "lines", "pieces", "teams", "effective_cost"), row))
            for row in con.execute(
                "SELECT x_BillingMonth, x_AllocationRuleId, any_value(x_AllocationMethodDetails ->> '$.x_Method'), "
                "count(DISTINCT x_LineId), count(*), string_agg(DISTINCT x_Team, ', ' ORDER BY x_Team), "
                "sum(EffectiveCost) FROM allocations WHERE list_contains(?, x_BillingMonth) "
                "AND x_AllocationRuleId IS NOT NULL GROUP BY ALL ORDER BY 1, 2", params).fetchall()
        ]
        summary["unmapped_services"] = [
            dict(zip(("month", "source", "service", "line_items", "effective_cost"), row))
            for row in con.execute(
                "SELECT x_BillingMonth, x_SourceName, x_UnmappedService, count(*), sum(EffectiveCost) FROM line_items "
                "WHERE list_contains(?, x_BillingMonth) AND x_UnmappedService IS NOT NULL GROUP BY ALL "
                "ORDER BY 1, 2, 5 DESC, 3", params).fetchall()
        ]
        summary["quarantined_rows"] = con.execute(
            "SELECT count(*) FROM quarantined_rows WHERE list_contains(?, x_BillingMonth)", params).fetchone()[0]
    finally:
        con.close()
    summary["guardrails"] = __import__("apportion.guardrails.cli").guardrails.cli.summary(cfg)  # budgets, anomalies
    summary["restatements"] = __import__("apportion.close.cli").close.cli.summary(cfg, months)  # issue 17
    return summary


def sql_totals() -> str:
    return (
        "WITH li AS (SELECT x_BillingMonth, x_SourceName, BillingCurrency, count(*) n, sum(BilledCost) b "
        "FROM line_items GROUP BY ALL), al AS (SELECT x_BillingMonth, x_SourceName, BillingCurrency, "
        "sum(BilledCost) b FROM allocations GROUP BY ALL) SELECT li.x_BillingMonth, li.x_SourceName, "
        "li.BillingCurrency, li.n, li.b, al.b FROM li LEFT JOIN al USING (x_BillingMonth, x_SourceName, "
        "BillingCurrency) WHERE list_contains(?, li.x_BillingMonth) ORDER BY 1, 2"
    )


def coverage_rows(coverage: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The coverage table, compact: one row per month x source that has spend to attribute, one column per
    dimension (spend-weighted coverage), then its untagged and shared cost (of the first dimension, team)."""
    found = list(dict.fromkeys(r["dimension"] for r in coverage))
    dims = [d for d in ("team", "project", "workload") if d in found] + [d for d in found if d not in
                                                                          ("team", "project", "workload")]
    cells: dict[tuple, dict] = {}
    for r in coverage:
        cells.setdefault((r["month"], r["source"]), {})[r["dimension"]] = r
    rows = []
    for (month, source), by_dim in cells.items():
        if all(r["coverage"] is None for r in by_dim.values()) and not any(
                r["untagged_cost"] or r["shared_cost"] for r in by_dim.values()):
            continue  # no spend to attribute (usage-only sources): nothing to show
        first = by_dim.get(dims[0]) or next(iter(by_dim.values()))
        rows.append([month, source, *("-" if by_dim.get(d, {}).get("coverage") is None
                                      else f"{by_dim[d]['coverage']:.1%}" for d in dims),
                     f"{first['untagged_cost']:,.2f}", f"{first['shared_cost']:,.2f}"])
    return dims, rows


def print_coverage(console, coverage: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    dims, rows = coverage_rows(coverage)
    first = dims[0] if dims else "-"
    t = Table(title=Text(f"Coverage (spend-weighted; sources with spend to attribute; untagged/shared: {first})"))
    for c in ("month", "source", *dims, "untagged", "shared"):
        t.add_column(c, justify="left" if c in ("month", "source") else "right")
    for r in rows:
        t.add_row(*(Text(c) for c in r))
    console.print(t)


def print_summary(summary: dict) -> None:
    """The run summary as tables. Every value that comes from data (team, tag, service, resource, error
    text) is printed as plain text, never read as rich markup: a tag value `[/bold]` prints as itself."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = ()) -> Table:
        t = Table(title=Text(title))
        for c in columns:
            t.add_column(c, justify="right" if c in right else "left")
        return t

    def row(t: Table, *cells) -> None:
        t.add_row(*(c if isinstance(c, Text) else Text("" if c is None else str(c)) for c in cells))

    width = None if sys.stdout.isatty() else 160
    console = Console(width=width)
    errors = Console(stderr=True, width=width)
    for r in summary["months"]:
        if r["success"]:
            console.print(Text.assemble(f"{r['month']}: ", ("built", "green")))
            continue
        published = r.get("warehouse_published")
        errors.print(Text.assemble(f"{r['month']}: ", ("FAILED", "red"), "; the published warehouse was ",
                                   "replaced by this run (it passed its checks)" if published
                                   else "not changed (the previous build is kept)"))
        for e in r["errors"]:
            errors.print(Text(f"  {e}", style="red"))
        done = [k for k, v in r.get("steps", {}).items() if v == "succeeded"]
        rest = [f"{k} {v}" for k, v in r.get("steps", {}).items() if v not in ("succeeded", "failed")]
        if done:
            errors.print(Text(f"  succeeded: {', '.join(done)}"))
        if rest:
            errors.print(Text(f"  {'; '.join(rest)}"))
    if "totals" in summary:
        t = table("Totals (billing currency)", ("month", "source", "currency", "line items", "billed", "allocated",
                                                 "ties out"), right=("line items", "billed", "allocated"))
        for r in summary["totals"]:
            ties = r["billed_cost"] == r["allocated_billed_cost"]
            row(t, r["month"], r["source"], r["currency"], f"{r['line_items']:,}", f"{r['billed_cost']:,.2f}",
                f"{(r['allocated_billed_cost'] or 0):,.2f}", Text("yes") if ties else Text("NO", style="red"))
        console.print(t)
        t = table("Spend by team (EffectiveCost)", ("month", "currency", "team", "effective cost"),
                  right=("effective cost",))
        for r in summary["spend_by_team"]:
            row(t, r["month"], r["currency"], r["team"], f"{r['effective_cost']:,.2f}")
        console.print(t)
        print_coverage(console, summary["coverage"])
        if summary.get("splits"):
            t = table("Shared costs split (x_AllocationRuleId; each piece's reason says rule, method, ratio)",
                      ("month", "rule", "method", "lines", "pieces", "to teams", "effective cost"),
                      right=("lines", "pieces", "effective cost"))
            for r in summary["splits"]:
                row(t, r["month"], r["rule"], r["method"], r["lines"], r["pieces"], r["teams"],
                    f"{r['effective_cost']:,.2f}")
            console.print(t)
        t = table("Top untagged spend (team)", ("month", "reason", "account", "service", "resource", "effective cost"))
        for r in summary["top_untagged"]:
            row(t, r["month"], r["reason"], r["account"], r["service"], (r["resource"] or "")[-48:],
                f"{r['effective_cost']:,.2f}")
        console.print(t)
    if summary.get("unmapped_services"):
        t = table("Services without a reference-table row (ServiceCategory Other; add them to "
                  "models/reference/<kind>/services.csv)", ("month", "source", "service", "line items",
                                                            "effective cost"), right=("line items", "effective cost"))
        for r in summary["unmapped_services"]:
            row(t, r["month"], r["source"], r["service"], f"{r['line_items']:,}", f"{r['effective_cost']:,.2f}")
        console.print(t)
    if summary["quarantined_rows"]:
        console.print(Text.assemble((f"{summary['quarantined_rows']} rows quarantined", "yellow"),
                                    ": see the quarantined_rows table"))
    __import__("apportion.guardrails.cli").guardrails.cli.print_summary(summary.get("guardrails"), console)
    __import__("apportion.savings.cli").savings.cli.print_summary(summary, console)  # top savings (issue 12)
    __import__("apportion.close.cli").close.cli.print_summary(summary.get("restatements"), console)  # issue 17
    console.print(Text(f"warehouse: {summary['warehouse']}"))
    for month, path in summary.get("exports", {}).items():
        console.print(Text(f"finance CSVs for {month}: {path}"))
    if summary.get("report"):
        console.print(Text(f"HTML report: {summary['report']}"))

if __name__ == "__main__":
    sys.exit(main())
