"""Schedules: hourly at :05 for the previous hour, daily at 01:00 for the previous day (as the seed
system had them); the daily report at 07:00 UTC for the previous day and the weekly report on Monday
07:00 UTC for the previous ISO week (each waits for its marts; see serve/reports/assets.py)."""

from __future__ import annotations

import dagster as dg

from dagster_project.automation.jobs import daily_job, daily_report_job, hourly_job, weekly_report_job
from dagster_project.core.partitions import daily_partitions, hourly_partitions, weekly_partitions


def latest_partition_schedule(name: str, cron: str, job, partitions: dg.TimeWindowPartitionsDefinition
                              ) -> dg.ScheduleDefinition:
    """At each tick, one run of `job` for the newest partition that has ended (its key is the run key,
    so a tick evaluated twice launches one run)."""

    unit = type(partitions).__name__.removesuffix("PartitionsDefinition").lower()

    @dg.schedule(name=name, cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"{job.name} for the newest {unit} partition that has ended")
    def _schedule(context: dg.ScheduleEvaluationContext):
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            key = partitions.get_last_partition_key()
        if key is None:
            return dg.SkipReason(f"no partition has ended yet (partitions start {partitions.start:%Y-%m-%d})")
        return dg.RunRequest(run_key=key, partition_key=key)

    return _schedule


SCHEDULES = [
    latest_partition_schedule("hourly_at_05", "5 * * * *", hourly_job, hourly_partitions),
    latest_partition_schedule("daily_at_0100", "0 1 * * *", daily_job, daily_partitions),
    latest_partition_schedule("daily_report_at_0700", "0 7 * * *", daily_report_job, daily_partitions),
    latest_partition_schedule("weekly_report_monday_0700", "0 7 * * 1", weekly_report_job, weekly_partitions),
]
