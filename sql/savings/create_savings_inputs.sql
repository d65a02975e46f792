-- Table savings_inputs: per billing month, a hash of what its recommendations were computed from (partition
-- versions, config, code). Filled by apportion/savings/__init__.py. Column descriptions: models/warehouse_docs.py.
create or replace table savings_inputs (
    x_BillingMonth varchar,
    input_key      varchar
);
