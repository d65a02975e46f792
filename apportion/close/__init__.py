"""Month close (issue 17): freeze what finance received, show later restatements as explained deltas.

`store` closes and re-opens months (`<warehouse>/closed/<month>/`, the closes.jsonl log), `deltas` builds the
`restatements` table at warehouse build, `exports` writes restatement_deltas.csv and keeps every published
pack for `apportion export --as-of`, `report` is the report's section, `cli` the `apportion close` command.
"""
