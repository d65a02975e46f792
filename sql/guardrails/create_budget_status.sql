-- Table budget_status: each budget per period: actual, period-end forecast with its 80 % band, run-rate and
-- the thresholds crossed. Filled by apportion/guardrails/views.py from the budgets file and the ledger.
-- Column descriptions: models/warehouse_docs.py.
create or replace table budget_status (
    budget          varchar,
    period          varchar,
    period_start    date,
    period_end      date,
    as_of           date,
    is_open         boolean,
    scope           json,
    currency        varchar,
    amount          decimal(38, 2),
    actual          decimal(38, 2),
    actual_ratio    decimal(18, 4),
    forecast        decimal(38, 2),
    forecast_low    decimal(38, 2),
    forecast_high   decimal(38, 2),
    forecast_ratio  decimal(18, 4),
    run_rate        decimal(38, 2),
    forecast_method varchar,
    history_days    integer,
    status          varchar,
    crossed         json,
    owners          varchar,
    channels        varchar
);
