-- View anomalies: the spend anomalies of the last build (anomaly_episodes) with their dismissals, read from the
-- dismissals file (<warehouse>/guardrails/dismissals.jsonl, `apportion anomalies dismiss`): kept across rebuilds,
-- shown at once. Column descriptions: models/warehouse_docs.py.
-- {{path}}: the dismissals file's path as a SQL literal, filled in by apportion/guardrails/anomalies.py.
create or replace view anomalies as
select
    e.*,
    d.anomaly_id is not null as dismissed,
    d.reason as dismissed_reason,
    d.dismissed_at,
    d.dismissed_by
from anomaly_episodes as e
left join read_json(
    {path},
    format = 'newline_delimited',
    columns = {{
        'anomaly_id': 'VARCHAR',
        'reason': 'VARCHAR',
        'dismissed_at': 'TIMESTAMPTZ',
        'dismissed_by': 'VARCHAR'
    }}
) as d using (anomaly_id)
