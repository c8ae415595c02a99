"""Retry policy and concurrency pools shared by the assets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dagster_project.core.settings import setting_number

# 3 attempts in all (2 retries), waiting 10 s then 20 s
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


@contextmanager
def interrupts_stop_the_step() -> Iterator[None]:
    """A terminated run's interrupt fails the step for good. Dagster's retry policy retries an interrupted
    step like any failure (10 s later), so a run terminated from the UI would go on and succeed."""
    try:
        yield
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
        raise dg.Failure(description="the run was terminated", allow_retries=False) from exc


# One op per pool at a time across all runs (dagster.yaml: concurrency.pools.default_limit = 1),
# so two runs never write the same tables at once.
POOL_RAW = "botflow_raw"
POOL_DBT_VIEWS = "botflow_dbt_views"
POOL_DBT_HOURLY = "botflow_dbt_hourly"
POOL_DBT_DAILY = "botflow_dbt_daily"
POOL_LIVE = "botflow_live"  # the live run has its own pool: it never waits on, or blocks, partition runs

# runs that are queued or running: a sensor that must not pile up runs waits while one exists
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

# e-mail delivery: 4 attempts, waiting 30 s, 60 s, 120 s (a mail server restart, a rate limit);
# BOTFLOW_DELIVERY_RETRY_SECONDS sets the first wait (the tests use 1 s)
DELIVERY_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=setting_number("BOTFLOW_DELIVERY_RETRY_SECONDS", minimum=0), backoff=dg.Backoff.EXPONENTIAL)
POOL_REPORTS = "botflow_reports"
