"""Guardrails: budgets with a period-end forecast, spend anomalies, token policies, alerts that arrive once."""
