"""Issue 15: the line-item lineage columns (x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId,
x_IngestedAt) come from one macro (`apportion_lineage`, sql/macros/create_macros.sql), not a copy per kind."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from apportion.db import connect

REPO = Path(__file__).resolve().parent.parent
COPIED = re.compile(r"ctx\.(source_kind|ingested_at|delivery_id)\s+as\s+x_(SourceKind|IngestedAt|DeliveryId)\b", re.I)


def test_every_kind_takes_its_lineage_from_the_shared_macro():
    files = sorted((REPO / "sql" / "line_items").glob("*.sql"))
    assert len(files) >= 8
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert "cross join apportion_lineage(run_context) as lineage" in text, f.name
        assert re.search(r"^\s+lineage\.\*,", text, flags=re.M), f.name
        assert not COPIED.search(text), f"{f.name}: {COPIED.search(text).group(0)}"


def test_the_lineage_macro_reads_the_run_context():
    con = connect()
    try:
        at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
        con.execute("CREATE TEMP TABLE run_context AS SELECT ?::VARCHAR AS source_name, ?::VARCHAR AS source_kind, "
                    "?::VARCHAR AS billing_month, ?::VARCHAR AS delivery_id, ?::TIMESTAMPTZ AS ingested_at",
                    ["aws-main", "aws_cur", "2025-02", "exec-7", at])
        cur = con.execute("SELECT lineage.*, r.range AS n FROM range(2) AS r "
                          "CROSS JOIN apportion_lineage(run_context) AS lineage ORDER BY n")
        assert [d[0] for d in cur.description] == ["x_SourceName", "x_SourceKind", "x_BillingMonth", "x_DeliveryId",
                                                   "x_IngestedAt", "n"]
        assert cur.fetchall() == [("aws-main", "aws_cur", "2025-02", "exec-7", at, 0),
                                  ("aws-main", "aws_cur", "2025-02", "exec-7", at, 1)]
    finally:
        con.close()
