-- Table closed_months: the months closed with `apportion close` (apportion/close/deltas.py fills it from
-- <warehouse>/closed/). Column descriptions: models/warehouse_docs.py.
create table closed_months (
    billing_month   varchar,
    closed_at       timestamptz,
    closed_by       varchar,
    taxonomy_sha256 varchar,
    sources         varchar[]
);
