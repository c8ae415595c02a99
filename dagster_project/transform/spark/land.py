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
What is landed already is not landed again: each landed day (and each table landed whole) records, as a
property of its Parquet table, the fingerprint of the warehouse rows it was copied from (`fingerprint`); a
day whose rows have the same fingerprint now is kept. So the hourly and the daily asset of a run land the
window once, and a day rebuilt alone reads no raw row again unless ingestion changed it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
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


# A fingerprint of raw rows: which warehouse and table they are in (its columns too), how they are landed
# (LANDING_VERSION), their number and the sum of their load times. Ingestion stamps `_loaded_at = now()` on
# every row it inserts or replaces (ingest/rules.py), so a row added, deleted or replaced changes the count
# or the sum (a replaced row takes its replacing transaction's time, not the one it had); rows left as they
# were change neither. A fingerprint is read before the rows it describes: rows that change in between are
# landed again by the next build.
FINGERPRINT = """
select {day} count(*), coalesce(sum(extract(epoch from _loaded_at)), 0) from raw.{table}
{where} {group}
"""
LANDED = "botflow.landed"  # the table property that holds the fingerprint of a table landed whole
LANDING_VERSION = 1  # a change of what landing writes (columns, types, layout): raise it, everything lands again
IDENTITY = """
select current_database(), c.oid, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                             order by a.attnum)
from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where c.oid = %s::regclass group by c.oid
"""
EMPTY_DAY = (0, 0)


def landed_key(day: date) -> str:
    """The table property that holds the fingerprint of a landed day."""
    return f"{LANDED}.{day.isoformat()}"


def identity(conn: psycopg.Connection, table: str) -> tuple:
    """What a fingerprint of raw.`table` of this warehouse starts with (IDENTITY, LANDING_VERSION)."""
    return (LANDING_VERSION, *conn.execute(IDENTITY, (f"raw.{table}",)).fetchone())


def fingerprint(of: tuple, figures: tuple) -> str:
    """The fingerprint of rows (their number, the sum of their load times) of the table `of` identifies."""
    return hashlib.sha256(repr((*of, *figures)).encode()).hexdigest()[:24]


def table_fingerprint(conn: psycopg.Connection, table: str, of: tuple) -> str:
    return fingerprint(of, conn.execute(FINGERPRINT.format(day="", table=table, where="", group="")).fetchone())


def day_fingerprints(conn: psycopg.Connection, table: str, column: str, days: list[date], of: tuple
                     ) -> dict[date, str]:
    """Each of `days` (contiguous): the fingerprint of its rows (those of an empty day too)."""
    query = FINGERPRINT.format(day=f"({column} at time zone 'UTC')::date,", table=table,
                               where=f"where {column} >= %(lo)s and {column} < %(hi)s", group="group by 1")
    figures = {day: (rows, seconds) for day, rows, seconds in conn.execute(
        query, {"lo": utc_midnight(days[0]), "hi": utc_midnight(days[-1] + timedelta(days=1))})}
    return {day: fingerprint(of, figures.get(day, EMPTY_DAY)) for day in days}


def table_properties(spark: Any, table: str) -> dict[str, str]:
    if not spark.catalog.tableExists(table):
        return {}
    return {row.key: row.value for row in spark.sql(f"show tblproperties {table}").collect()}


def set_properties(spark: Any, table: str, values: dict[str, str]) -> None:
    for chunk in chunks(sorted(values.items()), 200):
        spark.sql(f"alter table {table} set tblproperties ("
                  + ", ".join(f"'{key}' = '{value}'" for key, value in chunk) + ")")


def unset_properties(spark: Any, table: str, keys: Iterable[str]) -> None:
    for chunk in chunks(sorted(keys), 200):
        spark.sql(f"alter table {table} unset tblproperties if exists (" + ", ".join(f"'{k}'" for k in chunk) + ")")


def chunks(items: list, size: int) -> list[list]:
    return [items[n:n + size] for n in range(0, len(items), size)]


def contiguous(days: list[date]) -> list[list[date]]:
    """Sorted `days` in runs of consecutive dates."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def read_raw(spark: Any, url: str, properties: dict, table: str, column: str | None,
             predicates: list[str] | None = None) -> Any:
    """raw.`table` over JDBC (the rows of `predicates`, else all), without the load columns; with the partition
    column of its days if it has an event `column`."""
    from pyspark.sql import functions as F

    reading = {"properties": {**properties, "fetchsize": "10000"}, **({"predicates": predicates} if predicates else {})}
    frame = spark.read.jdbc(url, f"raw.{table}", **reading).drop("_run_id", "_loaded_at")
    return frame if column is None else frame.withColumn(PARTITION_COLUMN, F.to_date(column))


def write_whole(frame: Any, name: str, column: str | None) -> None:
    """`frame` as the Parquet table `name`, replaced whole (partitioned by day if it has an event `column`)."""
    writer = frame.write.mode("overwrite").format("parquet")
    (writer if column is None else writer.partitionBy(PARTITION_COLUMN)).saveAsTable(name)


def land_window(spark: Any, warehouse_url: str, window: Window, progress: Callable[[str], None] = print,
                whole: bool = False) -> dict[str, int]:
    """Copy the raw rows of the window's days (and the whole small tables) into Parquet, except the days (and
    tables) landed already from the same rows; the rows landed per table (0: kept as landed). `whole` (a full
    refresh, the window being history_window's): every table rewritten whole, so no day of another history
    stays behind, unless it was landed whole from the same rows."""
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
    with psycopg.connect(warehouse_url, autocommit=True) as conn:  # no transaction held while Spark reads
        for table, column in RAW_TABLES.items():
            name, of = f"raw.{table}", identity(conn, table)
            props = table_properties(spark, name)

            if column is None or whole:
                recorded = {LANDED: table_fingerprint(conn, table, of)}
                if column is not None:  # and each day's (the window is the raw layer's history)
                    every_day = days_between(window.start, window.end - timedelta(microseconds=1))
                    recorded |= {landed_key(day): value
                                 for day, value in day_fingerprints(conn, table, column, every_day, of).items()}
                if props.get(LANDED) == recorded[LANDED]:
                    landed[table] = 0
                    progress(f"kept {name}: landed whole from the same rows")
                    continue
                write_whole(read_raw(spark, url, properties, table, column), name, column)
                set_properties(spark, name, recorded)  # after the rows: a landing stopped half way is redone
                landed[table] = spark.table(name).count()
                progress(f"landed {name}: {landed[table]:,} rows")
                continue
            days = days_of[table]
            current = day_fingerprints(conn, table, column, days, of)
            stale = [day for day in days if props.get(landed_key(day)) != current[day]]
            if not stale:
                landed[table] = 0
                progress(f"kept {name} ({days[0]} to {days[-1]}): landed from the same rows")
                continue
            # the stale days' fingerprints first: a landing stopped half way leaves them to be landed again
            unset_properties(spark, name, [LANDED, *map(landed_key, stale)] if props else [])
            predicates = [f"{column} >= '{lo.isoformat()}' and {column} < '{hi.isoformat()}'"
                          for run in contiguous(stale)
                          for lo, hi in read_ranges(run, spark.sparkContext.defaultParallelism)]
            frame = read_raw(spark, url, properties, table, column, predicates)
            if spark.catalog.tableExists(name):
                # the days, dropped first: a day that now has no row must not keep its old ones
                spark.sql(f"alter table {name} drop if exists "
                          + ", ".join(f"partition ({PARTITION_COLUMN} = date'{day}')" for day in stale))
                frame.write.mode("append").format("parquet").insertInto(name)
            else:
                write_whole(frame, name, column)
            set_properties(spark, name, {landed_key(day): current[day] for day in stale})
            landed[table] = spark.table(name).where(F.col(PARTITION_COLUMN).isin(stale)).count()
            progress(f"landed {name}: {landed[table]:,} rows of {len(stale)} of {len(days)} days "
                     f"({days[0]} to {days[-1]}; the others kept, landed from the same rows)")
    return landed
