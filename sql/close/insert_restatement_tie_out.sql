-- Rows of restatement_tie_out (created by create_restatement_tie_out.sql): per closed month, source and currency,
-- closed total + Σ restatement deltas = current total, exactly (DECIMAL), for BilledCost and EffectiveCost.
INSERT INTO restatement_tie_out BY NAME
WITH c AS (SELECT billing_month, source, billing_currency, sum(b) FILTER (WHERE side = 'closed') AS cb,
                  sum(b) FILTER (WHERE side = 'current') AS ab, sum(e) FILTER (WHERE side = 'closed') AS ce,
                  sum(e) FILTER (WHERE side = 'current') AS ae FROM _pieces GROUP BY ALL),
d AS (SELECT billing_month, source, billing_currency, sum(delta_billed_cost) AS db, sum(delta_effective_cost) AS de
      FROM restatements GROUP BY ALL)
SELECT billing_month, source, billing_currency, coalesce(cb, 0)::DECIMAL(38, 12) AS closed_billed_cost,
       coalesce(db, 0)::DECIMAL(38, 12) AS delta_billed_cost, coalesce(ab, 0)::DECIMAL(38, 12) AS current_billed_cost,
       coalesce(ce, 0)::DECIMAL(38, 12) AS closed_effective_cost, coalesce(de, 0)::DECIMAL(38, 12) AS delta_effective_cost,
       coalesce(ae, 0)::DECIMAL(38, 12) AS current_effective_cost,
       coalesce(cb, 0) + coalesce(db, 0) = coalesce(ab, 0) AND coalesce(ce, 0) + coalesce(de, 0) = coalesce(ae, 0)
           AS ties_out
FROM c LEFT JOIN d USING (billing_month, source, billing_currency)
ORDER BY 1, 2, 3;
