-- Temp table _pieces: the closed pieces and the current ones of the closed months side by side, each line keyed
-- (provider line id + charge start + currency, numbered in file order; else '#' + x_LineId). Read by
-- insert_restatements.sql and insert_restatement_tie_out.sql (apportion/close/deltas.py).
-- {{closed}}, {{current}}: the pieces' selects (deltas._pieces: the columns a lake version may lack become
-- 'untagged' / null).
CREATE TEMP TABLE _pieces AS
WITH p AS (SELECT 'closed' AS side, * FROM ({closed}) UNION ALL SELECT 'current', * FROM ({current})),
lines AS (SELECT side, source, billing_month, line_id, any_value(pid) AS pid, any_value(cps) AS cps,
                 any_value(billing_currency) AS billing_currency FROM p GROUP BY ALL),
keyed AS (SELECT *, CASE WHEN pid IS NULL OR pid = '' THEN '#' || line_id::VARCHAR
                 ELSE pid || '|' || coalesce(cps::VARCHAR, '') || '|' || billing_currency || '|' ||
                      row_number() OVER (PARTITION BY side, source, billing_month, pid, cps, billing_currency
                                         ORDER BY line_id)::VARCHAR END AS k FROM lines)
SELECT p.*, keyed.k FROM p JOIN keyed USING (side, source, billing_month, line_id);
