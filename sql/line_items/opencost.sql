-- OpenCost /allocation responses (parsed by connectors/opencost.py) -> GPU usage line items, one per allocation
-- (pod, namespace or label group) x step window, and the `__idle__` GPU capacity as idle lines.
-- Reads:  stg_opencost, gpu_idle_owner and gpu_month + apportion_gpu_rate (sql/macros/gpu_macros.sql).
-- Writes: temp view line_items_checked. Usage rows: x_CostBasis 'usage', billed money 0, GPU-hours in
--         ConsumedQuantity, OpenCost's gpuCost (or the rate card) in x_PricedCost.

create or replace temp view line_items_checked as
with

ctx as (select * from gpu_month),

src as (
    select s.*
    from stg_opencost as s, ctx
    -- GPU usage only (CPU-only pods carry no GPU-hours nor GPU cost); bad rows always
    where s.problem is not null
       or coalesce(s.gpu_hours, 0) <> 0
       or coalesce(s.gpu_cost, 0) + coalesce(s.gpu_cost_adjustment, 0) <> 0
),

-- A window that starts in another month belongs to that month's delivery.
in_month as (
    select s.*
    from src as s, ctx
    where s.problem is not null
       or (s.window_start >= ctx.month_start and s.window_start < ctx.month_end)
),

-- Idle by node carries no GPU model nor instance type: take those of the GPU pods on that node in that window.
node_models as (
    select cluster, node, window_start, min(gpu_model) as node_model, min(instance_type) as node_instance_type
    from in_month
    where not is_idle and node is not null and (gpu_model is not null or instance_type is not null)
    group by all
),

modelled as (
    select
        s.* replace (
            coalesce(s.gpu_model, case when s.is_idle then nm.node_model end) as gpu_model,
            coalesce(s.instance_type, case when s.is_idle then nm.node_instance_type end) as instance_type)
    from in_month as s
    left join node_models as nm
        on nm.cluster = s.cluster and nm.node = s.node and nm.window_start = s.window_start
),

rated as (
    select
        s.*,
        apportion_gpu_rate(s.cluster, s.gpu_model, s.window_start) as per_gpu_hour
    from modelled as s
),

checked as (
    select
        r.*,
        case
            when r.problem is not null then r.problem
            when r.window_end <= r.window_start
                then 'allocation ' || r.name || ': window ends before it starts'
            when (select has_rates from ctx) and r.gpu_model is null and not r.is_idle
                then 'allocation ' || r.name || ': GPU model unknown (no gpuAllocation.gpuModel; set default_gpu_model)'
            when (select has_rates from ctx) and r.per_gpu_hour is null and not r.is_idle
                then 'allocation ' || r.name || ': no rate for GPU model ' || r.gpu_model || ' on cluster '
                     || r.cluster || ' on ' || strftime(r.window_start, '%Y-%m-%d')
        end as reason,
        case
            when r.is_idle then
                coalesce(json_merge_patch(coalesce(io.tags, '{}'::json), json_object('k8s_cluster', r.cluster)),
                         json_object('k8s_cluster', r.cluster))
            else coalesce(json_merge_patch(r.tags::json, json_object('k8s_cluster', r.cluster)),
                          json_object('k8s_cluster', r.cluster))
        end as tag_json,
        io.shared as idle_shared,
        coalesce(regexp_extract(r.provider_id, '([^/]+)/?$', 1), r.node) as node_id
    from rated as r
    cross join gpu_idle_owner as io
)

select
    cast(0 as decimal(38, 12)) as BilledCost,
    c.cluster as BillingAccountId,
    'Kubernetes cluster ' || c.cluster as BillingAccountName,
    'Kubernetes Cluster' as BillingAccountType,
    ctx.currency as BillingCurrency,
    ctx.month_end as BillingPeriodEnd,
    ctx.month_start as BillingPeriodStart,
    'Usage' as ChargeCategory,
    case
        when c.is_idle then 'Idle GPUs of ' || c.cluster || coalesce(' node ' || c.node, '') || ' (OpenCost __idle__)'
        else 'GPU allocation of ' || c.name || ' (OpenCost)'
    end as ChargeDescription,
    'Usage-Based' as ChargeFrequency,
    coalesce(c.window_end, ctx.month_end) as ChargePeriodEnd,
    coalesce(c.window_start, ctx.month_start) as ChargePeriodStart,
    c.gpu_hours as ConsumedQuantity,
    'GPU-Hours' as ConsumedUnit,
    cast(0 as decimal(38, 12)) as ContractedCost,
    cast(0 as decimal(38, 12)) as EffectiveCost,
    'OpenCost' as InvoiceIssuerName,
    cast(0 as decimal(38, 12)) as ListCost,
    'Other' as PricingCategory,
    ctx.currency as PricingCurrency,
    c.gpu_hours as PricingQuantity,
    'GPU-Hours' as PricingUnit,
    'Kubernetes' as ProviderName,
    'OpenCost' as PublisherName,
    case
        when c.is_idle then 'k8s/' || c.cluster || coalesce('/node/' || c.node, '') || '/idle'
        when c.pod is not null then 'k8s/' || c.cluster || '/' || coalesce(c.namespace, '-') || '/' || c.pod
        else 'k8s/' || c.cluster || '/' || c.name
    end as ResourceId,
    c.name as ResourceName,
    case when c.is_idle then 'Kubernetes idle GPUs' when c.pod is not null then 'Kubernetes Pod'
         else 'Kubernetes allocation' end as ResourceType,
    'Compute' as ServiceCategory,
    'Kubernetes' as ServiceName,
    'Containers' as ServiceSubcategory,
    'gpu:' || coalesce(c.gpu_model, 'unknown') as SkuId,
    'GPU-Hours' as SkuMeter,
    json_object('GpuCount', c.gpu_count, 'x_GpuModel', c.gpu_model) as SkuPriceDetails,
    case when c.is_idle then null else c.namespace end as SubAccountId,
    case when c.is_idle then null else c.namespace end as SubAccountName,
    case when c.is_idle or c.namespace is null then null else 'Kubernetes Namespace' end as SubAccountType,
    apportion_sorted_json(c.tag_json) as Tags,
    lineage.*,  -- x_SourceName, x_SourceKind, x_BillingMonth, x_DeliveryId, x_IngestedAt
    row_number() over (order by c._file, c._row) as x_LineId,
    c._file as x_SourceFile,
    c._row as x_SourceRow,
    c.cluster || ':' || c.name || ':' || coalesce(strftime(c.window_start, '%Y-%m-%dT%H:%M:%SZ'), '?')
        as x_ProviderLineItemId,
    case when c.is_idle then 'IdleCapacity' else 'PodAllocation' end as x_LineItemType,
    'opencost' as x_ServiceCode,
    case when c.is_idle then 'gpu-idle' else 'gpu-allocated' end as x_UsageType,
    not (c.is_idle and c.idle_shared) as x_HasResource,
    'usage' as x_CostBasis,
    case
        when (select has_rates from ctx) then cast(c.gpu_hours * c.per_gpu_hour as decimal(38, 12))
        else cast(coalesce(c.gpu_cost, 0) + coalesce(c.gpu_cost_adjustment, 0) as decimal(38, 12))
    end as x_PricedCost,
    c.cluster as x_Cluster,
    c.gpu_model as x_GpuModel,
    case when c.is_idle then null else coalesce(c.pod, c.name) end as x_JobId,
    c.gpu_util as x_GpuUtilization,
    c.node_id as x_Node,
    c.gpu_hours as x_GpuHours,
    c.instance_type as x_InstanceType,
    c.reason as x_QuarantineReason
from checked as c
cross join ctx
cross join apportion_lineage(run_context) as lineage;
