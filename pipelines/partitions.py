"""Billing months are the partitions: one per calendar month, keys like 2026-10-01."""

from __future__ import annotations

import dagster as dg

# end_offset=1 includes the open (current) month, which AWS keeps restating until it closes.
billing_months = dg.MonthlyPartitionsDefinition(start_date="2018-01-01", end_offset=1, timezone="UTC")


def month_of(partition_key: str) -> str:
    """'2026-10-01' -> '2026-10'."""
    return partition_key[:7]


def partition_key_of(month: str) -> str:
    return f"{month}-01"
