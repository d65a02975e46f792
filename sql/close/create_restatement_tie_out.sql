-- Table restatement_tie_out: per closed month, source and currency, closed total + Σ restatement deltas =
-- current total; filled by insert_restatement_tie_out.sql (apportion/close/deltas.py).
-- Column descriptions: models/warehouse_docs.py.
create table restatement_tie_out (
    billing_month          varchar,
    source                 varchar,
    billing_currency       varchar,
    closed_billed_cost     decimal(38, 12),
    delta_billed_cost      decimal(38, 12),
    current_billed_cost    decimal(38, 12),
    closed_effective_cost  decimal(38, 12),
    delta_effective_cost   decimal(38, 12),
    current_effective_cost decimal(38, 12),
    ties_out               boolean
);
