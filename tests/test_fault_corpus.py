"""The fault corpus: hostile input, secrets and broken configs against the real code paths.

Each case names what a hostile world did and what a trusted ledger must do instead. Cases that need a
whole run (crashes at step boundaries, duplicate deliveries, CSV dialects) build small generated files;
the HTTP cases talk to real local servers.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest

from apportion import cli, steps
from apportion.models._yaml import ConfigError
from apportion.models.config import load_config
from tests.conftest import ReplayResponse, ReplayServer
from tests.llm_helpers import FIXTURES, make_config

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-admin-HOSTILE-0123456789abcdef"
COMPLETIONS, EMBEDDINGS, COSTS = ("/v1/organization/usage/completions", "/v1/organization/usage/embeddings",
                                  "/v1/organization/costs")
CURSOR = "page_AAAAAGdGxdEAAAAAZ0gcqw=="


# ------------------------------------------------------------------------------------------ secrets
def _openai_config(tmp_path, base_url):
    return make_config(tmp_path, [{"name": "openai-org", "kind": "openai", "uri": "https://api.openai.com",
                                   "options": {"base_url": base_url, "start_month": "2026-10", "max_retries": 0}}])


def test_the_admin_key_never_follows_a_redirect_to_another_host(tmp_path, llm_api, monkeypatch):
    from apportion import steps

    monkeypatch.setenv("OPENAI_ADMIN_KEY", SECRET)
    other = ReplayServer()  # another host:port, as a redirect to an attacker's or a CDN's host would be
    try:
        pages = FIXTURES / "openai"
        llm_api.route(COMPLETIONS, None, ReplayResponse(302, b"", {"Location": f"{other.url}{COMPLETIONS}?x=1"}))
        other.route(COMPLETIONS, None, (pages / "usage_completions_p1.json").read_bytes())
        llm_api.route(COMPLETIONS, CURSOR, (pages / "usage_completions_p2.json").read_bytes())
        llm_api.route(EMBEDDINGS, None, (pages / "usage_embeddings.json").read_bytes())
        llm_api.route(COSTS, None, (pages / "costs.json").read_bytes())
        cfg = _openai_config(tmp_path, llm_api.url)
        steps.land(cfg, cfg.source("openai-org"), "2026-10")
        assert other.requests, "the redirect was followed"
        assert all("authorization" not in r["headers"] for r in other.requests)
        assert all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in llm_api.requests)
    finally:
        other.stop()


def test_a_page_that_echoes_the_key_lands_without_it(tmp_path, llm_api, monkeypatch):
    from apportion import steps

    monkeypatch.setenv("OPENAI_ADMIN_KEY", SECRET)
    pages = FIXTURES / "openai"
    echo = json.loads((pages / "usage_completions_p1.json").read_text())
    echo["debug"] = {"request_headers": {"authorization": f"Bearer {SECRET}"}}
    llm_api.route(COMPLETIONS, None, json.dumps(echo))
    llm_api.route(COMPLETIONS, CURSOR, (pages / "usage_completions_p2.json").read_bytes())
    llm_api.route(EMBEDDINGS, None, (pages / "usage_embeddings.json").read_bytes())
    llm_api.route(COSTS, None, (pages / "costs.json").read_bytes())
    cfg = _openai_config(tmp_path, llm_api.url)
    delivery = steps.land(cfg, cfg.source("openai-org"), "2026-10")
    landed = b"".join(p.read_bytes() for p in Path(delivery.local_dir).rglob("*") if p.is_file())
    assert SECRET.encode() not in landed
    assert b"Bearer ***" in landed


@pytest.mark.parametrize("uri, where", [
    ("s3://AKIAHOSTILE:SECRETSECRET@bucket/cur", "sources[0].uri"),
    ("https://user:SECRETSECRET@api.example.com/v1", "sources[0].uri"),
    ("postgresql://litellm:SECRETSECRET@db:5432/litellm", "sources[0].uri"),
    ("gs://SECRETSECRET@bucket/billing", "sources[0].uri"),
])
def test_credentials_inside_a_uri_are_refused_at_config_load_with_the_line(tmp_path, uri, where, caplog):
    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        f"  - name: src\n    kind: aws_cur\n    uri: {uri}\n")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "apportion.yaml")
    [problem] = err.value.problems
    assert problem.startswith(f"line 6: {where}:") and "credentials" in problem
    assert "SECRETSECRET" not in str(err.value) and "SECRETSECRET" not in caplog.text
    code = cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10"])
    assert code == cli.EXIT_CONFIG


def test_a_credential_uri_in_options_is_refused_too(tmp_path):
    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: src\n    kind: openai\n    uri: https://api.openai.com\n"
        "    options:\n      base_url: https://u:SECRETSECRET@proxy.example.com\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "apportion.yaml")
    assert "line 8: sources[0].options.base_url:" in str(err.value) and "SECRETSECRET" not in str(err.value)


def test_a_user_name_without_password_is_fine(tmp_path):
    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: src\n    kind: litellm\n    uri: postgresql://litellm@db:5432/litellm\n")
    assert load_config(tmp_path / "apportion.yaml").sources[0].uri == "postgresql://litellm@db:5432/litellm"


# ------------------------------------------------------------------------------------------ printing data
def test_tag_values_that_look_like_markup_print_as_text(capsys):
    hostile = "[/bold]ml[red]platform[/]"
    summary = {
        "months": [{"month": "2026-10", "success": False, "errors": [f"out_report: tag {hostile}"]}],
        "totals": [{"month": "2026-10", "source": "aws", "currency": "USD", "line_items": 1,
                    "billed_cost": Decimal("1"), "allocated_billed_cost": Decimal("1")}],
        "spend_by_team": [{"month": "2026-10", "currency": "USD", "team": hostile, "effective_cost": Decimal("1")}],
        "coverage": [], "splits": [],
        "top_untagged": [{"month": "2026-10", "reason": f"untagged:unknown-value {hostile}", "account": "1",
                          "service": "[bold]S3", "resource": "r", "effective_cost": Decimal("1")}],
        "unmapped_services": [{"month": "2026-10", "source": "aws", "service": "[link=x]New", "line_items": 1,
                               "effective_cost": Decimal("1")}],
        "quarantined_rows": 0, "warehouse": "w[/]", "exports": {}, "report": None,
    }
    cli.print_summary(summary)
    out = capsys.readouterr()
    assert hostile in out.out and "[bold]S3" in out.out and "[link=x]New" in out.out and "w[/]" in out.out
    # failures go to stderr, as documented
    assert "2026-10: FAILED" in out.err and f"tag {hostile}" in out.err and "FAILED" not in out.out


# ------------------------------------------------------------------------------------------ taxonomy
@pytest.mark.parametrize("edit, expected", [
    (("by: [team, project]", "by: [team, projekt]"), "splits[0].by[1]: split 'tax-follows-usage': unknown dimension 'projekt'"),
    (("data-eng: 15", "data-engg: 15"), "splits[1].shares.data-engg: split 'support-plan-shares': target 'data-engg'"),
    (("match: {charge_category: Tax}", "match: {charge_categori: Tax}"), "splits[0].match"),
])
def test_run_validates_the_taxonomy_before_touching_data(tmp_path, capsys, edit, expected):
    text = (REPO / "demo" / "taxonomy.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "taxonomy.yaml").write_text(text.replace(edit[0], edit[1], 1))
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if edit[0] in ln)
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws\n    kind: aws_cur\n    uri: bucket/export\n")
    code = cli.main(["run", "--config", str(tmp_path / "apportion.yaml"), "--month", "2026-10"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert f"line {line}: {expected}" in err
    assert not (tmp_path / "data").exists(), "nothing may be landed or built before the taxonomy is valid"


# ------------------------------------------------------------------------------------------ dialects
def test_sacct_dump_written_with_another_delimiter_reads_like_the_default(tmp_path):
    from tests.test_slurm_sacct import BASE_OPTIONS, make_project
    from tests.test_slurm_sacct import FIXTURES as SLURM
    from tests.test_slurm_sacct import build as build_sacct

    options = {**BASE_OPTIONS, "timezone": "UTC", "partition_gpu_models": {"gpu-a100*": "a100"}, "max_job_hours": 240}
    pipes = (SLURM / "sacct-p-noheader.txt").read_text()
    assert ";" not in pipes
    (tmp_path / "semi.txt").write_text(pipes.replace("|", ";"))
    default = make_project(tmp_path / "pipes", {"dump.txt": SLURM / "sacct-p-noheader.txt"}, options)
    semi = make_project(tmp_path / "semi", {"dump.txt": tmp_path / "semi.txt"}, {**options, "delimiter": ";"})
    _, rows_default, bad_default = build_sacct(default, "2026-10")
    _, rows_semi, bad_semi = build_sacct(semi, "2026-10")
    key = lambda r: (r["x_JobId"], r["x_GpuModel"], r["ConsumedQuantity"], r["x_PricedCost"])  # noqa: E731
    assert [key(r) for r in rows_semi] == [key(r) for r in rows_default] and rows_semi
    assert [b[1:] for b in bad_semi] == [b[1:] for b in bad_default]
    # without the option, the same file is not silently misread: every row is quarantined with the reason
    wrong = make_project(tmp_path / "wrong", {"dump.txt": tmp_path / "semi.txt"}, options)
    _, rows_wrong, bad_wrong = build_sacct(wrong, "2026-10")
    assert rows_wrong == [] and bad_wrong and all("'|'-separated fields" in b[2] for b in bad_wrong)


# ------------------------------------------------------------------------------------------ publish only what passed
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import duckdb  # noqa: E402
import yaml  # noqa: E402

from tests.test_allocation import ROWS, write_delivery  # noqa: E402


def _project(tmp_path: Path) -> Path:
    tax = yaml.safe_load((REPO / "demo" / "taxonomy.yaml").read_text())
    tax.pop("splits", None)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump(tax, sort_keys=False))
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: data\ntaxonomy: taxonomy.yaml\nsources:\n  - name: aws-main\n    kind: aws_cur\n    uri: bucket/export\n")
    return tmp_path / "apportion.yaml"


_BUILT: dict[str, Path] = {}


def _built_project(tmp_path: Path) -> Path:
    """The project after its first `apportion run` of 2026-10 (the demo taxonomy, the hand-computed rows): built
    once per test process and copied into each test's folder (every path in it is relative to the config)."""
    import shutil

    if "base" not in _BUILT:
        import atexit
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="apportion-fault-base-"))
        atexit.register(shutil.rmtree, base, True)
        config = _project(base)
        write_delivery(base / "bucket")
        assert cli.main(["run", "--config", str(config), "--month", "2026-10", "--json"]) == 0
        _BUILT["base"] = base
    shutil.copytree(_BUILT["base"], tmp_path, dirs_exist_ok=True)
    return tmp_path / "apportion.yaml"


def _totals(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        li = dict(con.execute("SELECT x_BillingMonth, sum(BilledCost) FROM line_items GROUP BY 1").fetchall())
        al = dict(con.execute("SELECT x_BillingMonth, sum(BilledCost) FROM allocations GROUP BY 1").fetchall())
    finally:
        con.close()
    return {"line_items": li, "allocations": al}


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if any(tag in p.name for tag in (".tmp-", ".old-", ".building-")))


def _run(config: Path, month: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPORTION_FAULT_AT": fault or ""}
    return subprocess.run([sys.executable, "-m", "apportion.cli", "run", "--config", str(config), "--month", month],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


RESTATED = [r if r[0] != "tagged" else r[:8] + ("150.00",) + r[9:] for r in ROWS]  # the month is restated


@pytest.mark.parametrize("fault", ["line_items:replaced", "line_items:promoted", "allocations:written",
                                   "warehouse:staged", "warehouse:published", "exports:written"])
def test_a_run_killed_at_any_step_boundary_never_publishes_a_ledger_that_does_not_tie(tmp_path, fault):
    config = _built_project(tmp_path)
    db = tmp_path / "data" / "apportion.duckdb"
    before = _totals(db)
    old_billed = sum(Decimal(r[8]) for r in ROWS)
    assert before["line_items"]["2026-10"] == before["allocations"]["2026-10"] == old_billed

    write_delivery(tmp_path / "bucket", RESTATED)
    crashed = _run(config, "2026-10", fault)
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # killed at the boundary, no cleanup ran
    after_crash = _totals(db)
    assert after_crash["line_items"] == after_crash["allocations"], "the published warehouse must tie out"
    if fault in ("warehouse:published", "exports:written"):
        assert after_crash["line_items"]["2026-10"] == sum(Decimal(r[8]) for r in RESTATED)  # passed, published
    else:
        assert after_crash == before  # nothing new passed its checks, so nothing new was published

    # the next run, of another month, cleans up and repairs the month the crash left half-built (in this process:
    # only the crash needs a process of its own)
    write_delivery(tmp_path / "bucket", ROWS, month="2026-11")
    assert cli.main(["run", "--config", str(config), "--month", "2026-11", "--json"]) == 0
    final = _totals(db)
    new_billed = sum(Decimal(r[8]) for r in RESTATED)
    assert final["line_items"] == final["allocations"]
    assert final["line_items"]["2026-10"] == new_billed and final["line_items"]["2026-11"] == old_billed
    assert _leftovers(tmp_path / "data") == []


def test_a_broken_allocation_partition_blocks_publishing_and_the_cli_says_so(tmp_path):
    config = _project(tmp_path)
    db = tmp_path / "data" / "apportion.duckdb"
    write_delivery(tmp_path / "bucket")
    write_delivery(tmp_path / "bucket", ROWS, month="2026-11")
    assert cli.main(["run", "--config", str(config), "--month", "2026-10", "--month", "2026-11", "--json"]) == 0
    published = db.read_bytes()
    # one piece of October loses a cent on disk (a bad write, a hand edit, a bug in a later version)
    cfg = load_config(config)
    part = next(steps.partition_dir(cfg, steps.ALLOCATIONS, "aws-main", "2026-10").glob("*.parquet"))
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * REPLACE (CASE WHEN x_LineId = 1 THEN BilledCost - 0.01 ELSE BilledCost END "
                f"AS BilledCost) FROM read_parquet('{part}')) TO '{part}.new' (FORMAT parquet)")
    con.close()
    os.replace(f"{part}.new", part)

    result = _run(config, "2026-11")
    assert result.returncode == cli.EXIT_FAILED
    assert "out_warehouse: warehouse not published (the previous file is kept): aws-main 2026-10" in result.stderr
    assert "the published warehouse was not changed" in result.stderr
    assert "out_finance_exports skipped" in result.stderr or "out_finance_exports not run" in result.stderr
    assert db.read_bytes() == published
    assert _leftovers(tmp_path / "data") == []


def test_an_analyst_write_session_cannot_break_the_next_run(tmp_path):
    config = _built_project(tmp_path)
    db = tmp_path / "data" / "apportion.duckdb"
    # an analyst opens the file read-write, writes, and the session dies without a checkpoint
    analyst = subprocess.run([sys.executable, "-c", (
        "import duckdb, os; con = duckdb.connect(%r); con.execute('SET checkpoint_threshold = \\'1TB\\''); "
        "con.execute('CREATE TABLE my_notes AS SELECT 1 AS x'); os._exit(0)") % str(db)],
        capture_output=True, text=True, timeout=60)
    assert analyst.returncode == 0, analyst.stderr
    assert db.with_name("apportion.duckdb.wal").exists()
    assert cli.main(["run", "--config", str(config), "--month", "2026-10", "--json"]) == 0
    assert _totals(db)["line_items"] == _totals(db)["allocations"]


# ------------------------------------------------------------------------------------------ tags and tiny amounts
import csv as _csv  # noqa: E402

FOCUS_HEADER = ["BilledCost", "EffectiveCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart",
                "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName", "ServiceName", "Tags"]


def _focus_build(tmp_path: Path, rows: list[list[str]]):
    """A small FOCUS CSV for 2024-06 built to line items: (stats, line items, quarantined rows)."""
    from apportion import steps

    folder = tmp_path / "focus"
    folder.mkdir(parents=True)
    with open(folder / "2024-06-focus.csv", "w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(FOCUS_HEADER)
        w.writerows([[billed, effective, "a", "USD", "2024-06-01", "Usage", "2024-06-02", "2024-06-03", "P",
                      "Compute", tags] for billed, effective, tags in rows])
    (tmp_path / "apportion.yaml").write_text(
        f"warehouse: {tmp_path / 'wh'}\ntaxonomy: {REPO / 'demo' / 'taxonomy.yaml'}\nsources:\n"
        f"  - name: focus-test\n    kind: focus\n    uri: {folder}\n")
    cfg = load_config(tmp_path / "apportion.yaml")
    source = cfg.sources[0]
    stats = steps.build_line_items(cfg, source, steps.land(cfg, source, "2024-06"))
    con = duckdb.connect()
    lines = con.execute("SELECT x_SourceRow, BilledCost, EffectiveCost, Tags::VARCHAR FROM read_parquet(?) "
                        "ORDER BY x_SourceRow",
                        [str(steps.partition_dir(cfg, steps.LINE_ITEMS, source.name, "2024-06") / "data.parquet")]
                        ).fetchall()
    quarantined = con.execute(
        "SELECT x_SourceRow, reason, billed_cost FROM read_parquet(?) ORDER BY 1",
        [str(steps.partition_dir(cfg, steps.QUARANTINE, source.name, "2024-06") / "rows.parquet")]).fetchall()
    con.close()
    return stats, lines, quarantined


def test_the_same_labels_in_another_order_are_the_same_tags_text_focus(tmp_path):
    stats, lines, _ = _focus_build(tmp_path, [
        ["1", "1", '{"team": "search", "env": "prod", "Project": "recsys"}'],
        ["2", "2", '{"Project": "recsys", "env": "prod", "team": "search"}'],
        ["3", "3", '{"env": "prod", "team": "search", "Project": "recsys"}'],
    ])
    assert stats.rows == 3
    assert {line[3] for line in lines} == {'{"Project":"recsys","env":"prod","team":"search"}'}  # one text, keys sorted


def test_the_same_labels_in_another_order_are_the_same_tags_text_gcp(tmp_path):
    from apportion import steps
    from tests.test_gcp_billing import config as gcp_config
    from tests.test_gcp_billing import export_rows, rows_of

    row = export_rows()[6]  # the Vertex AI input-token row
    row["labels"] = [{"key": "team", "value": "search"}, {"key": "workload", "value": "chat"},
                     {"key": "env", "value": "prod"}]
    other = json.loads(json.dumps(row, default=str))
    other["labels"] = list(reversed(row["labels"]))  # the same labels, exported in another order
    folder = tmp_path / "f" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in (row, other)) + "\n")
    cfg = gcp_config(tmp_path, str(tmp_path / "f"))
    source = cfg.sources[0]
    steps.build_line_items(cfg, source, steps.land(cfg, source, "2022-08"))
    [(first,), (second,)] = rows_of(cfg, "2022-08", "Tags::VARCHAR")
    assert first == second  # one text to group on
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":"))  # keys sorted
    assert json.loads(first)["env"] == "prod" and json.loads(first)["team"] == "search"


def test_an_amount_that_rounds_to_zero_at_12_places_is_quarantined_never_silently_zero(tmp_path):
    delivered = [["2.5", "2.5", ""],
                 ["1e-13", "1e-13", ""],                    # not zero, but 0 at 12 places: would vanish
                 ["1.0000000000004", "1.0000000000004", ""],  # rounds to 1.000000000000: the row stays
                 ["0", "-0.0000000000004", ""],             # EffectiveCost would vanish
                 ["0.0000000000005", "0.0000000000005", ""]]  # rounds up to 1e-12: kept, not zero
    stats, lines, quarantined = _focus_build(tmp_path, delivered)
    assert quarantined == [
        (2, "tiny BilledCost 1e-13: not zero, but 0 at 12 decimal places", "0.000000000000"),
        (4, "tiny EffectiveCost -0.0000000000004: not zero, but 0 at 12 decimal places",
         "0.000000000000")]
    assert stats.quarantine_reasons == {"tiny BilledCost": 1, "tiny EffectiveCost": 1}
    assert [(n, billed) for n, billed, _, _ in lines] == [
        (1, Decimal("2.5")), (3, Decimal("1")), (5, Decimal("0.000000000001"))]
    # Σ delivered (each amount rounded once, to 12 places) = Σ line items + Σ quarantined, exactly
    q12 = Decimal("0.000000000001")
    delivered_sum = sum(Decimal(b).quantize(q12, rounding="ROUND_HALF_UP") for b, _, _ in delivered)
    assert delivered_sum == stats.billed_cost + (stats.quarantined_billed_cost or 0) == Decimal("3.500000000001")
    # no non-zero delivered amount became a zero line item
    assert all(billed != 0 for _, billed, _, _ in lines)


def test_a_gcp_cost_or_credit_that_rounds_to_zero_is_quarantined_with_the_amount(tmp_path):
    from apportion import steps
    from tests.test_gcp_billing import config as gcp_config
    from tests.test_gcp_billing import export_rows, quarantine_of

    rows = [export_rows()[6] for _ in range(3)]  # the Vertex AI input-token row, three times
    rows[1] = {**rows[1], "cost": "1e-13", "credits": []}
    rows[2] = {**rows[2], "credits": [{"name": "Free Trial", "amount": "-4e-13", "type": "PROMOTION"}]}
    folder = tmp_path / "f" / "2022-08"
    folder.mkdir(parents=True)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, default=str) for r in rows) + "\n")
    cfg = gcp_config(tmp_path, str(tmp_path / "f"))
    source = cfg.sources[0]
    stats = steps.build_line_items(cfg, source, steps.land(cfg, source, "2022-08"))
    assert [r[1:] for r in quarantine_of(cfg, "2022-08")] == [
        (2, "tiny cost 1e-13: not zero, but 0 at 12 decimal places"),
        (3, "tiny credits.amount -4e-13: not zero, but 0 at 12 decimal places")]
    assert stats.rows == 1 and stats.billed_cost == Decimal("13.25")


def test_an_object_store_warehouse_is_refused_not_taken_as_a_local_folder(tmp_path):
    (tmp_path / "taxonomy.yaml").write_text((REPO / "demo" / "taxonomy.yaml").read_text())
    (tmp_path / "apportion.yaml").write_text(
        "warehouse: s3://bucket/apportion\ntaxonomy: taxonomy.yaml\nsources:\n"
        "  - name: src\n    kind: aws_cur\n    uri: bucket/export\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "apportion.yaml")
    assert str(err.value).count("line 1: warehouse:") == 1 and "local" in str(err.value)
    assert not (tmp_path / "s3:").exists()


def test_a_parquet_file_with_a_garbled_body_is_named_and_kept_in_quarantine(tmp_path, capsys):
    """The footer is fine, the pages are not: the month is not built, the error names the file (by its key,
    not a raw-zone path) and a copy is kept for the owner, the previous build stays."""
    config = _project(tmp_path)
    write_delivery(tmp_path / "bucket")
    data = tmp_path / "bucket" / "export" / "data" / "BILLING_PERIOD=2026-10"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_csv('{data / 'export-00001.csv.gz'}', all_varchar = true)) "
                f"TO '{data / 'export-00002.snappy.parquet'}' (FORMAT parquet)")
    con.close()
    body = bytearray((data / "export-00002.snappy.parquet").read_bytes())
    for i in range(200, 600):  # inside the column chunks, well before the footer
        body[i] = (body[i] * 7 + 13) % 256
    (data / "export-00002.snappy.parquet").write_bytes(bytes(body))
    assert cli.main(["run", "--config", str(config), "--month", "2026-10"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "cannot read data/BILLING_PERIOD=2026-10/export-00002.snappy.parquet" in err
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "data" / "lake" / "quarantine" / "files").rglob("*.json")]
    assert record["file"] == "data/BILLING_PERIOD=2026-10/export-00002.snappy.parquet"
    assert Path(record["copy"]).read_bytes() == bytes(body)
