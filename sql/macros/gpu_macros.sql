-- Helpers of the GPU line-item SQL (slurm_sacct, opencost, gpu_metrics), run before it on the same connection.
-- Reads: run_context, gpu_source_context, gpu_rates (models/gpu_rates.py).

-- Microseconds of GPU time -> GPU-hours, DECIMAL(38,12) rounded half up (exact integer arithmetic).
create or replace temp macro apportion_gpu_hours(us) as
    cast(
        cast(((cast(us as hugeint) * 2000000000000) + 3600000000) // 7200000000 // 1000000000000 as varchar)
        || '.'
        || lpad(cast(((cast(us as hugeint) * 2000000000000) + 3600000000) // 7200000000 % 1000000000000 as varchar), 12, '0')
        as decimal(38, 12));

-- The rate card's price of a GPU-hour of `gpu_model` on `cluster` on `day`: the most specific cluster, then
-- model, then the newest entry in force that day (null when none applies).
create or replace temp macro apportion_gpu_rate(cluster, gpu_model, day) as (
    select gr.per_gpu_hour
    from gpu_rates as gr
    where gpu_model is not null
      and regexp_full_match(cluster, gr.cluster_regex)
      and regexp_full_match(gpu_model, gr.model_regex)
      and cast(day as date) >= gr.valid_from
      and cast(day as date) < gr.valid_until
    order by gr.cluster_specific, gr.model_specific, gr.valid_from desc, gr.rate_index
    limit 1
);

-- The run's context (source, month, delivery) with the month's bounds and the GPU source's settings.
create or replace temp view gpu_month as
select
    r.*,
    cast(r.billing_month || '-01 00:00:00+00' as timestamptz) as month_start,
    cast(r.billing_month || '-01 00:00:00+00' as timestamptz) + interval 1 month as month_end,
    g.*
from run_context as r
cross join gpu_source_context as g;
