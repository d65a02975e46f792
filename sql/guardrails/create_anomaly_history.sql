-- Table anomaly_history: per month, the days the anomaly baseline could not judge (too little history).
-- Filled by apportion/guardrails/anomalies.py.
-- Column descriptions: models/warehouse_docs.py.
create or replace table anomaly_history (
    month            varchar,
    days_with_data   integer,
    days_not_judged  integer,
    first_judged_day date,
    note             varchar
);
