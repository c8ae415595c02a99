"""Build a window's marts on Spark: land raw as Parquet, run the dbt models with dbt-spark, publish into
PostgreSQL. The raw layer must hold the window already (the ingestion assets load it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import psycopg

from dagster_project.core.db import connect
from dagster_project.core.settings import DBT_PROJECT_DIR, ConfigError, scoped_environment
from dagster_project.core.window import DBT_WINDOW_ENV, Window
from dagster_project.transform.dbt_runner import _failures
from dagster_project.transform.project import project_args
from dagster_project.transform.spark.cluster import SparkCluster
from dagster_project.transform.spark.land import history_window, land_window
from dagster_project.transform.spark.publish import ensure_serving_tables, mart_windows, publish_window
from dagster_project.transform.spark.session import spark_session

# what dbt-spark builds besides the marts: the views the marts read (the dims stay views in PostgreSQL; the price
# list is landed from the warehouse, land.REFERENCE_TABLES)
UPSTREAM = ["staging", "intermediate"]
# the advisory lock a Spark build holds on its warehouse (any bigint; "botflow" in ASCII)
BUILD_LOCK = 0x626F74666C6F77
LOCK_POLL_S = 2
WAITING = "waiting for another run's Spark build of this warehouse to end (they land the same raw tables)"


@contextmanager
def one_build_at_a_time(warehouse_url: str, progress: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """Hold the warehouse's Spark build lock (a PostgreSQL advisory lock, freed when its connection ends, a
    killed run's too); yields a check that the lock is still held (its connection alive). The builds of a
    warehouse share its landed raw tables and the views over them: an hourly and a daily run at once would
    land the same days while the other reads them (a day's partitions are dropped, then written), and a mart
    could miss that day's rows. The runs' pools keep an asset's runs apart, not the hourly and daily assets'."""
    with connect(warehouse_url, setting="BOTFLOW_WAREHOUSE_URL", autocommit=True) as conn:
        began = time.monotonic()
        said = -1
        while not conn.execute("select pg_try_advisory_lock(%s)", (BUILD_LOCK,)).fetchone()[0]:
            minutes = int(time.monotonic() - began) // 60
            if minutes != said:  # at once, then each minute
                progress(WAITING + (f": {minutes} min so far" if minutes else ""))
                said = minutes
            time.sleep(LOCK_POLL_S)

        def still_held() -> None:
            try:
                conn.execute("select 1")
            except psycopg.Error as exc:
                raise RuntimeError("the connection holding the Spark build lock (BOTFLOW_WAREHOUSE_URL) was lost, so "
                                   "another build may have started: stopped before publishing (a retry builds again)"
                                   ) from exc

        yield still_held


def dbt_spark(args: list[str], window: Window | None) -> None:
    """dbt with the `spark` target in this process (its session is this process's), with the project arguments
    and failure report of the PostgreSQL runs (dbt_runner); its own target folder."""
    from dbt.cli.main import dbtRunner

    env = window.dbt_env() if window else {}
    with scoped_environment(env, unset=DBT_WINDOW_ENV):
        result = dbtRunner().invoke([*args, "--target", "spark", "--quiet",
                                     *project_args(DBT_PROJECT_DIR, DBT_PROJECT_DIR / "target" / "spark")])
    if not result.success:
        raise ConfigError(f"dbt on Spark failed for window {window}:\n{_failures(result)}")


def build_window(warehouse_url: str, cluster: SparkCluster, window: Window | None, marts: list[str] | None = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Land, transform and publish one window of `marts` (default: all four); seconds per stage (and of the
    publish, its replacing transaction), the rows published per mart and the raw rows landed per table (0: kept
    as an earlier build landed them). One build of a warehouse at a time (one_build_at_a_time). No window: a
    full refresh, every mart rebuilt from all of the raw layer (after a price-list change) and every row of the
    PostgreSQL marts replaced."""
    marts = marts or sorted(mart_windows())
    whole = window is None
    if window is None:  # the days that hold raw rows; none: an empty day, so the marts are emptied
        window = history_window(warehouse_url) or Window.days(date.today(), date.today() + timedelta(days=1))
        progress(f"full refresh on Spark: {' '.join(marts)} from all of the raw layer, {window}")
    with one_build_at_a_time(warehouse_url, progress) as still_held:
        return _build(warehouse_url, cluster, window, marts, progress, whole, still_held)


def _build(warehouse_url: str, cluster: SparkCluster, window: Window, marts: list[str],
           progress: Callable[[str], None], whole: bool, still_held: Callable[[], None]) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    ensure_serving_tables(warehouse_url)
    spark = spark_session(cluster)
    seconds["session"] = time.perf_counter() - began
    began = time.perf_counter()
    landed = land_window(spark, warehouse_url, window, progress, whole=whole)
    seconds["land"] = time.perf_counter() - began
    began = time.perf_counter()
    # the models in one invocation (one parse); the data tests run on the published marts
    dbt_spark(["build", "--resource-type", "model", "--select", *UPSTREAM, *marts,
               *(["--full-refresh"] if whole else [])], None if whole else window)
    seconds["dbt"] = time.perf_counter() - began
    progress(f"dbt on Spark: {' '.join(marts)} over {window} in {seconds['dbt']:.1f}s")
    still_held()
    began = time.perf_counter()
    published = publish_window(spark, warehouse_url, window, marts, progress, whole=whole)
    seconds["publish"] = time.perf_counter() - began
    seconds["publish_replace"] = published.replace_s  # of which the PostgreSQL transaction
    return {"seconds": seconds, "published": published.rows, "landed": landed}
