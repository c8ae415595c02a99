"""Partitions: hourly for ingestion and hourly marts, daily for daily marts (UTC)."""

from __future__ import annotations

import dagster as dg

from dagster_project.core.settings import first_partition_day

PARTITIONS_START = first_partition_day()  # read when the code location loads

hourly_partitions = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
# ISO weeks, Monday to Sunday: the weekly report
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, day_offset=1, timezone="UTC")
