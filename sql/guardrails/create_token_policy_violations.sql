-- Table token_policy_violations: requests outside their token policy, per policy, rule, month, team, API
-- key and model. Filled by apportion/guardrails/token_policies.py.
-- Column descriptions: models/warehouse_docs.py.
create or replace table token_policy_violations (
    policy             varchar,
    rule               varchar,
    month              varchar,
    source             varchar,
    team               varchar,
    workload           varchar,
    value_class        varchar,
    api_key            varchar,
    model              varchar,
    limit_value        varchar,
    requests           bigint,
    first_day          date,
    last_day           date,
    tokens_over        bigint,
    cost               decimal(38, 6),
    excess_cost        decimal(38, 6),
    allowed_model      varchar,
    allowed_model_cost decimal(38, 6),
    unpriced_requests  bigint,
    currency           varchar
);
