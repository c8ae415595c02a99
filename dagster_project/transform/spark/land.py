"""Land a window of the raw layer as Parquet tables in the Spark metastore's `raw` database.

The raw layer is validated in PostgreSQL by the ingestion assets (the same rules, quarantine and repairs
for both engines: dagster_project/ingest); this copies what a window loaded, read in parallel over JDBC by
the cluster's executors (two tasks per core at least, a day at most each), into Parquet:
  - messages and api_events: partitioned by their UTC date; whole days are rewritten (their partitions
    dropped, then written), so landing is idempotent and a day is never half old: for api_events the
    window's days, for messages also the days of every message of the conversations the window touches
    (so the window's marts are right whatever order windows are built in);
  - conversations, bots, organizations: rewritten whole (a conversation of any day may change when a later
    window loads its messages). At 10M messages that is ~1.1M conversations per landing: the next step is
    a date partition with the load time of raw.conversations (docs/spark.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from dagster_project.core.window import Window, utc_midnight
from dagster_project.transform.spark.cluster import jdbc_url

# table -> the event column its date partitions follow (None: landed whole)
RAW_TABLES: dict[str, str | None] = {
    "organizations": None,
    "bots": None,
    "conversations": None,
    "messages": "created_at",
    "api_events": "occurred_at",
}
PARTITION_COLUMN = "landed_date"
# The reference tables the warehouse holds (dbt's seeds on PostgreSQL, reloaded by the views asset and
# `botflow refresh`), landed whole in the seeds' place on Spark: both engines price and measure business
# time with the same rows. Their Spark types: the seeds' (dbt/seeds/_seeds.yml), prices as exact decimals.
REFERENCE_TABLES = {
    "reference.llm_prices": {"model": "string", "effective_from": "timestamp",
                             "prompt_price_per_1k": "decimal(20, 10)", "completion_price_per_1k": "decimal(20, 10)"},
    "reference.business_hours": {"organization_id": "string", "iso_weekday": "int", "opens": "string",
                                 "closes": "string"},
    "reference.holidays": {"organization_id": "string", "local_date": "date"},
    "reference.sla_targets": {"organization_id": "string", "first_response_secs": "int"},
}


# The days of messages a window's marts read, beyond its own: every message of the conversations it touches
# (started in it, or with a message in it), earlier (a reply's latest inbound) and later (conversation_metrics
# counts a conversation's messages whatever day they were created on).
MESSAGE_DAYS = """
with touched as (
    select id from raw.conversations where started_at >= %(lo)s and started_at < %(hi)s
    union
    select conversation_id from raw.messages where created_at >= %(lo)s and created_at < %(hi)s
)
select min(m.created_at), max(m.created_at) from raw.messages m join touched t on t.id = m.conversation_id
"""


def days_between(first: datetime, last: datetime) -> list[date]:
    """The UTC dates from first's to last's, both included."""
    return [first.date() + timedelta(days=n) for n in range((last.date() - first.date()).days + 1)]


HISTORY = """
select min(first), max(last) from (
    select min(created_at) as first, max(created_at) as last from raw.messages
    union all select min(started_at), max(started_at) from raw.conversations
    union all select min(occurred_at), max(occurred_at) from raw.api_events
) spans
"""


def history_window(warehouse_url: str) -> Window | None:
    """The whole UTC days that hold the raw layer's rows (none: the raw layer is empty)."""
    with psycopg.connect(warehouse_url) as conn:
        first, last = conn.execute(HISTORY).fetchone()
    if first is None:
        return None
    return Window.days(first.astimezone(UTC).date(), last.astimezone(UTC).date() + timedelta(days=1))


def landing_days(warehouse_url: str, window: Window) -> dict[str, list[date]]:
    """The days of each date-partitioned raw table that landing the window rewrites."""
    last_instant = window.end - timedelta(microseconds=1)
    with psycopg.connect(warehouse_url) as conn:
        earliest, latest = conn.execute(MESSAGE_DAYS, {"lo": window.start, "hi": window.end}).fetchone()
    first = min(window.start, earliest or window.start).astimezone(UTC)
    last = max(last_instant, latest or last_instant).astimezone(UTC)
    return {"messages": days_between(first, last), "api_events": days_between(window.start, last_instant)}


def read_ranges(days: list[date], cores: int) -> list[tuple[datetime, datetime]]:
    """The JDBC read tasks over `days` (contiguous): two per executor core at least, a day at most each (a
    task is one indexed range query; fewer, larger tasks cost less than an hour each on small windows)."""
    hours = 24 * len(days)
    step = max(1, min(24, hours // (2 * max(cores, 1))))
    start = utc_midnight(days[0])
    return [(start + timedelta(hours=h), start + timedelta(hours=min(h + step, hours))) for h in range(0, hours, step)]


def land_window(spark: Any, warehouse_url: str, window: Window, progress: Callable[[str], None] = print,
                whole: bool = False) -> dict:
    """Copy the raw rows of the window's days (and the whole small tables) into Parquet; rows per table.
    `whole` (a full refresh, the window being history_window's): every table rewritten whole, so no day of
    another history stays behind."""
    from pyspark.sql import functions as F

    url, properties = jdbc_url(warehouse_url)
    for database in ("raw", "reference"):
        if not spark.catalog.databaseExists(database):  # (if not exists: the metastore logs an error if it exists)
            spark.sql(f"create database {database}")
    days_of = landing_days(warehouse_url, window)
    landed = {}
    for table, types in REFERENCE_TABLES.items():
        rows = spark.read.jdbc(url, table, properties=properties)
        rows.select(*(F.col(name).cast(kind).alias(name) for name, kind in types.items())).write.mode(
            "overwrite").format("parquet").saveAsTable(table)
    for table, column in RAW_TABLES.items():
        days = days_of.get(table, [])
        if column is None:
            frame = spark.read.jdbc(url, f"raw.{table}", properties={**properties, "fetchsize": "10000"})
            frame = frame.drop("_run_id", "_loaded_at")
            frame.write.mode("overwrite").format("parquet").saveAsTable(f"raw.{table}")
        else:
            predicates = [f"{column} >= '{lo.isoformat()}' and {column} < '{hi.isoformat()}'"
                          for lo, hi in read_ranges(days, spark.sparkContext.defaultParallelism)]
            frame = spark.read.jdbc(url, f"raw.{table}", predicates=predicates,
                                    properties={**properties, "fetchsize": "10000"})
            frame = frame.drop("_run_id", "_loaded_at").withColumn(PARTITION_COLUMN, F.to_date(column))
            if spark.catalog.tableExists(f"raw.{table}") and not whole:
                # the days, dropped first: a day that now has no row must not keep its old ones
                spark.sql(f"alter table raw.{table} drop if exists "
                          + ", ".join(f"partition ({PARTITION_COLUMN} = date'{day}')" for day in days))
                frame.write.mode("append").format("parquet").insertInto(f"raw.{table}")
            else:
                frame.write.mode("overwrite").partitionBy(PARTITION_COLUMN).format("parquet").saveAsTable(
                    f"raw.{table}")
        stored = spark.table(f"raw.{table}")
        landed[table] = (stored if column is None else stored.where(F.col(PARTITION_COLUMN).isin(days))).count()
        progress(f"landed raw.{table}: {landed[table]:,} rows" + (f" ({days[0]} to {days[-1]})" if days else ""))
    return landed
