"""The live feed's job and the sensor that launches it when the source changes."""

from __future__ import annotations

import dagster as dg

from dagster_project.core.policies import ACTIVE_RUN_STATUSES
from dagster_project.core.resources import SourceDatabase
from dagster_project.core.settings import setting_number
from dagster_project.ingest.high_water import source_high_water
from dagster_project.serve.live.assets import live_tables

live_job = dg.define_asset_job(
    "live_job",
    selection=dg.AssetSelection.assets(live_tables),
    executor_def=dg.in_process_executor,  # one small step: no subprocess start-up on the lag path
    description="Load the last two hours and refresh the live tables (launched by live_feed_sensor).",
)

LIVE_INTERVAL_SECONDS = setting_number("BOTFLOW_LIVE_INTERVAL_SECONDS", int, minimum=1)


@dg.sensor(
    name="live_feed_sensor",
    job=live_job,
    minimum_interval_seconds=LIVE_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every BOTFLOW_LIVE_INTERVAL_SECONDS (default 5 s): when the source has rows newer than the "
    "cursor, launch one live run; never a second while one is queued or running.",
)
def live_feed_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase):
    newest = source_high_water(source).plausible
    watermark = newest.isoformat() if newest else None
    if watermark is None:
        return dg.SkipReason("the source has no messages yet")
    if watermark == context.cursor:
        return dg.SkipReason(f"no source change since {watermark}")
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=live_job.name, statuses=ACTIVE_RUN_STATUSES), limit=1)
    if running:  # coalesce: the cursor stays, so the next tick after this run picks the change up
        return dg.SkipReason(f"live run {running[0].run_id[:8]} is still in progress")
    context.update_cursor(watermark)
    return dg.RunRequest(run_key=f"live-{watermark}", tags={"botflow/reason": f"source changed up to {watermark}"})
