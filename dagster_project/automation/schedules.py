"""Schedules: hourly at :05 for the previous hour, daily at 01:00 for the previous day (as the seed
system had them); the daily report at 07:00 UTC for the previous day and the weekly report on Monday
07:00 UTC for the previous ISO week (each waits for its marts; see serve/reports/assets.py). A day
later each report schedule runs a catch-up for the organizations west of UTC, whose local period
ended after the first run (serve/reports/build.py)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from dagster_project.automation.jobs import daily_job, daily_report_job, hourly_job, weekly_report_job
from dagster_project.core.partitions import daily_partitions, hourly_partitions, weekly_partitions
from dagster_project.serve.reports.assets import PENDING, PENDING_TAG


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


def report_schedule(name: str, cron: str, job, partitions: dg.TimeWindowPartitionsDefinition
                    ) -> dg.ScheduleDefinition:
    """The report of the period that ended in the last day; and, for the period that ended the day before, a
    catch-up run (tag botflow/reports=pending) that renders the organizations still pending. Run keys make a
    tick evaluated twice launch each run once."""

    @dg.schedule(name=name, cron_schedule=cron, job=job, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"{job.name} for the period that ended in the last day; a catch-up a day later")
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        with dg.partition_loading_context(effective_dt=tick):
            key = partitions.get_last_partition_key()
        requests = []
        while key is not None:
            window = partitions.time_window_for_partition_key(key)
            age = tick - window.end
            if age < timedelta(days=1):
                requests.append(dg.RunRequest(run_key=key, partition_key=key))
            elif age < timedelta(days=2):
                requests.append(dg.RunRequest(run_key=f"{key}:pending", partition_key=key,
                                              tags={PENDING_TAG: PENDING}))
            else:
                break
            earlier = window.start - timedelta(microseconds=1)
            key = partitions.get_partition_key_for_timestamp(earlier.timestamp()) if earlier >= partitions.start \
                else None
        return requests or dg.SkipReason(f"no {job.name} period ended in the last two days")

    return _schedule


SCHEDULES = [
    latest_partition_schedule("hourly_at_05", "5 * * * *", hourly_job, hourly_partitions),
    latest_partition_schedule("daily_at_0100", "0 1 * * *", daily_job, daily_partitions),
    report_schedule("daily_report_at_0700", "0 7 * * *", daily_report_job, daily_partitions),
    report_schedule("weekly_report_monday_0700", "0 7 * * 1,2", weekly_report_job, weekly_partitions),
]
