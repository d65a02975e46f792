-- Rows of restatements (created by create_restatements.sql): per closed month, source, currency, team, project,
-- workload and reason, the closed, current and delta BilledCost / EffectiveCost of the lines that changed, with
-- the reason (late credit, refund, new line, removed line, changed amount, re-attribution) and its detail.
-- Reads _pieces (pieces.sql), line_items and _tax_changed (apportion/close/deltas.py).
-- {{li_type}}: li.x_LineItemType, or null::varchar when the line items have no such column.
INSERT INTO restatements BY NAME
WITH line_side AS (
    SELECT source, billing_month, k,
           any_value(billing_currency) AS billing_currency,
           sum(b) FILTER (WHERE side = 'closed') AS cb, sum(b) FILTER (WHERE side = 'current') AS ab,
           sum(e) FILTER (WHERE side = 'closed') AS ce, sum(e) FILTER (WHERE side = 'current') AS ae,
           count(*) FILTER (WHERE side = 'closed') AS n_closed, count(*) FILTER (WHERE side = 'current') AS n_current,
           string_agg(DISTINCT delivery, ', ' ORDER BY delivery) FILTER (WHERE side = 'closed') AS d_closed,
           string_agg(DISTINCT delivery, ', ' ORDER BY delivery) FILTER (WHERE side = 'current') AS d_current,
           any_value(line_id) FILTER (WHERE side = 'current') AS current_line
    FROM _pieces GROUP BY ALL),
dims AS (
    SELECT source, billing_month, k, team, project, workload,
           coalesce(sum(b) FILTER (WHERE side = 'closed'), 0) AS cb, coalesce(sum(b) FILTER (WHERE side = 'current'), 0) AS ab,
           coalesce(sum(e) FILTER (WHERE side = 'closed'), 0) AS ce, coalesce(sum(e) FILTER (WHERE side = 'current'), 0) AS ae
    FROM _pieces GROUP BY ALL),
kind AS (
    SELECT l.*, li.ChargeCategory AS charge_category, {li_type} AS line_item_type, t.changed AS tax_changed,
           CASE WHEN l.n_closed = 0 AND (li.ChargeCategory = 'Credit' AND lower(coalesce({li_type}, '')) LIKE '%refund%'
                                         OR lower(coalesce({li_type}, '')) = 'refund') THEN 'refund'
                WHEN l.n_closed = 0 AND li.ChargeCategory = 'Credit' THEN 'late credit'
                WHEN l.n_closed = 0 THEN 'new line'
                WHEN l.n_current = 0 THEN 'removed line'
                WHEN l.cb <> l.ab OR l.ce <> l.ae THEN 'changed amount'
                ELSE 're-attribution' END AS reason
    FROM line_side l
    LEFT JOIN line_items li ON li.x_SourceName = l.source AND li.x_BillingMonth = l.billing_month
                            AND li.x_LineId = l.current_line
    LEFT JOIN _tax_changed t ON t.billing_month = l.billing_month),
explained AS (
    SELECT *, CASE reason
        WHEN 'changed amount' THEN CASE WHEN d_closed IS DISTINCT FROM d_current
             THEN 're-delivered file: delivery ' || coalesce(d_closed, '-') || ' -> ' || coalesce(d_current, '-')
             ELSE 'same delivery, rebuilt' END
        WHEN 're-attribution' THEN CASE WHEN tax_changed THEN 'taxonomy changed since close'
             ELSE 'rule or account mapping changed' END
        WHEN 'removed line' THEN 'not in delivery ' || coalesce(d_current, '-')
        ELSE coalesce(charge_category, '') || coalesce(' / ' || line_item_type, '') || ' in delivery ' ||
             coalesce(d_current, '-') END AS detail
    FROM kind)
SELECT d.billing_month, d.source, x.billing_currency, d.team, d.project, d.workload, x.reason, x.detail,
       count(DISTINCT d.k) AS lines,
       sum(d.cb)::DECIMAL(38, 12) AS closed_billed_cost, sum(d.ab)::DECIMAL(38, 12) AS current_billed_cost,
       sum(d.ab - d.cb)::DECIMAL(38, 12) AS delta_billed_cost,
       sum(d.ce)::DECIMAL(38, 12) AS closed_effective_cost, sum(d.ae)::DECIMAL(38, 12) AS current_effective_cost,
       sum(d.ae - d.ce)::DECIMAL(38, 12) AS delta_effective_cost
FROM dims d JOIN explained x USING (source, billing_month, k)
WHERE d.cb <> d.ab OR d.ce <> d.ae
GROUP BY ALL
ORDER BY billing_month, source, billing_currency, reason, abs(sum(d.ae - d.ce)) DESC, team, project, workload;
