-- Table token_policy_checked: the per-request logs the token policies were checked on, per source and
-- month (or why not). Filled by apportion/guardrails/token_policies.py.
-- Column descriptions: models/warehouse_docs.py.
create or replace table token_policy_checked (
    source      varchar,
    month       varchar,
    delivery_id varchar,
    requests    bigint,
    note        varchar
);
