"""Token policies (issue 11, point 4): NOT BUILT YET. The table exists (empty) so the warehouse's shape is
stable; see docs/guardrails.md for what is planned and why per-request checks need the per-request logs."""

from __future__ import annotations

from apportion.models.config import ApportionConfig
from apportion.models.taxonomy import Taxonomy

COLUMNS = [
    ("policy", "VARCHAR", "Policy name."),
    ("rule", "VARCHAR", "max_input_tokens | max_output_tokens | allowed_models | monthly_tokens."),
    ("month", "VARCHAR", "Billing month."),
    ("team", "VARCHAR", "Team."),
    ("api_key", "VARCHAR", "API key alias (ResourceId of the gateway rows)."),
    ("model", "VARCHAR", "Model used."),
    ("requests", "BIGINT", "Requests in violation."),
    ("tokens_over", "BIGINT", "Tokens above the limit."),
    ("excess_cost", "DECIMAL(38,2)", "Cost of the excess."),
    ("allowed_model_cost", "DECIMAL(38,2)", "What the same requests would cost on an allowed model."),
]


def create_table(con, cfg: ApportionConfig, tax: Taxonomy) -> int:
    from apportion.guardrails.tables import table

    table(con, "token_policy_violations", COLUMNS, [],
          "Token policy violations (not computed yet: token policies are planned, see docs/guardrails.md).")
    return 0
