"""Freshness: how fresh each mart must be, as policies (shown in the UI) and as checks a sensor runs.

- hourly marts (fct_bot_replies, usage_analytics): materialized within the last 2 hours;
- daily marts (conversation_metrics, bot_performance_metrics): yesterday's partition by 03:00 UTC.
An overdue mart shows as failing its freshness policy in the UI, and its freshness check (run by
`freshness_checks_sensor`) fails with severity ERROR, which alerting (a run-status or check sensor,
Slack, e-mail) can act on.
"""

from datetime import timedelta

import dagster as dg

HOURLY_MARTS = [dg.AssetKey(["marts", "fct_bot_replies"]), dg.AssetKey(["marts", "usage_analytics"])]
DAILY_MARTS = [dg.AssetKey(["marts", "conversation_metrics"]), dg.AssetKey(["marts", "bot_performance_metrics"])]

HOURLY_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=2), warn_window=timedelta(hours=1, minutes=30))
DAILY_POLICY = dg.FreshnessPolicy.cron(deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=3))


def policy_for(tags: set[str]):
    if "hourly" in tags:
        return HOURLY_POLICY
    if "daily" in tags:
        return DAILY_POLICY
    return None


FRESHNESS_CHECKS = [
    *dg.build_last_update_freshness_checks(assets=HOURLY_MARTS, lower_bound_delta=timedelta(hours=2)),
    *dg.build_time_partition_freshness_checks(assets=DAILY_MARTS, deadline_cron="0 3 * * *"),
]
freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=FRESHNESS_CHECKS, name="freshness_checks_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
