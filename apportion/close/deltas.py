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
"""

from __future__ import annotations

from apportion.close.store import closed_months, closed_piece_files, file_sha256
from apportion.db import list_literal, lit
from apportion.models.config import ApportionConfig

DIMS = (("team", "x_Team"), ("project", "x_Project"), ("workload", "x_Workload"))

COLUMNS = ("billing_month VARCHAR, source VARCHAR, billing_currency VARCHAR, team VARCHAR, project VARCHAR, "
           "workload VARCHAR, reason VARCHAR, detail VARCHAR, lines BIGINT, "
           "closed_billed_cost DECIMAL(38, 12), current_billed_cost DECIMAL(38, 12), delta_billed_cost DECIMAL(38, 12), "
           "closed_effective_cost DECIMAL(38, 12), current_effective_cost DECIMAL(38, 12), "
           "delta_effective_cost DECIMAL(38, 12)")
TIE_COLUMNS = ("billing_month VARCHAR, source VARCHAR, billing_currency VARCHAR, closed_billed_cost DECIMAL(38, 12), "
               "delta_billed_cost DECIMAL(38, 12), current_billed_cost DECIMAL(38, 12), "
               "closed_effective_cost DECIMAL(38, 12), delta_effective_cost DECIMAL(38, 12), "
               "current_effective_cost DECIMAL(38, 12), ties_out BOOLEAN")


_AMOUNTS = {f"{side}_{m}_cost": f"{label} {m.capitalize()}Cost" for side, label in
            (("closed", "At close:"), ("current", "Now:"), ("delta", "Now minus at close:")) for m in ("billed", "effective")}
COLUMN_DOCS = {
    "closed_months": {
        "billing_month": "Closed billing month (YYYY-MM).",
        "closed_at": "When the month was closed.",
        "closed_by": "Who closed it (user name; auto closes run as the nightly job's user).",
        "taxonomy_sha256": "SHA-256 of the taxonomy file the closed allocation was built with.",
        "sources": "Sources in the closed version.",
    },
    "restatements": {
        "billing_month": "Closed billing month.", "source": "Source (x_SourceName).",
        "billing_currency": "Billing currency.", "team": "Team (x_Team) of the pieces.",
        "project": "Project (x_Project) of the pieces.", "workload": "Workload (x_Workload) of the pieces.",
        "reason": "late credit, refund, new line, removed line, changed amount or re-attribution.",
        "detail": "What tells the reason: the deliveries, the charge category, a taxonomy change.",
        "lines": "Line items behind the row.", **_AMOUNTS,
    },
    "restatement_tie_out": {
        "billing_month": "Closed billing month.", "source": "Source (x_SourceName).",
        "billing_currency": "Billing currency.", **_AMOUNTS,
        "ties_out": "closed + delta = current for both BilledCost and EffectiveCost, exactly.",
    },
}


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
    con.execute("CREATE TABLE closed_months (billing_month VARCHAR, closed_at TIMESTAMPTZ, closed_by VARCHAR, "
                "taxonomy_sha256 VARCHAR, sources VARCHAR[])")
    for month, info in closed.items():
        con.execute("INSERT INTO closed_months VALUES (?, ?, ?, ?, ?)",
                    [month, info["closed_at"], info.get("closed_by"), info["taxonomy"]["sha256"],
                     sorted(info["sources"])])
    files = [f for m in closed for f in closed_piece_files(cfg, m)]
    if not files:
        con.execute(f"CREATE TABLE restatements ({COLUMNS})")
        con.execute(f"CREATE TABLE restatement_tie_out ({TIE_COLUMNS})")
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
    con.execute(f"""
CREATE TEMP TABLE _pieces AS
WITH p AS (SELECT 'closed' AS side, * FROM ({closed_src}) UNION ALL SELECT 'current', * FROM ({current_src})),
lines AS (SELECT side, source, billing_month, line_id, any_value(pid) AS pid, any_value(cps) AS cps,
                 any_value(billing_currency) AS billing_currency FROM p GROUP BY ALL),
keyed AS (SELECT *, CASE WHEN pid IS NULL OR pid = '' THEN '#' || line_id::VARCHAR
                 ELSE pid || '|' || coalesce(cps::VARCHAR, '') || '|' || billing_currency || '|' ||
                      row_number() OVER (PARTITION BY side, source, billing_month, pid, cps, billing_currency
                                         ORDER BY line_id)::VARCHAR END AS k FROM lines)
SELECT p.*, keyed.k FROM p JOIN keyed USING (side, source, billing_month, line_id)""")
    con.execute(f"""
CREATE TABLE restatements AS
WITH line_side AS (
    SELECT source, billing_month, k,
           any_value(billing_currency) AS billing_currency,
           sum(b) FILTER (WHERE side = 'closed') AS cb, sum(b) FILTER (WHERE side = 'current') AS ab,
           sum(e) FILTER (WHERE side = 'closed') AS ce, sum(e) FILTER (WHERE side = 'current') AS ae,
           count(*) FILTER (WHERE side = 'closed') AS n_closed, count(*) FILTER (WHERE side = 'current') AS n_current,
           string_agg(DISTINCT delivery, ', ' ORDER BY delivery) FILTER (WHERE side = 'closed') AS d_closed,
           string_agg(DISTINCT delivery, ', ' ORDER BY delivery) FILTER (WHERE side = 'current') AS d_current,
           any_value(line_id) FILTER (WHERE side = 'current') AS current_line
    FROM _pieces GROUP BY ALL),
dims AS (
    SELECT source, billing_month, k, team, project, workload,
           coalesce(sum(b) FILTER (WHERE side = 'closed'), 0) AS cb, coalesce(sum(b) FILTER (WHERE side = 'current'), 0) AS ab,
           coalesce(sum(e) FILTER (WHERE side = 'closed'), 0) AS ce, coalesce(sum(e) FILTER (WHERE side = 'current'), 0) AS ae
    FROM _pieces GROUP BY ALL),
kind AS (
    SELECT l.*, li.ChargeCategory AS charge_category, {li_type} AS line_item_type, t.changed AS tax_changed,
           CASE WHEN l.n_closed = 0 AND (li.ChargeCategory = 'Credit' AND lower(coalesce({li_type}, '')) LIKE '%refund%'
                                         OR lower(coalesce({li_type}, '')) = 'refund') THEN 'refund'
                WHEN l.n_closed = 0 AND li.ChargeCategory = 'Credit' THEN 'late credit'
                WHEN l.n_closed = 0 THEN 'new line'
                WHEN l.n_current = 0 THEN 'removed line'
                WHEN l.cb <> l.ab OR l.ce <> l.ae THEN 'changed amount'
                ELSE 're-attribution' END AS reason
    FROM line_side l
    LEFT JOIN line_items li ON li.x_SourceName = l.source AND li.x_BillingMonth = l.billing_month
                            AND li.x_LineId = l.current_line
    LEFT JOIN _tax_changed t ON t.billing_month = l.billing_month),
explained AS (
    SELECT *, CASE reason
        WHEN 'changed amount' THEN CASE WHEN d_closed IS DISTINCT FROM d_current
             THEN 're-delivered file: delivery ' || coalesce(d_closed, '-') || ' -> ' || coalesce(d_current, '-')
             ELSE 'same delivery, rebuilt' END
        WHEN 're-attribution' THEN CASE WHEN tax_changed THEN 'taxonomy changed since close'
             ELSE 'rule or account mapping changed' END
        WHEN 'removed line' THEN 'not in delivery ' || coalesce(d_current, '-')
        ELSE coalesce(charge_category, '') || coalesce(' / ' || line_item_type, '') || ' in delivery ' ||
             coalesce(d_current, '-') END AS detail
    FROM kind)
SELECT d.billing_month, d.source, x.billing_currency, d.team, d.project, d.workload, x.reason, x.detail,
       count(DISTINCT d.k) AS lines,
       sum(d.cb)::DECIMAL(38, 12) AS closed_billed_cost, sum(d.ab)::DECIMAL(38, 12) AS current_billed_cost,
       sum(d.ab - d.cb)::DECIMAL(38, 12) AS delta_billed_cost,
       sum(d.ce)::DECIMAL(38, 12) AS closed_effective_cost, sum(d.ae)::DECIMAL(38, 12) AS current_effective_cost,
       sum(d.ae - d.ce)::DECIMAL(38, 12) AS delta_effective_cost
FROM dims d JOIN explained x USING (source, billing_month, k)
WHERE d.cb <> d.ab OR d.ce <> d.ae
GROUP BY ALL
ORDER BY billing_month, source, billing_currency, reason, abs(sum(d.ae - d.ce)) DESC, team, project, workload""")
    con.execute("""
CREATE TABLE restatement_tie_out AS
WITH c AS (SELECT billing_month, source, billing_currency, sum(b) FILTER (WHERE side = 'closed') AS cb,
                  sum(b) FILTER (WHERE side = 'current') AS ab, sum(e) FILTER (WHERE side = 'closed') AS ce,
                  sum(e) FILTER (WHERE side = 'current') AS ae FROM _pieces GROUP BY ALL),
d AS (SELECT billing_month, source, billing_currency, sum(delta_billed_cost) AS db, sum(delta_effective_cost) AS de
      FROM restatements GROUP BY ALL)
SELECT billing_month, source, billing_currency, coalesce(cb, 0)::DECIMAL(38, 12) AS closed_billed_cost,
       coalesce(db, 0)::DECIMAL(38, 12) AS delta_billed_cost, coalesce(ab, 0)::DECIMAL(38, 12) AS current_billed_cost,
       coalesce(ce, 0)::DECIMAL(38, 12) AS closed_effective_cost, coalesce(de, 0)::DECIMAL(38, 12) AS delta_effective_cost,
       coalesce(ae, 0)::DECIMAL(38, 12) AS current_effective_cost,
       coalesce(cb, 0) + coalesce(db, 0) = coalesce(ab, 0) AND coalesce(ce, 0) + coalesce(de, 0) = coalesce(ae, 0)
           AS ties_out
FROM c LEFT JOIN d USING (billing_month, source, billing_currency)
ORDER BY 1, 2, 3""")
    con.execute("DROP TABLE _pieces")
    con.execute("DROP TABLE _tax_changed")
    _document(con)


def _document(con) -> None:
    con.execute("COMMENT ON TABLE closed_months IS 'Months closed with `apportion close` (docs/close.md).'")
    con.execute("COMMENT ON TABLE restatements IS 'Deltas of closed months since their close, per source, team, "
                "project, workload and reason (late credit, refund, new line, removed line, changed amount, "
                "re-attribution). closed + Σ delta = current, per source (restatement_tie_out).'")
    con.execute("COMMENT ON TABLE restatement_tie_out IS 'Per closed month, source and currency: closed total + "
                "Σ restatement deltas = current total (ties_out).'")
    for table, docs in COLUMN_DOCS.items():
        for col, doc in docs.items():
            con.execute(f"COMMENT ON COLUMN {table}.{col} IS {lit(doc)}")
