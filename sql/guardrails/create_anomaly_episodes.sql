-- Table anomaly_episodes: spend anomalies as found by the last build (the anomalies view adds the
-- dismissals). Filled by apportion/guardrails/anomalies.py.
-- Column descriptions: models/warehouse_docs.py.
create or replace table anomaly_episodes (
    anomaly_id       varchar,
    series_kind      varchar,
    series           varchar,
    series_key       json,
    first_day        date,
    last_day         date,
    days             integer,
    currency         varchar,
    expected         decimal(38, 2),
    actual           decimal(38, 2),
    impact           decimal(38, 2),
    impact_ratio     decimal(18, 4),
    provisional      boolean,
    top_contributors json
);
