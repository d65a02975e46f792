"""Reference tables are ours, use FOCUS 1.2 allowed values, and nothing in the repository copies a real sample.

The service maps under models/reference/<kind>/services.csv are written by apportion from facts; each
row's ServiceCategory / ServiceSubcategory must be a FOCUS 1.2 allowed pair. The provider samples in the
workplace's shared/data are read in place by tests, never committed: the last test fails when any
repository file repeats a run of lines from one of them.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from apportion.models.currencies import billing_currency_codes
from apportion.models.focus import SERVICE_CATEGORIES, SERVICE_SUBCATEGORIES
from tests.shared_data import REPO_ROOT, SHARED_DATA

REFERENCE = REPO_ROOT / "models" / "reference"
SERVICE_TABLES = sorted(REFERENCE.glob("*/services.csv"))


def _norm(name: str) -> str:
    return name.lower().replace("_", "")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{_norm(k): (v or "") for k, v in r.items()} for r in csv.DictReader(fh)]


def test_each_cloud_kind_has_its_own_service_table():
    assert {p.parent.name for p in SERVICE_TABLES} >= {"aws_cur", "azure_cost", "gcp_billing"}


@pytest.mark.parametrize("path", SERVICE_TABLES, ids=lambda p: p.parent.name)
def test_every_service_row_uses_a_focus_1_2_category_and_subcategory(path):
    rows = _rows(path)
    assert len(rows) >= 20, f"{path}: a real bill needs more than {len(rows)} services"
    for n, row in enumerate(rows, 2):
        category, subcategory = row.get("servicecategory"), row.get("servicesubcategory")
        assert category in SERVICE_CATEGORIES, f"{path.name} line {n}: ServiceCategory {category!r}"
        assert subcategory in SERVICE_SUBCATEGORIES[category], \
            f"{path.name} line {n}: {subcategory!r} is not a FOCUS 1.2 subcategory of {category!r}"


def test_focus_allowed_values_have_one_parent_per_subcategory():
    subs = [s for values in SERVICE_SUBCATEGORIES.values() for s in values]
    assert len(SERVICE_CATEGORIES) == 19 and len(subs) == 82 and len(set(subs)) == 82
    assert all(f"Other ({c})" in v for c, v in SERVICE_SUBCATEGORIES.items())


def test_billing_currencies_come_from_the_iso_list_without_non_tender_codes():
    codes = set(billing_currency_codes())
    assert {"USD", "EUR", "NOK", "JPY", "GBP", "INR", "XOF", "XAF"} <= codes
    assert not codes & {"XAU", "XXX", "XTS", "XDR", "USN", "CHE"}


def _committed_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [REPO_ROOT / p for p in out.decode().split("\0") if p]


def _data_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError:
        return []
    lines = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in lines if len(ln) >= 25]  # long enough to be a data row, not a shared header word


def test_no_committed_file_copies_a_real_sample():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared samples not found at {SHARED_DATA}: nothing to compare against")
    samples = [p for p in SHARED_DATA.rglob("*") if p.is_file() and p.suffix != ".md"]
    sample_lines: dict[str, str] = {}
    for p in samples:
        for ln in _data_lines(p)[1:]:  # a header row alone is a documented shape, not a copy
            sample_lines.setdefault(ln, str(p.relative_to(SHARED_DATA)))
    copies = []
    for f in _committed_files():
        if not f.is_file() or f.suffix in (".py", ".md"):
            continue
        hits: dict[str, int] = {}
        for ln in _data_lines(f):
            if ln in sample_lines:
                hits[sample_lines[ln]] = hits.get(sample_lines[ln], 0) + 1
        copies += [f"{f.relative_to(REPO_ROOT)}: {n} lines of shared/data/{src}" for src, n in hits.items() if n >= 2]
    assert not copies, "copied third-party rows:\n" + "\n".join(copies)
