"""The nightly job: rebuild the open billing months, because providers restate them."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from apportion.pipelines.partitions import open_months, partition_key_of


def nightly_schedule(job, count: int, partitions: dg.PartitionsDefinition | None = None) -> dg.ScheduleDefinition:
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
        known = set(partitions.get_partition_keys(current_time=now)) if partitions else None
        for month in open_months(now, count):
            if known is None or partition_key_of(month) in known:
                yield dg.RunRequest(run_key=f"{month}:{day}", partition_key=partition_key_of(month))

    return _nightly
