"""Helpers shared by the LLM source tests (openai, anthropic, litellm, bedrock_logs, otel_genai)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import yaml

from apportion import steps
from apportion.models.config import load_config

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
MONTH = "2026-10"


def make_config(tmp_path: Path, sources: list[dict], taxonomy: Path | None = None):
    """Write apportion.yaml with the given source entries (name, kind, uri, options) and load it."""
    tax = tmp_path / "taxonomy.yaml"
    if not tax.exists():
        shutil.copy(taxonomy or REPO / "demo" / "taxonomy.yaml", tax)
    doc = {"warehouse": "data", "taxonomy": "taxonomy.yaml", "sources": sources}
    (tmp_path / "apportion.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(tmp_path / "apportion.yaml")


def query(sql: str, params=None) -> list[dict]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def line_items(cfg, source: str, month: str = MONTH) -> list[dict]:
    d = steps.partition_dir(cfg, steps.LINE_ITEMS, source, month)
    return query(f"SELECT * FROM read_parquet('{d}/*.parquet') ORDER BY x_LineId")


def quarantined(cfg, source: str, month: str = MONTH) -> list[dict]:
    d = steps.partition_dir(cfg, steps.QUARANTINE, source, month)
    return query(f"SELECT * FROM read_parquet('{d}/*.parquet') ORDER BY x_SourceFile, x_SourceRow")


def build(cfg, name: str, month: str = MONTH):
    """land -> line items -> allocations for one source and month."""
    src = cfg.source(name)
    delivery = steps.land(cfg, src, month)
    stats = steps.build_line_items(cfg, src, delivery)
    alloc = steps.allocate(cfg, src, month)
    return delivery, stats, alloc


def dsum(rows, key) -> Decimal:
    return sum((Decimal(r[key]) for r in rows if r[key] is not None), Decimal(0))
