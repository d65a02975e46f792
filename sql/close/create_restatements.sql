-- Table restatements: deltas of closed months since their close, per source, currency, team, project, workload
-- and reason; filled by insert_restatements.sql when a month is closed (apportion/close/deltas.py).
-- Column descriptions: models/warehouse_docs.py.
create table restatements (
    billing_month          varchar,
    source                 varchar,
    billing_currency       varchar,
    team                   varchar,
    project                varchar,
    workload               varchar,
    reason                 varchar,
    detail                 varchar,
    lines                  bigint,
    closed_billed_cost     decimal(38, 12),
    current_billed_cost    decimal(38, 12),
    delta_billed_cost      decimal(38, 12),
    closed_effective_cost  decimal(38, 12),
    current_effective_cost decimal(38, 12),
    delta_effective_cost   decimal(38, 12)
);
