"""Publish the marts Spark computed into PostgreSQL's serving schema, one window at a time, atomically.

The executors write the window's rows of each mart over JDBC into a scratch table of the warehouse
(`spark_publish.<mart>`); then one PostgreSQL transaction deletes the window's rows of every mart and
inserts the new ones, cast to the mart's column types. Readers (Superset, reports, exports, the SQL
functions, the live layer) see the old window or the new one, never a mix; the marts keep their indexes
and row-level security, which dbt created in PostgreSQL (ensure_serving_tables).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dagster_project.core.settings import DBT_PROJECT_DIR, ConfigError, process_environment
from dagster_project.core.window import DBT_WINDOW_ENV, Window
from dagster_project.transform.project import ensure_manifest
from dagster_project.transform.spark.cluster import jdbc_url

SCRATCH_SCHEMA = "spark_publish"


@functools.cache
def mart_windows() -> dict[str, tuple[str, str]]:
    """The partitioned marts Spark builds: name -> (the column their windows are cut by, its grain), from each
    model's config meta.window (models/marts/*.sql), the one place it is written. Those whose meta says
    `built_in: warehouse` are dbt's in PostgreSQL on both engines (transform/assets.run_on_spark)."""
    manifest = json.loads(ensure_manifest().read_text())
    windows = {}
    for node in manifest["nodes"].values():
        meta = node.get("config", {}).get("meta") or {}
        window = meta.get("window")
        if node["resource_type"] == "model" and window and meta.get("built_in") != "warehouse":
            windows[node["name"]] = (window["column"], window.get("grain", "timestamp"))
    return windows


def ensure_serving_tables(warehouse_url: str) -> None:
    """The marts, views and SQL functions of the serving schema, created by dbt on PostgreSQL if missing:
    the partitioned marts are built over an empty window (no row, but their indexes and row-level security)."""
    with psycopg.connect(warehouse_url) as conn:
        missing = [mart for mart in mart_windows()
                   if conn.execute("select to_regclass(%s)", (f"marts.{mart}",)).fetchone()[0] is None]
    if not missing:
        return
    empty = dict(zip(DBT_WINDOW_ENV, ("2999-01-01T00:00:00+00:00", "2999-01-01T01:00:00+00:00"), strict=True))
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run([str(dbt), "build", "--exclude", "test_type:unit", "--project-dir", str(DBT_PROJECT_DIR),
                             "--profiles-dir", str(DBT_PROJECT_DIR), "--quiet"],
                            env={**process_environment(), **empty}, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"creating the serving marts in PostgreSQL failed:\n{result.stdout[-2000:]}")


def _window_predicate(column: str, grain: str, window: Window) -> str:
    """The window as a Spark SQL filter on the mart's window column."""
    if grain == "date":
        return f"{column} >= date'{window.start.date()}' and {column} < date'{window.end.date()}'"
    return (f"{column} >= timestamp'{window.start:%Y-%m-%d %H:%M:%S}' "
            f"and {column} < timestamp'{window.end:%Y-%m-%d %H:%M:%S}'")


@dataclass(frozen=True)
class Published:
    rows: dict[str, int]  # per mart
    transfer_s: float  # the executors' JDBC writes into the scratch tables
    replace_s: float  # the transaction that deletes the window's rows of the marts and inserts the new ones


def publish_window(spark: Any, warehouse_url: str, window: Window, marts: list[str],
                   progress: Callable[[str], None] = print, whole: bool = False) -> Published:
    """Replace the window's rows of `marts` in PostgreSQL with Spark's, in one transaction.
    `whole` (a full refresh): every row of the marts is replaced, whatever its time."""
    began = time.perf_counter()
    url, properties = jdbc_url(warehouse_url)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute(f"create schema if not exists {SCRATCH_SCHEMA}")
        columns = {mart: conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = %s::regclass and attnum > 0 and not attisdropped order by attnum",
            (f"marts.{mart}",)).fetchall() for mart in marts}
    published = {}
    for mart in marts:
        column, grain = mart_windows()[mart]
        names = [name for name, _ in columns[mart]]
        frame = spark.table(f"marts.{mart}")
        if not whole:
            frame = frame.where(_window_predicate(column, grain, window))
        frame = frame.select(*names)
        frame.write.jdbc(url, f"{SCRATCH_SCHEMA}.{mart}", mode="overwrite",
                         properties={**properties, "batchsize": "10000", "truncate": "false"})
    transferred = time.perf_counter()
    with psycopg.connect(warehouse_url) as conn, conn.transaction():
        for mart in marts:
            column, grain = mart_windows()[mart]
            lo, hi = (window.start.date(), window.end.date()) if grain == "date" else (window.start, window.end)
            if whole:  # a delete, not a truncate: readers keep the old rows until the commit, not a lock
                conn.execute(sql.SQL("delete from marts.{}").format(sql.Identifier(mart)))
            else:
                conn.execute(sql.SQL("delete from marts.{} where {} >= %s and {} < %s").format(
                    sql.Identifier(mart), sql.Identifier(column), sql.Identifier(column)), (lo, hi))
            target = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns[mart])
            cast = sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(kind))
                                      for name, kind in columns[mart])
            cursor = conn.execute(sql.SQL("insert into marts.{} ({}) select {} from {}.{}").format(
                sql.Identifier(mart), target, cast, sql.Identifier(SCRATCH_SCHEMA), sql.Identifier(mart)))
            published[mart] = cursor.rowcount
            conn.execute(sql.SQL("drop table {}.{}").format(sql.Identifier(SCRATCH_SCHEMA), sql.Identifier(mart)))
    result = Published(published, transferred - began, time.perf_counter() - transferred)
    progress("published " + ", ".join(f"marts.{m}: {n:,} rows" for m, n in published.items())
             + f" (transfer {result.transfer_s:.1f}s, replace {result.replace_s:.1f}s)")
    return result

