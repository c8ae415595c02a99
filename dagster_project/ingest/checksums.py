"""Per-hour checksums of the source rows, recorded when a window is loaded and compared by reconciliation.

For each source table with an event time, and each UTC hour: the number of rows and the sum of a
64-bit hash of (id, updated_at). A load records them from the rows it read (the landing tables, the
same snapshot it loaded), for every hour of its window, empty hours included. Reconciliation computes
the same sums on the source as it is now; an hour whose figures differ holds a change that change
capture did not see: a deleted row, a row stamped behind the high-water mark, a replayed import.

Timestamps are hashed as epochs, so the sums do not depend on either session's time zone or DateStyle.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

# source table -> (its event-time column, whether it has updated_at)
CHECKSUMMED = {
    "messages": ("created_at", True),
    "conversations": ("started_at", True),
    "api_events": ("occurred_at", False),
}


def _figures(table: str, *, ts: str, updated: str | None, relation: str) -> str:
    version = f" || '/' || coalesce(extract(epoch from {updated})::text, '')" if updated else ""
    return f"""
    select '{table}' as source_table, date_trunc('hour', {ts}, 'UTC') as hour, count(*) as rows,
      coalesce(sum(hashtextextended(id::text{version}, 0)), 0) as checksum
    from {relation}
    where {ts} >= %(lo)s and {ts} < %(hi)s
    group by 2"""


def source_figures_sql(schema: str, table: str) -> sql.Composed:
    """Per-hour (rows, checksum) of `schema.table` in [%(lo)s, %(hi)s), computed on the source."""
    column, has_updated = CHECKSUMMED[table]
    text = _figures(table, ts=column, updated="updated_at" if has_updated else None, relation="{relation}")
    return sql.SQL(text).format(relation=sql.Identifier(schema, table))


def landed_figures_sql(table: str) -> str:
    """The same figures over the rows a load landed (text timestamps, parsed back)."""
    column, has_updated = CHECKSUMMED[table]
    return _figures(table, ts=f"raw.try_timestamptz({column})",
                    updated="raw.try_timestamptz(updated_at)" if has_updated else None, relation=f"land_{table}")


CLEAR = "delete from raw.source_checksums where hour >= %(lo)s and hour < %(hi)s"
RECORD = """
insert into raw.source_checksums (source_table, hour, rows, checksum, run_id)
select t.source_table, h.hour, coalesce(f.rows, 0), coalesce(f.checksum, 0), %(run_id)s
from (values {tables}) t (source_table)
cross join generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 hour', interval '1 hour') h (hour)
left join ({figures}) f on f.source_table = t.source_table and f.hour = h.hour
"""


def record_landed_figures(warehouse: psycopg.Cursor, params: dict) -> None:
    """Record the landed rows' figures for every hour of the window [lo, hi) (empty hours as zeros)."""
    figures = " union all ".join(landed_figures_sql(table) for table in CHECKSUMMED)
    tables = ", ".join(f"('{table}')" for table in CHECKSUMMED)
    warehouse.execute(CLEAR, params)
    warehouse.execute(RECORD.format(tables=tables, figures=figures), params)


def source_figures(source: psycopg.Connection, schema: str, lo: datetime, hi: datetime
                   ) -> dict[tuple[str, datetime], tuple[int, int]]:
    """(table, hour) -> (rows, checksum) on the source now, for the hours of [lo, hi) that hold rows."""
    figures: dict[tuple[str, datetime], tuple[int, int]] = {}
    with source.transaction(), source.cursor() as cur:
        cur.execute("set transaction isolation level repeatable read, read only")
        for table in CHECKSUMMED:
            for name, hour, rows, checksum in cur.execute(source_figures_sql(schema, table), {"lo": lo, "hi": hi}):
                figures[(name, hour)] = (rows, int(checksum))
    return figures
