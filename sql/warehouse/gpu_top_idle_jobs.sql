-- View gpu_top_idle_jobs: the 20 jobs/pods per month and currency with the highest idle cost.
create or replace view gpu_top_idle_jobs as
select *
from gpu_job_waste
where idle_cost_rank <= 20 and coalesce(unused_gpu_hours, 0) > 0
order by x_BillingMonth, BillingCurrency, idle_cost_rank;
