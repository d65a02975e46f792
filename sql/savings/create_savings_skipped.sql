-- Table savings_skipped: the savings kinds not estimated for a scope, and why. Read from the Arrow table
-- sv_skipped_arrow (apportion/savings/table.py). Column descriptions: models/warehouse_docs.py.
create or replace table savings_skipped as
select distinct
    kind,
    x_BillingMonth,
    scope,
    reason
from sv_skipped_arrow
order by x_BillingMonth, kind, scope;
