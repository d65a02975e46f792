"""Analyst views of apportion.duckdb and the documentation of every table and view column.

Called by `ledger.build_warehouse` after the tables exist: creates the views (`monthly_spend`), then
writes a `COMMENT ON` for every table, view and column that does not have one yet, so
`duckdb_tables()`, `duckdb_views()` and `duckdb_columns()` describe the whole warehouse.
The README section "Warehouse" carries the same descriptions and example queries (run in the tests).
"""

from __future__ import annotations

import duckdb

from apportion.models.focus import LINE_ITEM_COLUMNS, dimension_column

VIEWS = ("monthly_spend",)

VIEW_DOCS = {
    "monthly_spend": "Allocated spend per billing month, source, provider, currency, team, project and workload "
                     "(a view over allocations). Σ BilledCost per source and month equals the invoice.",
}

# Columns not described by the line-item contract (models/focus.py) or by ledger.COLUMN_DOCS.
COLUMN_DOCS: dict[str, dict[str, str]] = {
    "gpu_top_idle_jobs": {
        "first_date": "First day the job or pod held GPUs in the month.",
        "last_date": "Last day the job or pod held GPUs in the month.",
        "gpu_hours": "GPU-hours allocated to the job or pod.",
        "utilization": "Measured average GPU utilisation, 0..1 (null when not measured).",
        "unused_gpu_hours": "Allocated but unused GPU-hours: gpu_hours x (1 - utilization).",
        "priced_cost": "Priced cost of the GPU-hours (rate card or OpenCost estimate, not billed money).",
        "idle_cost": "Priced cost of the unused GPU-hours.",
        "idle_cost_rank": "Rank by idle_cost within the month (1 = most expensive idle job).",
    },
    "gpu_usage": {"x_PieceId": "Allocation piece of the GPU usage line."},
    "llm_reconciliation": {"billing_currency": "Currency of the invoice and of the priced usage."},
    "llm_unit_economics": {
        "billing_currency": "Currency of the dollars.",
        "team": "Team the usage and its share of the invoice are attributed to.",
        "project": "Project the usage and its share of the invoice are attributed to.",
        "workload": "Workload the usage and its share of the invoice are attributed to.",
    },
    "untagged_spend": {
        "x_BillingMonth": "Billing month YYYY-MM.",
        "x_SourceName": "Source name from the config.",
        "SubAccountId": "Account that used the resource: who to ask.",
        "SubAccountName": "Display name of that account.",
        "ServiceName": "Provider service name.",
        "ResourceId": "Resource behind the spend (empty for charges without a resource).",
        "BillingCurrency": "ISO 4217 currency of the amounts.",
        "BilledCost": "Σ allocated BilledCost of the pieces left unattributed.",
        "EffectiveCost": "Σ allocated EffectiveCost of the pieces left unattributed.",
    },
    "allocation_coverage": {
        "x_BillingMonth": "Billing month YYYY-MM.",
        "x_SourceName": "Source name from the config.",
        "dimension": "Dimension measured (project, team, workload, ...).",
        "BillingCurrency": "ISO 4217 currency of the amounts.",
        "total_cost": "Σ EffectiveCost of the source and month (attributed + shared + untagged).",
    },
    "quarantined_rows": {
        "x_SourceName": "Source the row came from.",
        "x_BillingMonth": "Billing month the delivery was for.",
        "x_DeliveryId": "Provider delivery (assembly / execution) the row was in.",
        "x_SourceFile": "Raw object the row came from, relative to the source URI.",
        "x_SourceRow": "1-based data row within that raw object.",
        "reason": "Why the row was rejected, e.g. 'non-numeric line_item_unblended_cost 12,5'.",
        "billed_cost": "The row's billed cost as far as it could be read (text; null when unreadable).",
    },
    "deliveries": {
        "source": "Source name from the config.",
        "kind": "Connector kind (aws_cur, ...).",
        "billing_month": "Billing month YYYY-MM.",
        "delivery_id": "Provider delivery id (legacy CUR assemblyId, CUR 2.0 execution id, API fetch id).",
        "layout": "How the provider laid the delivery out (e.g. cur2-overwrite, cur2-versioned, legacy).",
        "manifest_key": "Manifest object the delivery was read from (null when there is none).",
        "fetched_at": "When apportion landed the delivery (UTC).",
        "objects": "Number of raw objects landed.",
        "bytes": "Total size of the raw objects.",
        "object_keys": "JSON list of {key, size, etag} of the raw objects, as the provider listed them.",
        "is_current": "True for the delivery the published line items of the month were built from.",
    },
    "portfolio": {
        "x_BillingMonth": "Billing month YYYY-MM.",
        "value_class": "production | experimental | background (or 'untagged' / 'shared').",
        "team": "Attributed team (or 'untagged' / 'shared').",
        "BillingCurrency": "ISO 4217 currency of the amounts.",
        "effective_cost": "Σ allocated EffectiveCost.",
        "billed_cost": "Σ allocated BilledCost.",
        "change_from_previous_month": "effective_cost minus the previous month's (null for the first month).",
    },
    "monthly_spend": {
        "x_BillingMonth": "Billing month YYYY-MM.",
        "x_SourceName": "Source name from the config.",
        "ProviderName": "Provider of the resource or service.",
        "BillingCurrency": "ISO 4217 currency of the amounts.",
        "x_Team": "Attributed team (or 'untagged' / 'shared').",
        "x_Project": "Attributed project (or 'untagged' / 'shared').",
        "x_Workload": "Attributed workload (or 'untagged' / 'shared').",
        "pieces": "Number of allocation pieces.",
        "BilledCost": "Σ allocated BilledCost (what the provider invoiced).",
        "EffectiveCost": "Σ allocated EffectiveCost (amortised, after commitment discounts).",
        "ListCost": "Σ allocated ListCost (public on-demand prices).",
    },
}


def create_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create the analyst views; skipped while `allocations` has no rows' shape yet (empty lake)."""
    from apportion.sql import sql_text

    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'allocations'").fetchall()}
    if not {"x_Team", "x_Project", "x_Workload", "BilledCost"} <= cols:
        return []
    con.execute(sql_text("outputs/create_monthly_spend.sql"))
    return list(VIEWS)


def document(con: duckdb.DuckDBPyConnection, dims: list[str]) -> None:
    """COMMENT ON every view and every still-undocumented column of every table and view."""
    for view, doc in VIEW_DOCS.items():
        if con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0]:
            con.execute(f"COMMENT ON VIEW {view} IS {_lit(doc)}")
    generic = {c.name: c.description for c in LINE_ITEM_COLUMNS}
    for d in dims:
        generic.setdefault(dimension_column(d), f"Attributed {d} (or 'untagged' / 'shared').")
    missing = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE NOT internal AND schema_name = 'main' AND (comment IS NULL OR comment = '')").fetchall()
    for table, column in missing:
        doc = COLUMN_DOCS.get(table, {}).get(column) or generic.get(column)
        if doc:
            con.execute(f'COMMENT ON COLUMN "{table}"."{column}" IS {_lit(doc)}')


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
