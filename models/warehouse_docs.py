"""The one place for the warehouse's table and column descriptions.

They feed the `COMMENT ON` statements of apportion.duckdb (apportion/steps/warehouse.py), docs/warehouse.md
(tests/test_warehouse_docs.py checks that every table here is described there and the other way round) and the
tests. Line-item columns are described by the line-item contract (models/focus.py); the guardrails, savings and
close tables by their own modules (apportion/guardrails/views.py, apportion/savings/table.py,
apportion/close/deltas.py), which build them.
"""

from __future__ import annotations

TABLE_DOCS: dict[str, str] = {'line_items': 'FOCUS 1.2 cost and usage line items from every source, one row per provider line; x_ columns carry '
               'lineage (source, delivery, file, row) and provider extras.',
 'allocations': 'Every line item split into one or more pieces, each attributed to project, team and workload with '
                'the tag or rule that decided it. Pieces sum exactly to their line item.',
 'untagged_spend': 'Spend that no tag, rule, account mapping or default could attribute, per dimension, with the '
                   'reason and the account, service and resource behind it.',
 'allocation_coverage': 'Spend-weighted share attributed per billing month, source and dimension.',
 'quarantined_rows': 'Raw rows that were not loaded, with source file, row number and reason.',
 'deliveries': 'Every provider delivery landed: object keys, sizes, etags, delivery id and fetch time.',
 'lake_files': 'The Parquet files (current partition versions in the lake) that the lake-backed views read: the '
               'warehouse does not copy the lake.',
 'monthly_spend': 'Allocated spend per billing month, source, provider, currency and taxonomy dimension (team, '
                  'project, workload, ...), summed once per source and month. Σ BilledCost per source and month '
                  'equals the invoice.',
 'portfolio': 'Spend per month, value class and team, with the change from the previous month (the portfolio view of '
              'production, experimental and background work).',
 'llm_reconciliation': 'LLM invoice reconciliation per billing month, provider and usage source: invoice total, '
                       'priced usage, residual (invoice - priced usage).',
 'llm_unit_economics': 'LLM unit economics per billing month, provider, usage source, team, project, workload and '
                       'model: tokens, requests, priced and invoiced cost, $ per 1M tokens, $ per request, tokens '
                       'per request, cache-hit share.',
 'gpu_usage': 'Every GPU allocation piece (jobs, pods, idle capacity) with its team, project, workload and '
              "utilisation (the row's own, else DCGM/nvidia-smi of the same cluster, job/pod and day).",
 'gpu_job_waste': 'Per month and job/pod: GPU-hours, measured utilisation, allocated-but-unused GPU-hours and their '
                  'priced idle cost, ranked.',
 'gpu_top_idle_jobs': 'The 20 jobs/pods per month and currency with the highest idle cost (allocated but unused '
                      'GPU-hours x price).',
 'gpu_unit_economics': 'GPU unit economics per month, team, workload and GPU model: allocated, idle and measured '
                       'GPU-hours, utilisation, unused GPU-hours, priced and idle cost, $ per GPU-hour.',
 'ledger_totals': 'Per source and billing month: line items, allocation pieces and quarantined rows, their '
                  'BilledCost / EffectiveCost totals, deliveries and lake versions (the blocking checks read it).'}

COLUMN_DOCS: dict[str, dict[str, str]] = {'allocations': {'x_PieceId': 'Piece number within the line item (1 when the line is not split).',
                 'x_AllocatedRatio': 'Share of the line item carried by this piece; the pieces of a line sum to 1.',
                 'x_AllocationReason': "How each dimension was decided, e.g. 'project=tag:project; "
                                       "team=account:333...'.",
                 'x_AllocationRuleId': 'Split rule that produced the piece (null when not split).',
                 'x_AllocationMethodDetails': 'FOCUS 1.3 AllocatedMethodDetails-shaped JSON for split pieces.',
                 'InvoiceId': "Invoice of the piece's line item.",
                 'x_ProviderLineItemId': "Provider's own id of the piece's line item.",
                 'x_UsageType': "Provider usage type of the piece's line item.",
                 'x_ReportingCurrency': 'Configured reporting currency (null when none is configured).',
                 'x_ReportingBilledCost': "This piece's BilledCost at its line's FX rate (reporting only; not exact "
                                          'by design).',
                 'x_ReportingEffectiveCost': "This piece's EffectiveCost at its line's FX rate."},
 'untagged_spend': {'dimension': 'Dimension left unattributed (project, team, workload, ...).',
                    'reason': 'untagged:no-tags | untagged:key-missing | untagged:unknown-value (with the rejected '
                              'tag).',
                    'reason_code': 'The reason without details.',
                    'created_by': 'aws:createdBy tag when present: who launched the resource.',
                    'line_items': 'Number of line items.',
                    'x_BillingMonth': 'Billing month YYYY-MM.',
                    'x_SourceName': 'Source name from the config.',
                    'SubAccountId': 'Account that used the resource: who to ask.',
                    'SubAccountName': 'Display name of that account.',
                    'ServiceName': 'Provider service name.',
                    'ResourceId': 'Resource behind the spend (empty for charges without a resource).',
                    'BillingCurrency': 'ISO 4217 currency of the amounts.',
                    'BilledCost': 'Σ allocated BilledCost of the pieces left unattributed.',
                    'EffectiveCost': 'Σ allocated EffectiveCost of the pieces left unattributed.'},
 'allocation_coverage': {'attributed_cost': 'EffectiveCost attributed by a tag, rule, account mapping or default.',
                         'shared_cost': 'EffectiveCost with no resource to own it (tax, credits, fees); split by '
                                        'later rules.',
                         'untagged_cost': 'EffectiveCost that could have been attributed but was not.',
                         'spread_cost': 'EffectiveCost that was untagged and spread over known values (marked '
                                        'spread:, not attributed).',
                         'coverage': 'attributed / (attributed + untagged + spread), spend-weighted on absolute '
                                     'EffectiveCost.',
                         'x_BillingMonth': 'Billing month YYYY-MM.',
                         'x_SourceName': 'Source name from the config.',
                         'dimension': 'Dimension measured (project, team, workload, ...).',
                         'BillingCurrency': 'ISO 4217 currency of the amounts.',
                         'total_cost': 'Σ EffectiveCost of the source and month (attributed + shared + untagged).',
                         'attributed_abs_cost': 'Σ |EffectiveCost| attributed (the numerator of coverage).',
                         'untagged_abs_cost': 'Σ |EffectiveCost| untagged.',
                         'spread_abs_cost': 'Σ |EffectiveCost| spread over known values.'},
 'gpu_top_idle_jobs': {'first_date': 'First day the job or pod held GPUs in the month.',
                       'last_date': 'Last day the job or pod held GPUs in the month.',
                       'gpu_hours': 'GPU-hours allocated to the job or pod.',
                       'utilization': 'Measured average GPU utilisation, 0..1 (null when not measured).',
                       'unused_gpu_hours': 'Allocated but unused GPU-hours: gpu_hours x (1 - utilization).',
                       'priced_cost': 'Priced cost of the GPU-hours (rate card or OpenCost estimate, not billed '
                                      'money).',
                       'idle_cost': 'Priced cost of the unused GPU-hours.',
                       'idle_cost_rank': 'Rank by idle_cost within the month (1 = most expensive idle job).'},
 'gpu_usage': {'x_PieceId': 'Allocation piece of the GPU usage line.',
               'usage_date': 'UTC day of the usage.',
               'gpu_hours': 'GPU-hours of this piece (x_GpuHours x x_AllocatedRatio).',
               'priced_cost': 'x_PricedCost of this piece: rate card or OpenCost estimate, not billed money.',
               'utilization': 'Average GPU utilisation 0..1 (0 for idle capacity; null when not measured).',
               'utilization_from': "source (the row's own), gpu_metrics (joined DCGM/nvidia-smi rows) or idle "
                                   'capacity.'},
 'llm_reconciliation': {'billing_currency': 'Currency of the invoice and of the priced usage.',
                        'provider': 'LLM provider (x_LlmProvider; aws for Bedrock and Marketplace models in the '
                                    'CUR).',
                        'invoice_sources': 'Sources whose invoice rows make up invoice_cost.',
                        'invoice_lines': 'Invoice line items of the provider-month.',
                        'invoice_cost': 'Invoiced LLM spend of the provider-month (Σ BilledCost), repeated on every '
                                        'usage-source row.',
                        'invoice_effective_cost': 'Σ EffectiveCost of the invoice lines.',
                        'usage_source': 'Usage source reconciled on this row (null: the provider-month has no usage '
                                        'rows).',
                        'usage_lines': 'Usage line items of the source.',
                        'usage_tokens': 'Tokens the usage source counted for the provider-month.',
                        'usage_requests': 'Requests the usage source counted (0 when the source has no request '
                                          'counts).',
                        'priced_usage_cost': 'Σ x_PricedCost: the usage at catalogue or negotiated prices.',
                        'unpriced_usage_rows': 'Usage rows quarantined because their model or token type has no '
                                               'price.',
                        'residual_cost': 'invoice_cost - priced_usage_cost: what prices do not explain; split rules '
                                         'still spread the whole invoice.',
                        'residual_share': 'residual_cost / invoice_cost.',
                        'tolerance': 'Share of the invoice a residual may be and still count as within tolerance '
                                     '(config reconciliation_tolerance, default 0.01).',
                        'status': 'exact (residual 0) | within tolerance (|residual| <= tolerance x |invoice|) | '
                                  'under (priced usage explains less than the invoice: the rest is unexplained) | '
                                  'over (priced usage exceeds the invoice) | usage missing (an invoice, no usage '
                                  'source) | invoice missing (usage, no invoice).'},
 'llm_unit_economics': {'billing_currency': 'Currency of the dollars.',
                        'team': 'Team the usage and its share of the invoice are attributed to.',
                        'project': 'Project the usage and its share of the invoice are attributed to.',
                        'workload': 'Workload the usage and its share of the invoice are attributed to.',
                        'provider': 'LLM provider (x_LlmProvider).',
                        'usage_source': 'The one usage source the row is measured from (sources are never summed); '
                                        'null for invoice money no usage row explains (its tokens, if any, are those '
                                        'the bill states).',
                        'model': 'Normalised model id (x_ModelId).',
                        'requests': 'Model requests (0 when the source has no request counts, e.g. the Anthropic '
                                    'usage report).',
                        'tokens': 'All tokens (input, cache read/write, output; web-search requests excluded).',
                        'input_tokens': 'Uncached input tokens (text, image and audio).',
                        'cache_read_tokens': 'Input tokens read from the prompt cache.',
                        'cache_write_tokens': 'Input tokens written to the prompt cache (5m and 1h).',
                        'output_tokens': 'Output tokens (text and audio).',
                        'priced_cost': 'Σ x_PricedCost of the usage (catalogue or negotiated prices).',
                        'invoiced_cost': "Allocated EffectiveCost of the provider's invoice lines that reached this "
                                         'team, project, workload and model (after split rules); repeated for each '
                                         'usage source.',
                        'usd_per_1m_tokens': 'invoiced_cost per 1,000,000 tokens.',
                        'priced_usd_per_1m_tokens': 'priced_cost per 1,000,000 tokens.',
                        'usd_per_request': 'invoiced_cost per request.',
                        'priced_usd_per_request': 'priced_cost per request.',
                        'tokens_per_request': 'tokens / requests.',
                        'cache_hit_share': 'cache_read_tokens / (input_tokens + cache_read_tokens + '
                                           'cache_write_tokens).'},
 'quarantined_rows': {'x_SourceName': 'Source the row came from.',
                      'x_BillingMonth': 'Billing month the delivery was for.',
                      'x_DeliveryId': 'Provider delivery (assembly / execution) the row was in.',
                      'x_SourceFile': 'Raw object the row came from, relative to the source URI.',
                      'x_SourceRow': '1-based data row within that raw object.',
                      'reason': "Why the row was rejected, e.g. 'non-numeric line_item_unblended_cost 12,5'.",
                      'billed_cost': "The row's billed cost as far as it could be read (text; null when "
                                     'unreadable).'},
 'deliveries': {'source': 'Source name from the config.',
                'kind': 'Connector kind (aws_cur, ...).',
                'billing_month': 'Billing month YYYY-MM.',
                'delivery_id': 'Provider delivery id (legacy CUR assemblyId, CUR 2.0 execution id, API fetch id).',
                'layout': 'How the provider laid the delivery out (e.g. cur2-overwrite, cur2-versioned, legacy).',
                'manifest_key': 'Manifest object the delivery was read from (null when there is none).',
                'fetched_at': 'When apportion landed the delivery (UTC).',
                'objects': 'Number of raw objects landed.',
                'bytes': 'Total size of the raw objects.',
                'object_keys': 'JSON list of {key, size, etag} of the raw objects, as the provider listed them.',
                'is_current': 'True for the delivery the published line items of the month were built from.'},
 'portfolio': {'x_BillingMonth': 'Billing month YYYY-MM.',
               'value_class': "production | experimental | background (or 'untagged' / 'shared').",
               'team': "Attributed team (or 'untagged' / 'shared').",
               'BillingCurrency': 'ISO 4217 currency of the amounts.',
               'effective_cost': 'Σ allocated EffectiveCost.',
               'billed_cost': 'Σ allocated BilledCost.',
               'change_from_previous_month': "effective_cost minus the previous month's (null for the first month)."},
 'monthly_spend': {'x_BillingMonth': 'Billing month YYYY-MM.',
                   'x_SourceName': 'Source name from the config.',
                   'ProviderName': 'Provider of the resource or service.',
                   'BillingCurrency': 'ISO 4217 currency of the amounts.',
                   'x_Team': "Attributed team (or 'untagged' / 'shared').",
                   'x_Project': "Attributed project (or 'untagged' / 'shared').",
                   'x_Workload': "Attributed workload (or 'untagged' / 'shared').",
                   'pieces': 'Number of allocation pieces.',
                   'BilledCost': 'Σ allocated BilledCost (what the provider invoiced).',
                   'EffectiveCost': 'Σ allocated EffectiveCost (amortised, after commitment discounts).',
                   'ListCost': 'Σ allocated ListCost (public on-demand prices).'},
 'gpu_job_waste': {'first_date': 'First UTC day of the job in the month.',
                   'last_date': 'Last UTC day of the job in the month.',
                   'gpu_hours': 'Allocated GPU-hours of the job in the month.',
                   'utilization': 'GPU-hour-weighted utilisation over the measured GPU-hours (null when none was '
                                  'measured).',
                   'unused_gpu_hours': 'Allocated but unused GPU-hours: measured GPU-hours x (1 - utilisation).',
                   'priced_cost': "Priced cost of the job's GPU-hours (rate card / OpenCost).",
                   'idle_cost': 'Priced cost of the unused GPU-hours.',
                   'idle_cost_rank': 'Rank by idle cost within month and currency (1 = most wasteful).'},
 'gpu_unit_economics': {'allocated_gpu_hours': 'GPU-hours held by jobs and pods.',
                        'idle_gpu_hours': 'Idle capacity GPU-hours attributed to this team (cluster owner) or '
                                          'shared.',
                        'gpu_hours': 'Allocated + idle GPU-hours.',
                        'measured_gpu_hours': 'Allocated GPU-hours with a measured utilisation.',
                        'utilization': 'GPU-hour-weighted utilisation of the measured GPU-hours (0..1).',
                        'unused_gpu_hours': 'Allocated but unused GPU-hours (waste).',
                        'priced_cost': 'Priced cost of all GPU-hours (rate card / OpenCost estimate), not billed '
                                       'money.',
                        'idle_cost': 'Priced cost of idle capacity plus of allocated-but-unused GPU-hours.',
                        'cost_per_gpu_hour': 'priced_cost / gpu_hours.',
                        'jobs': 'Distinct jobs/pods.'},
 'lake_files': {'lake_table': 'Lake table the file belongs to (line_items, allocations, quarantine, summary_*).',
                'path': 'Absolute path of one Parquet file of a current version.'},
 'ledger_totals': {'x_BillingMonth': 'Billing month YYYY-MM.',
                   'x_SourceName': 'Source name from the config.',
                   'line_items': 'Line items of the source and month.',
                   'line_items_billed_cost': 'Σ BilledCost of the line items (the invoice, after quarantine).',
                   'line_items_effective_cost': 'Σ EffectiveCost of the line items.',
                   'pieces': 'Allocation pieces.',
                   'allocated_billed_cost': 'Σ BilledCost of the pieces: equals line_items_billed_cost (a blocking '
                                            'check).',
                   'allocated_effective_cost': 'Σ EffectiveCost of the pieces: equals line_items_effective_cost.',
                   'line_item_deliveries': 'Deliveries the line items came from (one, or the month is not '
                                           'published).',
                   'allocation_deliveries': 'Deliveries the pieces came from (the same one as the line items).',
                   'quarantined_rows': 'Raw rows of the source and month that were quarantined.',
                   'last_charge_end': "Latest ChargePeriodEnd of an invoice line (how far the month's bill reaches).",
                   'line_items_version': 'Lake version (folder) of the line items the totals were computed from.',
                   'allocations_version': 'Lake version of the allocations.',
                   'quarantine_version': 'Lake version of the quarantine (null when the month has none).'}}
