"""The one place for the warehouse's table and column descriptions.

They feed the `COMMENT ON` statements of apportion.duckdb (apportion/steps/warehouse.py), docs/warehouse.md
(tests/test_warehouse_docs.py checks that every table here is described there and the other way round) and the
tests. Line-item columns are described by the line-item contract (models/focus.py). The guardrails, savings and
close tables (their DDL in sql/guardrails/, sql/savings/, sql/close/) are described at the end and documented by
apportion/guardrails/tables.document when they are built.
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

# The guardrails, savings and close tables (apportion/guardrails/views.py, apportion/guardrails/token_policies.py,
# apportion/savings/, apportion/close/deltas.py build them from sql/guardrails/, sql/savings/, sql/close/).
TABLE_DOCS.update({'budget_status': 'Each budget per period: actual, period-end forecast with an 80 % band, run-rate, thresholds '
                  'crossed.',
 'budget_burndown': 'Cumulative spend per budget, period and day, then the forecast path with its band (the '
                    'burn-down chart).',
 'token_policy_checked': 'The per-request logs the token policies were checked on, per source and month (or why '
                         'not).',
 'token_policy_violations': 'Requests outside their token policy (max input / output tokens per request, allowed '
                            'models, monthly token quota per team or API key), from the per-request logs, with the '
                            'cost of the excess and the cost on an allowed model (docs/guardrails.md).',
 'alerts': 'Every alert per channel and its delivery (read from <warehouse>/guardrails/alerts.jsonl: always '
           'current, kept across rebuilds).',
 'recommendations': 'Savings advice: one row per finding (smaller model, prompt caching, shorter prompts, idle and '
                    'oversized GPUs, spot, commitments) with its scope, the evidence it is computed from, the '
                    'formula, the estimated monthly saving and a confidence. See docs/savings.md.',
 'savings_skipped': 'Savings kinds not estimated for a scope, with the reason (missing price, unknown model, no '
                    'utilisation): never estimated from a zero.',
 'savings_inputs': 'Per billing month, a hash of what its recommendations were computed from (partition versions, '
                   'config, code): the next build recomputes only the months whose hash changed. See '
                   'docs/savings.md.',
 'closed_months': 'Months closed with `apportion close` (docs/close.md).',
 'restatements': 'Deltas of closed months since their close, per source, team, project, workload and reason (late '
                 'credit, refund, new line, removed line, changed amount, re-attribution). closed + Σ delta = '
                 'current, per source (restatement_tie_out).',
 'restatement_tie_out': 'Per closed month, source and currency: closed total + Σ restatement deltas = current '
                        'total (ties_out).'})

COLUMN_DOCS.update({'budget_status': {'budget': 'Budget name (the budgets file).',
                   'period': 'Period: YYYY-MM or YYYY-Qn.',
                   'period_start': 'First day of the period.',
                   'period_end': 'First day after the period.',
                   'as_of': 'Latest charge day with money in the ledger (the day the figures are as of).',
                   'is_open': 'The period has days after as_of (its forecast is a forecast).',
                   'scope': "The budget's scope: taxonomy dimensions and/or provider, service, model, source.",
                   'currency': 'Budget currency (the reporting currency when one is configured).',
                   'amount': 'Budget amount for the period.',
                   'actual': 'EffectiveCost in scope from the period start to as_of (usage, fees, tax, credits).',
                   'actual_ratio': 'actual / amount.',
                   'forecast': 'Period-end forecast: actual + weekday-seasonal forecast of the usage days left.',
                   'forecast_low': "Lower end of the forecast's 80 % prediction interval.",
                   'forecast_high': "Upper end of the forecast's 80 % prediction interval.",
                   'forecast_ratio': 'forecast / amount.',
                   'run_rate': 'Straight run-rate (actual / days elapsed x days in period), for comparison.',
                   'forecast_method': 'weekday-seasonal | level | closed | no-history.',
                   'history_days': 'Days of history the forecast used.',
                   'status': 'ok, or the highest severity of the thresholds crossed (info | warn | critical).',
                   'crossed': 'Thresholds crossed: [{of: actual|forecast, at, severity, limit, value}].',
                   'owners': 'Budget owners.',
                   'channels': 'Alert channel names or redacted URLs.'},
 'budget_burndown': {'budget': 'Budget name.',
                     'period': 'Period.',
                     'day': 'Day.',
                     'kind': 'actual (cumulative spend to date) or forecast (cumulative expected for the days '
                             'left).',
                     'cumulative': 'Cumulative spend in the period up to the day (actual or expected).',
                     'low': 'Forecast days: lower end of the 80 % band of the cumulative spend.',
                     'high': 'Forecast days: upper end of the 80 % band.',
                     'amount': 'Budget amount (the line to stay under).'},
 'token_policy_checked': {'source': 'A per-request source (litellm, otel_genai, bedrock_logs).',
                          'month': 'Billing month.',
                          'delivery_id': 'The delivery its current line items were built from, read again request '
                                         'by request.',
                          'requests': 'Requests read (quarantined ones excluded, as in the line items).',
                          'note': 'checked, or why the month could not be checked (the delivery is no longer in '
                                  'the raw zone).'},
 'token_policy_violations': {'policy': 'Policy name (token_policies in the budgets file).',
                             'rule': 'max_input_tokens | max_output_tokens | allowed_models | monthly_tokens.',
                             'month': 'Billing month (UTC) of the requests.',
                             'source': 'The per-request log the requests come from (litellm, otel_genai, '
                                       'bedrock_logs source).',
                             'team': "Team (from the allocation of the request's line item).",
                             'workload': 'Workload.',
                             'value_class': 'Value class.',
                             'api_key': "API key alias (the gateway rows' ResourceId).",
                             'model': 'Model used (normalised id).',
                             'limit_value': 'The limit: tokens per request, the monthly quota (per team or '
                                            'api_key), or the allowed model globs.',
                             'requests': 'Requests in violation.',
                             'first_day': 'First day with a violating request.',
                             'last_day': 'Last day with a violating request.',
                             'tokens_over': 'Tokens above the limit (allowed_models: every token of the requests).',
                             'cost': 'Catalogue cost of the violating requests (USD).',
                             'excess_cost': 'Cost of the excess: the share of the cost above the limit '
                                            '(allowed_models: cost - allowed_model_cost).',
                             'allowed_model': 'The allowed model the requests are priced at for comparison '
                                              '(price_as).',
                             'allowed_model_cost': "What the same requests' tokens cost on the allowed model "
                                                   '(USD).',
                             'unpriced_requests': 'Violating requests the catalogue cannot price (their cost '
                                                  'counts as 0).',
                             'currency': "Currency of the amounts (the price catalogue's: USD)."},
 'alerts': {'alert_key': 'budget:<name>:<actual|forecast>:<ratio>:<period>, anomaly:<id> or '
                         'token_policy:<policy>:<rule>:<month>:<team or api key>: what is alerted once.',
            'kind': 'budget | anomaly | token_policy.',
            'subject_ref': 'Budget name, anomaly id or token policy name.',
            'period': 'Budget period or month.',
            'severity': 'info | warn | critical.',
            'title': "The message's title.",
            'channel': 'Channel name (or redacted URL).',
            'status': 'sent | failed (retried on the next run).',
            'attempts': 'Send attempts.',
            'first_attempt_at': 'First attempt (UTC).',
            'last_attempt_at': 'Last attempt (UTC).',
            'sent_at': 'When it was delivered.',
            'last_error': 'Why the last attempt failed (no secrets).'},
 'recommendations': {'finding_id': 'Stable id of the finding: kind and a hash of its scope.',
                     'kind': 'smaller_model | prompt_caching | shorter_prompts | idle_gpus | oversized_gpus | spot '
                             '| commitments.',
                     'x_BillingMonth': 'The billing month the finding looks at (YYYY-MM).',
                     'period_start': 'First day of the data the finding is computed from.',
                     'period_end': 'Last day (inclusive) of the data the finding is computed from.',
                     'days_observed': 'Days with data in the period.',
                     'team': 'Team the spend is allocated to (allocations.x_Team); null for account-wide findings.',
                     'project': 'Project the spend is allocated to.',
                     'workload': 'Workload the spend is allocated to.',
                     'scope_type': 'What scope_id names: model, api_key, cluster, resource, account.',
                     'scope_id': 'The model, API key, cluster/GPU model, instance or billing account the finding '
                                 'is about.',
                     'provider': 'Provider of the spend (openai, anthropic, aws, slurm cluster, ...).',
                     'current': 'What runs today (model, instance type and pricing, GPU model).',
                     'suggested': 'What the advice moves it to (cheaper model, cache reads, spot, a commitment).',
                     'evidence': 'The numbers the estimate is computed from, as a JSON object of exact decimals.',
                     'formula': 'How estimated_monthly_saving follows from the evidence, in words and numbers.',
                     'estimated_monthly_saving': 'Estimated saving for the month in `currency` (DECIMAL, rounded '
                                                 'to the cent).',
                     'currency': "Currency of the saving (the line items' BillingCurrency).",
                     'reporting_currency': 'Configured reporting currency (null when none).',
                     'fx_rate': "Rate currency -> reporting currency used (the month's rate of the line items).",
                     'estimated_monthly_saving_reporting': 'estimated_monthly_saving x fx_rate, in the reporting '
                                                           'currency.',
                     'confidence': 'high | medium | low.',
                     'confidence_reason': 'Why that confidence: the volume behind it and the assumptions it rests '
                                          'on.'},
 'savings_skipped': {'kind': 'The kind that was skipped.',
                     'x_BillingMonth': 'Billing month.',
                     'scope': 'The scope (model, cluster, instance, account) it was skipped for.',
                     'reason': 'Why it was skipped.'},
 'savings_inputs': {'x_BillingMonth': 'Billing month (YYYY-MM).', 'input_key': "SHA-1 of the month's inputs."},
 'closed_months': {'billing_month': 'Closed billing month (YYYY-MM).',
                   'closed_at': 'When the month was closed.',
                   'closed_by': "Who closed it (user name; auto closes run as the nightly job's user).",
                   'taxonomy_sha256': 'SHA-256 of the taxonomy file the closed allocation was built with.',
                   'sources': 'Sources in the closed version.'},
 'restatements': {'billing_month': 'Closed billing month.',
                  'source': 'Source (x_SourceName).',
                  'billing_currency': 'Billing currency.',
                  'team': 'Team (x_Team) of the pieces.',
                  'project': 'Project (x_Project) of the pieces.',
                  'workload': 'Workload (x_Workload) of the pieces.',
                  'reason': 'late credit, refund, new line, removed line, changed amount or re-attribution.',
                  'detail': 'What tells the reason: the deliveries, the charge category, a taxonomy change.',
                  'lines': 'Line items behind the row.',
                  'closed_billed_cost': 'At close: BilledCost',
                  'closed_effective_cost': 'At close: EffectiveCost',
                  'current_billed_cost': 'Now: BilledCost',
                  'current_effective_cost': 'Now: EffectiveCost',
                  'delta_billed_cost': 'Now minus at close: BilledCost',
                  'delta_effective_cost': 'Now minus at close: EffectiveCost'},
 'restatement_tie_out': {'billing_month': 'Closed billing month.',
                         'source': 'Source (x_SourceName).',
                         'billing_currency': 'Billing currency.',
                         'closed_billed_cost': 'At close: BilledCost',
                         'closed_effective_cost': 'At close: EffectiveCost',
                         'current_billed_cost': 'Now: BilledCost',
                         'current_effective_cost': 'Now: EffectiveCost',
                         'delta_billed_cost': 'Now minus at close: BilledCost',
                         'delta_effective_cost': 'Now minus at close: EffectiveCost',
                         'ties_out': 'closed + delta = current for both BilledCost and EffectiveCost, exactly.'}})

# the anomaly tables and view (apportion/guardrails/anomalies.py fills them; DDL in sql/guardrails/)
TABLE_DOCS.update({'anomaly_episodes': 'Spend anomalies as found by the last build (see the anomalies view for dismissals).', 'anomaly_history': 'Per month: days the anomaly baseline could not judge (too little history), said instead of guessed.', 'anomalies': 'Spend anomalies (one row per multi-day episode) with dismissals (<warehouse>/guardrails/dismissals.jsonl: kept across rebuilds, shown at once).'})
COLUMN_DOCS.update({'anomaly_episodes': {'anomaly_id': 'Stable id: series and first day (dismissals and alerts are keyed by it).', 'series_kind': 'team x service | team x model | source.', 'series': "The series, e.g. 'research / Amazon SageMaker'.", 'series_key': "The series' values as a JSON list.", 'first_day': 'First day above the band.', 'last_day': 'Last day above the band.', 'days': 'Days in the episode.', 'currency': 'Currency of the amounts.', 'expected': 'Baseline spend over the episode (weekday factor x the median of the last 7 deseasonalised days).', 'actual': 'Usage EffectiveCost over the episode (fees excluded).', 'impact': 'actual - expected.', 'impact_ratio': 'impact / expected.', 'provisional': "Ends within the feed's last provisional days (data still arriving): not alarmed.", 'top_contributors': 'Largest contributors to the deviation: account, resource, model, api_key, user.'}, 'anomaly_history': {'month': 'Billing month.', 'days_with_data': "Days of the month up to the ledger's latest day.", 'days_not_judged': 'Days with less history than the baseline needs (no anomaly can be found there).', 'first_judged_day': 'First day judged.', 'note': 'Says why days were not judged instead of guessing.'}, 'anomalies': {'anomaly_id': 'Stable id: series and first day (dismissals and alerts are keyed by it).', 'series_kind': 'team x service | team x model | source.', 'series': "The series, e.g. 'research / Amazon SageMaker'.", 'series_key': "The series' values as a JSON list.", 'first_day': 'First day above the band.', 'last_day': 'Last day above the band.', 'days': 'Days in the episode.', 'currency': 'Currency of the amounts.', 'expected': 'Baseline spend over the episode (weekday factor x the median of the last 7 deseasonalised days).', 'actual': 'Usage EffectiveCost over the episode (fees excluded).', 'impact': 'actual - expected.', 'impact_ratio': 'impact / expected.', 'provisional': "Ends within the feed's last provisional days (data still arriving): not alarmed.", 'top_contributors': 'Largest contributors to the deviation: account, resource, model, api_key, user.', 'dismissed': 'Dismissed with `apportion anomalies dismiss ID --reason`.', 'dismissed_reason': 'Why it was dismissed.', 'dismissed_at': 'When (UTC).', 'dismissed_by': 'Who ($USER of the command).'}})
