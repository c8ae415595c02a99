"""Freshness: how fresh each mart must be, as Dagster freshness policies on the mart assets.

- hourly marts (fct_bot_replies, usage_analytics, response_time_histogram): materialized within the last 2 hours
  (warn at 1.5 h);
- daily marts (conversation_metrics, bot_performance_metrics, bot_performance_metrics_local, and
  metric_anomalies, which the daily runs rebuild whole): materialized between 00:00 and 03:00 UTC every
  day (a build after 03:00 makes the mart fresh again until the next deadline).
The daemon evaluates the policies (Dagster's freshness daemon, every 30 s) and the UI shows each mart's
state. The partition-level promise, "yesterday's partition exists at 03:00 UTC", is the alerts sensor's
overdue incident (dagster_project/automation/alerts.py), which also says which partition is missing.
"""

from datetime import timedelta

import dagster as dg

HOURLY_MARTS = [dg.AssetKey(["marts", "fct_bot_replies"]), dg.AssetKey(["marts", "usage_analytics"]),
                dg.AssetKey(["marts", "response_time_histogram"])]
DAILY_MARTS = [dg.AssetKey(["marts", "conversation_metrics"]), dg.AssetKey(["marts", "bot_performance_metrics"]),
               dg.AssetKey(["marts", "bot_performance_metrics_local"]), dg.AssetKey(["marts", "metric_anomalies"])]

HOURLY_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=2), warn_window=timedelta(hours=1, minutes=30))
DAILY_POLICY = dg.FreshnessPolicy.cron(deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=3))


def policy_for(tags: set[str]):
    if "hourly" in tags:
        return HOURLY_POLICY
    if "daily" in tags:
        return DAILY_POLICY
    return None
