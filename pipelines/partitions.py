"""Billing months are the partitions: one per calendar month, keys like 2026-10-01.

They start at the first month any source has data for (not at a fixed date: the UI shows no empty
years), and end with the open (current) month, which providers keep restating until it closes.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg


def month_of(partition_key: str) -> str:
    """'2026-10-01' -> '2026-10'."""
    return partition_key[:7]


def partition_key_of(month: str) -> str:
    return f"{month}-01"


def open_months(now: datetime, count: int = 2) -> list[str]:
    """The current month and the count-1 before it, oldest first ('YYYY-MM')."""
    y, m = now.year, now.month
    months = []
    for _ in range(count):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return sorted(months)


def first_month(cfg, extra_months=(), now: datetime | None = None) -> str:
    """The earliest month a source has (or one of `extra_months`); without any data yet, the first of
    the open months the nightly job would build."""
    from apportion.connectors.registry import connector_for

    months = set(extra_months)
    for source in cfg.sources:
        if not source.enabled:
            continue
        try:
            months.update(connector_for(source).months())
        except Exception:  # a source that cannot be listed now (network, credentials) fails at its run
            continue
    months.update(open_months(now or datetime.now(timezone.utc), cfg.open_months)[:1])
    return min(months)


def billing_months_for(cfg, extra_months=(), now: datetime | None = None) -> dg.MonthlyPartitionsDefinition:
    # end_offset=1 includes the open (current) month, which AWS keeps restating until it closes.
    return dg.MonthlyPartitionsDefinition(start_date=partition_key_of(first_month(cfg, extra_months, now)),
                                          end_offset=1, timezone="UTC")
