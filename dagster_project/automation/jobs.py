"""Jobs: one per partitions definition, so a range runs as one run per definition."""

from __future__ import annotations

import dagster as dg

from dagster_project.ingest.assets import raw_ingestion
from dagster_project.serve.reports.assets import (
    daily_report,
    daily_report_delivery,
    weekly_report,
    weekly_report_delivery,
)
from dagster_project.transform.assets import dbt_daily, dbt_hourly, dbt_views

views_job = dg.define_asset_job(
    "dbt_views_job",
    selection=dg.AssetSelection.assets(dbt_views),
    description="(Re)create the staging and intermediate views and load the LLM price list seed.",
)
hourly_job = dg.define_asset_job(
    "hourly_partition_job",
    selection=dg.AssetSelection.assets(raw_ingestion, dbt_hourly),
    description="Ingest an hour (or a range of hours) into raw, then build fct_bot_replies and usage_analytics.",
)
daily_job = dg.define_asset_job(
    "daily_partition_job",
    selection=dg.AssetSelection.assets(dbt_daily),
    description="Build conversation_metrics and bot_performance_metrics for a day (or a range of days), then "
                "metric_anomalies whole.",
)
daily_report_job = dg.define_asset_job(
    "daily_report_job",
    selection=dg.AssetSelection.assets(daily_report, daily_report_delivery),
    description="Render the daily report of a day (the platform's UTC day, each organization's own day), then "
    "e-mail it once.",
)
weekly_report_job = dg.define_asset_job(
    "weekly_report_job",
    selection=dg.AssetSelection.assets(weekly_report, weekly_report_delivery),
    description="Render the weekly report of an ISO week (platform + each organization), then e-mail it once.",
)
JOBS = [views_job, hourly_job, daily_job, daily_report_job, weekly_report_job]
