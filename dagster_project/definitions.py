"""The BotFlow code location: assets, jobs, schedules and resources, assembled by concern."""

from __future__ import annotations

import dagster as dg

from .alerts import alerts_sensor
from .assets.dbt import dbt_daily, dbt_hourly, dbt_views
from .assets.ingestion import raw_ingestion
from .assets.reports import REPORT_ASSETS
from .change_capture import change_capture_sensor
from .healing import dead_runs_sensor
from .jobs import JOBS
from .quality import GX_CHECKS
from .reconcile import reconciliation_job, reconciliation_schedule, source_reconciliation
from .resources import database_resources
from .schedules import SCHEDULES
from .settings import Settings

# Loading the code location outside `botflow` (e.g. `dagster dev -w workspace.yaml`) still gets
# the same configuration: the environment, else the embedded PostgreSQL.
Settings.from_env().export()

defs = dg.Definitions(
    assets=[raw_ingestion, source_reconciliation, dbt_views, dbt_hourly, dbt_daily, *REPORT_ASSETS],
    asset_checks=GX_CHECKS,
    jobs=[*JOBS, reconciliation_job],
    schedules=[*SCHEDULES, reconciliation_schedule],
    sensors=[change_capture_sensor, alerts_sensor, dead_runs_sensor],
    resources={
        **database_resources(),
    },
)
