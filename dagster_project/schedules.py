"""Schedules: hourly at :05 for the previous hour, daily at 01:00 for the previous day (as the seed
system had them); the daily report at 07:00 UTC for the previous day and the weekly report on Monday
07:00 UTC for the previous ISO week (each waits for its marts; see assets/reports.py)."""

from __future__ import annotations

import dagster as dg

from .jobs import daily_job, daily_report_job, hourly_job, weekly_report_job

hourly_schedule = dg.build_schedule_from_partitioned_job(
    hourly_job, name="hourly_at_05", minute_of_hour=5, default_status=dg.DefaultScheduleStatus.RUNNING,
)
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job, name="daily_at_0100", hour_of_day=1, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
daily_report_schedule = dg.build_schedule_from_partitioned_job(
    daily_report_job, name="daily_report_at_0700", hour_of_day=7, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
weekly_report_schedule = dg.build_schedule_from_partitioned_job(
    weekly_report_job, name="weekly_report_monday_0700", day_of_week=1, hour_of_day=7, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
SCHEDULES = [hourly_schedule, daily_schedule, daily_report_schedule, weekly_report_schedule]
