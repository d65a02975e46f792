-- Finance pack: every allocation piece of the month with its line item's identity and the reason
-- (the line-level file: Parquet by default, gzip CSV with `--lines csv` or the `exports.lines: csv` option).
select
    a.x_BillingMonth as billing_month,
    a.x_SourceName as source,
    a.x_LineId as line_id,
    a.x_PieceId as piece_id,
    a.x_ProviderLineItemId as provider_line_item_id,
    {invoice_id} as invoice_id,
    strftime(a.ChargePeriodStart, '%Y-%m-%dT%H:%M:%SZ') as charge_period_start,
    a.ChargeCategory as charge_category,
    a.ProviderName as provider,
    a.SubAccountId as account_id,
    a.SubAccountName as account_name,
    a.ServiceName as service,
    a.RegionId as region,
    a.ResourceId as resource_id,
    a.x_UsageType as usage_type,
    a.BillingCurrency as billing_currency,
    a.BilledCost as billed_cost,
    a.EffectiveCost as effective_cost,
    a.x_ReportingCurrency as reporting_currency,
    a.x_ReportingBilledCost as reporting_billed_cost,
    a.x_ReportingEffectiveCost as reporting_effective_cost,
    a.x_Project as project,
    a.x_Team as team,
    a.x_Workload as workload,
    a.x_AllocationReason as allocation_reason
from allocations as a
where a.x_BillingMonth = getvariable('export_month')
-- no ORDER BY: a month of pieces would be sorted in memory; line_id and piece_id order it when needed
