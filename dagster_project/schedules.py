"""Schedules as the seed system had them: hourly at :05 for the previous hour, daily at 01:00 for the previous day."""

from __future__ import annotations

import dagster as dg

from .jobs import daily_job, hourly_job

hourly_schedule = dg.build_schedule_from_partitioned_job(
    hourly_job, name="hourly_at_05", minute_of_hour=5, default_status=dg.DefaultScheduleStatus.RUNNING,
)
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job, name="daily_at_0100", hour_of_day=1, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
SCHEDULES = [hourly_schedule, daily_schedule]
