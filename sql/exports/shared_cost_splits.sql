-- Finance pack: every piece a split rule produced this month (shared costs spread over teams,
-- invoice lines split by usage), with the rule, the ratio and the line it came from. The pieces of a
-- line sum exactly to line_billed_cost / line_effective_cost. Empty (header only) without split rules.
select
    a.x_BillingMonth as billing_month,
    a.x_SourceName as source,
    a.ProviderName as provider,
    a.x_LineId as line_id,
    a.x_PieceId as piece_id,
    a.x_AllocationRuleId as rule_id,
    a.x_AllocatedRatio as allocated_ratio,
    CAST(a.x_AllocationMethodDetails AS VARCHAR) as method_details,
    a.ChargeCategory as charge_category,
    a.SubAccountId as account_id,
    a.ServiceName as service,
    a.ResourceId as resource_id,
    a.BillingCurrency as billing_currency,
    li.BilledCost as line_billed_cost,
    li.EffectiveCost as line_effective_cost,
    a.BilledCost as billed_cost,
    a.EffectiveCost as effective_cost,
    a.x_Project as project,
    a.x_Team as team,
    a.x_Workload as workload,
    a.x_AllocationReason as allocation_reason
from allocations as a
inner join line_items as li
    on li.x_SourceName = a.x_SourceName and li.x_BillingMonth = a.x_BillingMonth and li.x_LineId = a.x_LineId
where a.x_BillingMonth = getvariable('export_month')
    and a.x_AllocationRuleId is not null
order by source, rule_id, line_id, piece_id
