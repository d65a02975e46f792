"""Every DuckDB connection a run opens is bounded (issue 10: 50 M rows in 2 GB).

DuckDB's default memory limit is 80 % of the machine. The steps' own connections were bounded; the published
file read back by the report, the exports and the checks, and the lake checks (delivery mix, summary versions,
a closed month's totals) were not: at 50 M rows the report's read-back peaked at 1,982 MiB in its own right.
"""

from __future__ import annotations

import duckdb

from apportion.db import connect, open_published
from apportion.models.config import load_config


def _limit(con) -> str:
    return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_the_published_file_read_back_is_bounded_like_a_step(outputs_demo_project, monkeypatch):
    monkeypatch.setenv("APPORTION_MEMORY_LIMIT", "321MB")
    cfg = load_config(outputs_demo_project[0])
    reference = duckdb.connect()
    reference.execute("SET memory_limit = '321MB'")
    bound, default = _limit(reference), _limit(duckdb.connect())
    assert bound != default
    step = connect(cfg)
    published = open_published(cfg)
    try:
        assert _limit(step) == _limit(published) == bound
        assert published.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(cfg.warehouse / ".tmp")
        assert published.execute("SELECT count(*) FROM allocations").fetchone()[0] > 0  # still the published file
    finally:
        step.close()
        published.close()


def test_the_lake_checks_open_bounded_connections(outputs_demo_project, monkeypatch, tmp_path):
    """The checks a run makes over the whole lake before and after its steps."""
    from apportion.close import store
    from apportion.lake import ALLOCATIONS, current_files, mixed_delivery_months
    from apportion.steps import summaries

    cfg = load_config(outputs_demo_project[0])
    opened = []
    real = duckdb.connect

    def spy(*args, **kwargs):
        opened.append(kwargs.get("config") or {})
        return real(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", spy)
    assert mixed_delivery_months(cfg) == []
    per_source, _ = summaries.recorded(cfg)
    assert per_source
    month = sorted(m for _, m in per_source)[-1]
    snapshot = tmp_path / "allocations" / "aws-main"  # a closed month's frozen pieces, as close/store.py lays them out
    snapshot.mkdir(parents=True)
    (snapshot / "data.parquet").write_bytes(current_files(cfg.lake, ALLOCATIONS)[0].read_bytes())
    assert store._source_totals(tmp_path / "allocations")["aws-main"]
    from apportion.models.taxonomy import load_taxonomy
    from apportion.taxonomy_tools import diff

    tax = load_taxonomy(cfg.taxonomy)
    assert diff(cfg, tax, tax, month)["month"] == month  # the taxonomy diff reads a month's pieces twice
    assert len(opened) >= 4
    assert all("memory_limit" in c for c in opened), opened
