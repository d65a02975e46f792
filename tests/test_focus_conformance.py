"""FOCUS conformance of the cloud sources' line items, checked by the FinOps Foundation's focus-validator.

focus-validator 2.x needs Python >= 3.12 (apportion runs on 3.11), so it gets its own venv under
`.cache/focus-validator/` built by the `focus_validator` fixture from PyPI (pinned; pyarrow pinned to a
release that still works with the numpy 1.x the validator pins). It validates FOCUS 1.2 with its
bundled rule model (`--block-download`: no network at run time). Its exit code is 0 even on failures,
so the JUnit report is read: no failed or errored MUST rule (`...-M`) may remain on a FOCUS mandatory
column or on dataset column presence. The validator does not check custom columns: every non-FOCUS
column must be `x_`-prefixed, which is checked here, with our own mandatory-column checks that also
run where the validator cannot be installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest

from apportion import steps
from apportion.lake import current_files
from apportion.models.config import load_config
from apportion.models.focus import FOCUS_COLUMNS, LINE_ITEM_COLUMNS
from tests.test_azure_cost import FIX as AZURE_FIX
from tests.test_azure_cost import export_run, focus_cost_rows, write_local

REPO = Path(__file__).resolve().parent.parent
TAXONOMY = REPO / "demo" / "taxonomy.yaml"
VALIDATOR_VERSION = "2.2.1"
VALIDATOR_PINS = (f"focus-validator=={VALIDATOR_VERSION}", "pyarrow==21.0.0")
VENV = REPO / ".cache" / "focus-validator" / f"venv-{VALIDATOR_VERSION}"

MANDATORY_1_2 = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
# FOCUS column names through 1.3 (1.3 adds these to the 1.2 Cost and Usage columns we produce).
FOCUS_1_3_ADDITIONS = ("AllocatedMethodId", "AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName",
                       "AllocatedTags", "ContractApplied", "ServiceProviderName", "HostProviderName")
SERVICE_CATEGORIES = {
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media", "Migration",
    "Mobile", "Networking", "Security", "Storage", "Web", "Other",
}


# ============================================================================ the validator's own venv
def _python_312() -> str | None:
    candidates = [os.environ.get("FOCUS_VALIDATOR_PYTHON"), shutil.which("python3.12"), shutil.which("python3.13")]
    candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python"))
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.1[2-9]*/bin/python"))
    for c in candidates:
        if c and Path(c).exists():
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True,
                                 text=True)
            if out.stdout.strip() == "True":
                return c
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"focus-validator unavailable under CI=true: {reason}")
    pytest.skip(f"focus-validator unavailable: {reason}")


@pytest.fixture(scope="session")
def focus_validator() -> tuple[Path, Path]:
    """(focus-validator executable, its site-packages) in a Python >= 3.12 venv, created once."""
    exe = VENV / "bin" / "focus-validator"
    done = VENV / ".apportion-complete"
    if not done.exists():
        python = _python_312()
        if python is None:
            _unavailable("no Python >= 3.12 found (set FOCUS_VALIDATOR_PYTHON)")
        shutil.rmtree(VENV, ignore_errors=True)
        try:
            subprocess.run([python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
            subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                            *VALIDATOR_PINS], check=True, capture_output=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(VENV, ignore_errors=True)
            detail = getattr(exc, "stderr", b"") or b""
            _unavailable(f"pip install {' '.join(VALIDATOR_PINS)} failed: {detail.decode(errors='replace')[-300:]}")
        done.write_text(" ".join(VALIDATOR_PINS) + "\n")
    site = next((VENV / "lib").glob("python3.*/site-packages"))
    return exe, site


def run_validator(exe: Path, site: Path, data: Path, out_dir: Path) -> ET.Element:
    """Validate a Parquet file against FOCUS 1.2; return the JUnit root."""
    assert data.is_file(), data
    junit = out_dir / f"{data.stem}.junit.xml"
    # The validator opens its bundled currency list by a path relative to the working directory.
    proc = subprocess.run(
        [str(exe), "--data-file", str(data), "--validate-version", "1.2", "--block-download",
         "--output-type", "unittest", "--output-destination", str(junit)],
        cwd=site, capture_output=True, text=True, timeout=300,
    )
    assert junit.exists(), f"focus-validator wrote no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return ET.parse(junit).getroot()


def mandatory_failures(root: ET.Element) -> list[str]:
    """Failed / errored MUST rules on FOCUS mandatory columns or on dataset column presence."""
    bad = []
    for case in root.iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is None:
            continue
        rule = case.get("name", "").split(" ::")[0]
        column = rule.split("-", 1)[0]
        if rule.endswith("-M") and (column in MANDATORY_1_2 or rule.startswith("CostAndUsage-D-")):
            bad.append(f"{rule}: {problem.get('message')}")
    return bad


# ============================================================================ the sources' line items
def _build(tmp: Path, name: str, kind: str, uri: str, months: list[str], **options) -> Path:
    """Build the months of one source; return one Parquet file with all its line items."""
    opts = "".join(f"\n      {k}: {json.dumps(v)}" for k, v in options.items())
    cfg_path = tmp / f"{name}.yaml"
    cfg_path.write_text(f"warehouse: {tmp / ('wh-' + name)}\ntaxonomy: {TAXONOMY}\nsources:\n  - name: {name}\n"
                        f"    kind: {kind}\n    uri: {uri}\n" + (f"    options:{opts}\n" if options else ""))
    cfg = load_config(cfg_path)
    for month in months:
        delivery = steps.land(cfg, cfg.sources[0], month)
        stats = steps.build_line_items(cfg, cfg.sources[0], delivery)
        assert stats.rows > 0 and stats.quarantined_rows == 0, (name, month, stats)
    out = tmp / f"{name}.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = [str(f) for f in current_files(cfg.lake, "line_items")]
    con.execute(f"COPY (SELECT * FROM read_parquet({files}, union_by_name = true)) "
                f"TO '{out}' (FORMAT parquet)")
    con.close()
    return out


@pytest.fixture(scope="module")
def source_files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("conformance")
    files = {}
    # Azure: EA ActualCost, EA AmortizedCost, MCA, and a FocusCost export, one source each
    az = tmp / "azure"
    write_local(az / "actual", export_run("x", "actual", "ActualCost", "2023-09", "2023-09-21T03:00:00Z", "r1",
                                          {"p.csv": (AZURE_FIX / "ea-actual-cost.csv").read_bytes()}))
    write_local(az / "amortized", export_run("x", "amortized", "AmortizedCost", "2023-09", "2023-09-21T03:00:00Z",
                                             "r2", {"p.csv": (AZURE_FIX / "ea-amortized-cost.csv").read_bytes()}))
    write_local(az / "mca", export_run("x", "mca", "ActualCost", "2023-08", "2023-08-21T03:00:00Z", "r3",
                                       {"p.csv": (AZURE_FIX / "mca-camel-case.csv").read_bytes()}))
    write_local(az / "focus", export_run("x", "focus", "FocusCost", "2024-05", "2024-05-21T03:00:00Z", "r4",
                                         {"p.csv": focus_cost_rows().encode()}, data_version="1.0r2"))
    parts = [_build(tmp, f"azure-{k}", "azure_cost", str(az / k / "x"), [m])
             for k, m in (("actual", "2023-09"), ("amortized", "2023-09"), ("mca", "2023-08"), ("focus", "2024-05"))]
    files["azure_cost"] = _concat(tmp / "azure_cost.parquet", parts)
    # native FOCUS: the AI billing examples (1.3 columns)
    fo = tmp / "focus-files"
    fo.mkdir()
    for p in (REPO / "tests" / "fixtures" / "focus").glob("*.csv"):
        shutil.copyfile(p, fo / p.name)
    files["focus"] = _build(tmp, "focus-ai", "focus", str(fo), ["2025-01", "2025-05"])
    # GCP: our flattened export CSVs and the BigQuery-shaped rows (credits, labels, GPU, tax)
    gc = tmp / "gcp"
    gc.mkdir()
    for p in (REPO / "tests" / "fixtures" / "gcp_billing").glob("*.csv"):
        shutil.copyfile(p, gc / p.name)
    rows = []
    for page in sorted((REPO / "tests" / "fixtures" / "gcp_billing" / "bigquery").glob("*_202208_page*.json")):
        rows += [r["f"][0]["v"] for r in json.loads(page.read_text())["rows"]]
    (gc / "2022-08" ).mkdir()
    (gc / "2022-08" / "bq.jsonl").write_text("\n".join(rows) + "\n")
    files["gcp_billing"] = _build(tmp, "gcp", "gcp_billing", str(gc), ["2020-11", "2022-08"])
    # AWS: a demo CUR 2.0 month (every line item type) and our legacy CUR fixtures
    from apportion.demo.generators.aws_cur import generate_cur2

    generate_cur2(tmp / "aws-cur2", ["2026-09"])
    legacy = tmp / "aws-legacy"
    for src, period in (("legacy-slash-names.csv", "20240901-20241001"), ("legacy-final.csv", "20241101-20241201")):
        (legacy / period).mkdir(parents=True)
        shutil.copyfile(REPO / "tests" / "fixtures" / "aws_cur" / src, legacy / period / "report-1.csv")
    files["aws_cur"] = _concat(tmp / "aws_cur.parquet", [
        _build(tmp, "aws-cur2", "aws_cur", str(tmp / "aws-cur2" / "cur" / "apportion-demo"), ["2026-09"]),
        _build(tmp, "aws-legacy", "aws_cur", str(legacy), ["2024-09", "2024-11"]),
    ])
    return files


def _concat(out: Path, parts: list[Path]) -> Path:
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_parquet({[str(p) for p in parts]}, union_by_name = true)) TO '{out}' "
                "(FORMAT parquet)")
    con.close()
    return out


# ============================================================================ tests
def test_every_custom_column_is_x_prefixed():
    focus_names = {c.name for c in FOCUS_COLUMNS} | set(FOCUS_1_3_ADDITIONS)
    custom = [c.name for c in LINE_ITEM_COLUMNS if c.name not in focus_names]
    assert custom and all(n.startswith("x_") and n[2:3].isupper() for n in custom), custom
    assert len({c.name for c in LINE_ITEM_COLUMNS}) == len(LINE_ITEM_COLUMNS)


@pytest.mark.parametrize("source", ["aws_cur", "azure_cost", "focus", "gcp_billing"])
def test_own_mandatory_column_checks(source_files, source):
    """Our checks (they run without the validator): presence, types, nulls and allowed values."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    path = str(source_files[source])
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                             [path]).fetchall())
    missing = [c for c in MANDATORY_1_2 if c not in types]
    assert not missing
    focus_names = {c.name for c in FOCUS_COLUMNS} | set(FOCUS_1_3_ADDITIONS)
    assert all(c in focus_names or c.startswith("x_") for c in types), [c for c in types if c not in focus_names]
    for col in ("BillingAccountId", "SubAccountId", "ResourceId", "SkuId", "InvoiceId"):
        assert types[col] == "VARCHAR", col  # ids are strings, never numbers
    for col in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"):
        assert types[col].startswith("DECIMAL"), col
    not_null = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
                "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost",
                "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName")
    counts = con.execute("SELECT " + ", ".join(f'count(*) FILTER (WHERE "{c}" IS NULL)' for c in not_null)
                         + " FROM read_parquet(?)", [path]).fetchone()
    assert dict(zip(not_null, counts)) == dict.fromkeys(not_null, 0)
    bad = con.execute(
        "SELECT count(*) FILTER (WHERE ChargeCategory NOT IN ('Usage','Purchase','Tax','Credit','Adjustment')), "
        "count(*) FILTER (WHERE ChargeClass IS NOT NULL AND ChargeClass <> 'Correction'), "
        "count(*) FILTER (WHERE ChargeFrequency NOT IN ('One-Time','Recurring','Usage-Based')), "
        "count(*) FILTER (WHERE ChargeCategory = 'Purchase' AND ChargeFrequency = 'Usage-Based'), "
        "count(*) FILTER (WHERE ChargePeriodStart > ChargePeriodEnd OR BillingPeriodStart >= BillingPeriodEnd), "
        "count(*) FILTER (WHERE ServiceCategory NOT IN ?), "
        "count(*) FILTER (WHERE Tags IS NOT NULL AND json_type(Tags) <> 'OBJECT'), "
        "count(*) FILTER (WHERE ChargeCategory = 'Purchase' AND CommitmentDiscountId IS NOT NULL AND EffectiveCost <> 0) "
        "FROM read_parquet(?)", [sorted(SERVICE_CATEGORIES), path]).fetchone()
    assert bad == (0,) * 8


@pytest.mark.parametrize("source", ["aws_cur", "azure_cost", "focus", "gcp_billing"])
def test_focus_validator_reports_no_mandatory_failures(focus_validator, source_files, source, tmp_path):
    exe, site = focus_validator
    root = run_validator(exe, site, source_files[source], tmp_path)
    assert int(root.get("tests", 0)) > 500  # the FOCUS 1.2 model ran
    assert mandatory_failures(root) == []


def test_validator_catches_a_broken_file(focus_validator, source_files, tmp_path):
    """Canary: the same data with a wrong ChargeCategory and a missing column must fail mandatory rules."""
    exe, site = focus_validator
    broken = tmp_path / "broken.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * EXCLUDE (ChargeCategory, ProviderName), 'Bogus' AS ChargeCategory "
                f"FROM read_parquet('{source_files['gcp_billing']}')) TO '{broken}' (FORMAT parquet)")
    con.close()
    failures = mandatory_failures(run_validator(exe, site, broken, tmp_path))
    assert any(f.startswith("ChargeCategory-") for f in failures), failures
    assert any("ProviderName" in f for f in failures), failures
