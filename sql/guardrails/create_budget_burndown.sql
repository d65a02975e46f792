-- Table budget_burndown: cumulative spend per budget, period and day, then the forecast path with its band
-- (the burn-down chart). Filled by apportion/guardrails/views.py.
-- Column descriptions: models/warehouse_docs.py.
create or replace table budget_burndown (
    budget     varchar,
    period     varchar,
    day        date,
    kind       varchar,
    cumulative decimal(38, 2),
    low        decimal(38, 2),
    high       decimal(38, 2),
    amount     decimal(38, 2)
);
