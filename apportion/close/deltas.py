"""The `restatements` table: what changed in a closed month since its close, per source x team x project x
workload, with the reason where it can be told. Built at warehouse build (apportion/steps/warehouse.py) from
the closed pieces (`<warehouse>/closed/<month>/allocations/`) and the current `allocations`.

Lines are matched on the provider's line id (x_ProviderLineItemId with its ChargePeriodStart and currency,
numbered in file order when a provider repeats an id); a source without provider line ids is matched on
x_LineId (its position in the delivery). Per matched line:

* only in the current build: a new line: `late credit` (ChargeCategory Credit), `refund` (x_LineItemType
  Refund) or `new line`;
* only in the close: `removed line`;
* both, with another BilledCost or EffectiveCost: `changed amount` (detail: the re-delivered file's delivery
  ids);
* both, same amounts, other team / project / workload: `re-attribution` (detail: taxonomy changed, or a rule
  or account mapping changed).

Every delta is current − closed per line and dimension values, so per source and currency
closed total + Σ delta = current total, exactly (DECIMAL); `restatement_tie_out` shows it.

The DDL and queries are sql/close/*.sql; the descriptions models/warehouse_docs.py.
"""

from __future__ import annotations

from apportion.close.store import closed_months, closed_piece_files, file_sha256
from apportion.db import list_literal
from apportion.guardrails.tables import document
from apportion.models.config import ApportionConfig
from apportion.sql import sql_text

DIMS = (("team", "x_Team"), ("project", "x_Project"), ("workload", "x_Workload"))


def _pieces(con, relation: str, months: list[str] | None) -> str:
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    dims = ", ".join(f"coalesce({c}, 'untagged') AS {n}" if c in cols else f"'untagged' AS {n}" for n, c in DIMS)
    pid = "x_ProviderLineItemId" if "x_ProviderLineItemId" in cols else "NULL::VARCHAR"
    where = f"WHERE list_contains({_months_literal(months)}, x_BillingMonth)" if months is not None else ""
    return (f"SELECT x_SourceName AS source, x_BillingMonth AS billing_month, x_LineId AS line_id, "
            f"{pid} AS pid, ChargePeriodStart AS cps, BillingCurrency AS billing_currency, x_DeliveryId AS delivery, "
            f"{dims}, BilledCost AS b, EffectiveCost AS e FROM {relation} {where}")


def _months_literal(months: list[str]) -> str:
    return "[" + ", ".join(f"'{m}'" for m in months) + "]::VARCHAR[]"  # YYYY-MM, checked by closed_months


def create_restatements(con, cfg: ApportionConfig) -> None:
    """Create `closed_months`, `restatements` and `restatement_tie_out` in the warehouse being built."""
    closed = closed_months(cfg)
    for name in ("closed_months", "restatements", "restatement_tie_out"):
        con.execute(sql_text(f"close/create_{name}.sql"))  # descriptions: models/warehouse_docs.py
    for month, info in closed.items():
        con.execute("INSERT INTO closed_months VALUES (?, ?, ?, ?, ?)",
                    [month, info["closed_at"], info.get("closed_by"), info["taxonomy"]["sha256"],
                     sorted(info["sources"])])
    files = [f for m in closed for f in closed_piece_files(cfg, m)]
    if not files:
        _document(con)
        return
    months = sorted(closed)
    tax_now = file_sha256(cfg.taxonomy) if cfg.taxonomy.exists() else None
    tax_changed = {m: info["taxonomy"]["sha256"] != tax_now for m, info in closed.items()}
    closed_src = _pieces(con, f"read_parquet({list_literal(files)}, union_by_name = true)", None)
    current_src = _pieces(con, "allocations", months)
    li_cols = {r[0] for r in con.execute("DESCRIBE line_items").fetchall()}
    li_type = "li.x_LineItemType" if "x_LineItemType" in li_cols else "NULL::VARCHAR"
    con.execute("CREATE TEMP TABLE _tax_changed (billing_month VARCHAR, changed BOOLEAN)")
    con.executemany("INSERT INTO _tax_changed VALUES (?, ?)", [[m, c] for m, c in tax_changed.items()])
    con.execute(sql_text("close/pieces.sql").format(closed=closed_src, current=current_src))
    con.execute(sql_text("close/insert_restatements.sql").format(li_type=li_type))
    con.execute(sql_text("close/insert_restatement_tie_out.sql"))
    con.execute("DROP TABLE _pieces")
    con.execute("DROP TABLE _tax_changed")
    _document(con)


def _document(con) -> None:
    for name in ("closed_months", "restatements", "restatement_tie_out"):
        document(con, name)
