"""Savings advice with dollar estimates (issue 12): one module per kind, `table.py` writes `recommendations`.

`create_recommendations(con, cfg)` runs inside the warehouse build (steps/warehouse.py) on the staged
file: it reads line_items and allocations, prices with the catalogue and the sources' overrides, and
writes the `recommendations` and `savings_skipped` tables. See docs/savings.md.
"""

from __future__ import annotations

from apportion.models.config import ApportionConfig
from apportion.models.savings import SavingsSettings
from apportion.savings.table import KINDS, Finding, Results, Skip

__all__ = ["KINDS", "Finding", "Results", "Skip", "create_recommendations", "compute"]

PIECES_SQL = """
CREATE OR REPLACE TEMP VIEW sv_pieces AS
SELECT li.*, a.x_Team AS sv_team, a.x_Project AS sv_project, a.x_Workload AS sv_workload,
       CAST(a.x_AllocatedRatio AS DECIMAL(38, 12)) AS sv_ratio
FROM line_items AS li
INNER JOIN allocations AS a USING (x_SourceName, x_BillingMonth, x_LineId)
"""


def compute(con, cfg: ApportionConfig) -> Results:
    """Every kind's findings and skips, from the warehouse tables on `con`."""
    from apportion.savings import commitments, gpus, prompt_caching, shorter_prompts, smaller_model, spot

    settings = cfg.savings or SavingsSettings()
    con.execute(PIECES_SQL)
    results = Results()
    for module in (smaller_model, prompt_caching, shorter_prompts, gpus, spot, commitments):
        module.find(con, cfg, settings, results)
    results.findings = [f for f in results.findings if f.saving > 0 and f.saving >= settings.min_saving]
    return results


def create_recommendations(con, cfg: ApportionConfig) -> Results:
    """Build `recommendations` and `savings_skipped` on the warehouse connection."""
    from apportion.savings import table

    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'allocations'").fetchall()}
    if not {"x_Team", "x_Project", "x_Workload", "x_AllocatedRatio"} <= cols:
        results = Results()  # an empty warehouse: empty tables, same columns
    else:
        results = compute(con, cfg)
    table.write(con, results, cfg.reporting_currency)
    return results
