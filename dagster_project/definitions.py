"""The BotFlow code location: each stage's assets, checks, jobs, schedules and sensors, assembled.

Importing this module does no work. Dagster calls `botflow()` when it loads the location; that reads
the settings (the environment, else the embedded PostgreSQL), publishes them for dbt and the runs,
and only then imports the stages, whose partitions start at BOTFLOW_PARTITIONS_START. Python callers
(the CLI, tests, bench) read `defs`, the same object, built once per process.
"""

from __future__ import annotations

import functools

import dagster as dg


@functools.cache
def _assemble() -> dg.Definitions:
    from dagster_project.core.settings import Settings

    Settings.from_env().export()

    from dagster_project.automation.alerts import alerts_sensor
    from dagster_project.automation.change_capture import change_capture_sensor
    from dagster_project.automation.healing import dead_runs_sensor
    from dagster_project.automation.jobs import JOBS
    from dagster_project.automation.schedules import SCHEDULES
    from dagster_project.core.resources import database_resources
    from dagster_project.ingest.assets import raw_ingestion
    from dagster_project.ingest.reconcile import reconciliation_job, reconciliation_schedule, source_reconciliation
    from dagster_project.quality.checks import GX_CHECKS
    from dagster_project.serve.exposures import EXPOSURES
    from dagster_project.serve.reports.assets import REPORT_ASSETS
    from dagster_project.transform.assets import dbt_daily, dbt_hourly, dbt_views

    return dg.Definitions(
        assets=[raw_ingestion, source_reconciliation, dbt_views, dbt_hourly, dbt_daily, *REPORT_ASSETS, *EXPOSURES],
        asset_checks=GX_CHECKS,
        jobs=[*JOBS, reconciliation_job],
        schedules=[*SCHEDULES, reconciliation_schedule],
        sensors=[change_capture_sensor, alerts_sensor, dead_runs_sensor],
        resources=database_resources(),
        # Every job runs its steps in the run's own process, asset backfills launched from the UI too: the
        # steps depend on each other (ingest -> checks -> dbt -> checks), so a process per step would
        # parallelize nothing and pay, per step, the import of Dagster, dbt and great-expectations and a dbt parse.
        executor=dg.in_process_executor,
    )


@dg.definitions
def botflow() -> dg.Definitions:
    return _assemble()


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        return _assemble()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
