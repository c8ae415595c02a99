"""The live code location: the live tables, their job and the sensor that keeps them fresh.

A code location of its own (see workspace.yaml) so that a live run's worker process imports only
this (no dbt manifest): the run starts about 2 s sooner, and that start-up is most of the live lag.
Like definitions.py, importing it does no work: Dagster calls `botflow_live()`.
"""

from __future__ import annotations

import functools

import dagster as dg


@functools.cache
def _assemble() -> dg.Definitions:
    from dagster_project.core.settings import Settings

    Settings.from_env().export()  # the environment, else the embedded PostgreSQL (as definitions.py)

    from dagster_project.core.resources import database_resources
    from dagster_project.serve.live.assets import live_tables
    from dagster_project.serve.live.sensor import live_feed_sensor, live_job

    return dg.Definitions(assets=[live_tables], jobs=[live_job], sensors=[live_feed_sensor],
                          resources=database_resources())


@dg.definitions
def botflow_live() -> dg.Definitions:
    return _assemble()


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        return _assemble()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
