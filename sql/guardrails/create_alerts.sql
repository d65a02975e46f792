-- View alerts: every alert per channel and its delivery, read from the alert state file
-- (<warehouse>/guardrails/alerts.jsonl, written by apportion/guardrails/alerts.py): always current, kept across
-- rebuilds. Column descriptions: models/warehouse_docs.py.
-- {{path}}: the state file's path as a SQL literal, filled in by apportion/guardrails/views.py.
create or replace view alerts as
select *
from read_json(
    {path},
    format = 'newline_delimited',
    columns = {{
        'alert_key': 'VARCHAR',
        'kind': 'VARCHAR',
        'subject_ref': 'VARCHAR',
        'period': 'VARCHAR',
        'severity': 'VARCHAR',
        'title': 'VARCHAR',
        'channel': 'VARCHAR',
        'status': 'VARCHAR',
        'attempts': 'INTEGER',
        'first_attempt_at': 'TIMESTAMPTZ',
        'last_attempt_at': 'TIMESTAMPTZ',
        'sent_at': 'TIMESTAMPTZ',
        'last_error': 'VARCHAR'
    }}
);
