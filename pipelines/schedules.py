"""The nightly job: rebuild the open billing months, because providers restate them."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from apportion.pipelines.partitions import partition_key_of


def open_months(now: datetime, count: int = 2) -> list[str]:
    """The current month and the count-1 before it, oldest first ('YYYY-MM')."""
    y, m = now.year, now.month
    months = []
    for _ in range(count):
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return sorted(months)


def nightly_schedule(job: dg.JobDefinition, count: int) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="nightly",
        job=job,
        cron_schedule="0 5 * * *",  # AWS refreshes CUR several times a day; 05:00 UTC catches the night's delivery
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every night, rebuild the last {count} billing months (current and previous).",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        now = context.scheduled_execution_time or datetime.now(timezone.utc)
        day = now.strftime("%Y-%m-%d")
        for month in open_months(now, count):
            yield dg.RunRequest(run_key=f"{month}:{day}", partition_key=partition_key_of(month))

    return _nightly
