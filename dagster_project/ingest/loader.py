"""Load one time window of the source into the raw layer: COPY out, validate, COPY in, one transaction.

The window is a whole number of hours `[window_start, window_end)`. For it, the loader reads:
  - messages created in the window, api_events that occurred in it, conversations started in it;
  - the conversations the window's messages belong to (so a message is judged against its
    conversation whatever order partitions run in);
  - all bots and organizations (small tables, synced whole);
  - rows whose event timestamp is null, more than 5 minutes in the future of the run, or before the
    first partition: they belong to no partition, so every run sweeps them into quarantine with
    `partition_hour` null.
Then every row is checked against metrics.md "Bad rows": rejected rows go to raw.quarantine with
the rule, the partition hour and the run id; repaired rows are kept and counted in raw.repairs.
Re-running a window replaces exactly what that window wrote (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from dagster_project.core.window import Window
from dagster_project.ingest import rules
from dagster_project.ingest.checksums import record_landed_figures
from dagster_project.ingest.schema import ensure_raw_schema

FUTURE_TOLERANCE = timedelta(minutes=5)

# A bot's default model prices its replies that name none: when it changes, every hour holding such a
# reply (outside the window, which is rebuilt now) is stale. Runs before the bots are synced.
STALE_BY_BOT_MODEL = """
insert into raw.stale_hours (hour, reason, found_by, run_id)
select distinct date_trunc('hour', m.created_at, 'UTC'), 'bot default model changed', 'load', %(run_id)s
from land_bots l
join raw.bots b on b.id = l.id and b.llm_model is distinct from l.llm_model
  and (b.updated_at is null or raw.try_timestamptz(l.updated_at) >= b.updated_at)
join raw.conversations c on c.bot_id = b.id
join raw.messages m on m.conversation_id = c.id and m.direction = 'outbound' and m.llm_model is null
where not (m.created_at >= %(lo)s and m.created_at < %(hi)s)
on conflict (hour) do nothing
"""
# the window is loaded again now: its hours are no longer stale once this transaction commits
CLEAR_STALE = "delete from raw.stale_hours where hour >= %(lo)s and hour < %(hi)s"
STALE_BY_MOVED_ROWS = """
insert into raw.stale_hours (hour, reason, found_by, run_id)
select hour, 'a newer version moved rows out', 'load', %(run_id)s from unnest(%(hours)s::timestamptz[]) hour
on conflict (hour) do nothing
"""

LANDING_DDL = """
create temp table land_organizations (id uuid, name text, timezone text, created_at text) on commit drop;
create temp table land_bots (id uuid, organization_id uuid, name text, llm_model text,
  created_at text, updated_at text) on commit drop;
create temp table land_conversations (id uuid, organization_id uuid, bot_id uuid, customer_phone_hash text,
  customer_phone_last4 text, status text, started_at text, ended_at text, handoff_at text,
  customer_satisfaction integer, updated_at text, role text) on commit drop;
create temp table land_messages (id uuid, conversation_id uuid, direction text, created_at text,
  response_time_ms integer, outcome text, knowledge_base_hit boolean, llm_model text,
  prompt_tokens integer, completion_tokens integer, updated_at text) on commit drop;
create temp table land_api_events (id bigint, organization_id uuid, bot_id uuid, kind text,
  occurred_at text) on commit drop;
"""


def source_queries(schema: str, lo: datetime, hi: datetime, future: datetime, floor: datetime,
                   phone_key: str) -> dict:
    """The COPY-out query per landing table. Phones are hashed (keyed) in the source query itself,
    so a phone number never leaves the app database in the clear."""
    p = {
        "s": sql.Identifier(schema),
        "lo": sql.Literal(lo),
        "hi": sql.Literal(hi),
        "future": sql.Literal(future),
        "floor": sql.Literal(floor),
        "key": sql.Literal(phone_key),
    }
    message_window = (
        "(m.created_at >= {lo} and m.created_at < {hi}) or m.created_at is null or m.created_at > {future} "
        "or m.created_at < {floor}"
    )
    q = {
        "land_organizations": "select id, name, timezone, created_at::text from {s}.organizations",
        "land_bots": "select id, organization_id, name, llm_model, created_at::text, updated_at::text "
        "from {s}.bots",
        # the window's conversations, those swept up, and those its messages belong to: a union of
        # ids joined back (an OR with an IN-subquery can make PostgreSQL probe the subquery per row)
        "land_conversations": """
            with wanted as (
              select id from {s}.conversations where started_at >= {lo} and started_at < {hi}
              union select id from {s}.conversations
                where started_at is null or started_at > {future} or started_at < {floor}
              union select m.conversation_id from {s}.messages m where """ + message_window + """
            )
            select c.id, c.organization_id, c.bot_id,
              encode(sha256(convert_to({key} || ':' || c.customer_phone, 'UTF8')), 'hex'),
              right(c.customer_phone, 4), c.status, c.started_at::text, c.ended_at::text,
              c.handoff_at::text, c.customer_satisfaction, c.updated_at::text,
              case when c.started_at >= {lo} and c.started_at < {hi} then 'own'
                   when c.started_at is null or c.started_at > {future} or c.started_at < {floor} then 'swept'
                   else 'ref' end
            from {s}.conversations c join wanted w on w.id = c.id""",
        "land_messages": "select m.id, m.conversation_id, m.direction, m.created_at::text, m.response_time_ms, "
        "m.outcome, m.knowledge_base_hit, m.llm_model, m.prompt_tokens, m.completion_tokens, "
        "m.updated_at::text from {s}.messages m where " + message_window,
        "land_api_events": "select id, organization_id, bot_id, kind, occurred_at::text from {s}.api_events "
        "where (occurred_at >= {lo} and occurred_at < {hi}) or occurred_at is null or occurred_at > {future} "
        "or occurred_at < {floor}",
    }
    return {table: sql.SQL(text).format(**p) for table, text in q.items()}


@dataclass
class LoadReport:
    window_start: datetime
    window_end: datetime
    source_rows: dict[str, int] = field(default_factory=dict)
    loaded_rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # rule -> rows of the window
    swept: dict[str, int] = field(default_factory=dict)  # rule -> rows dated null, in the future or pre-partitions
    repaired: dict[str, int] = field(default_factory=dict)  # rule -> rows
    # hours of other windows whose rows a newer version moved here: their marts must be rebuilt
    stale_hours: set[datetime] = field(default_factory=set)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values()) + sum(self.swept.values())

    @property
    def repaired_total(self) -> int:
        return sum(self.repaired.values())

    def merge(self, other: LoadReport) -> None:
        self.window_start = min(self.window_start, other.window_start)
        self.window_end = max(self.window_end, other.window_end)
        for mine, theirs in ((self.source_rows, other.source_rows), (self.loaded_rows, other.loaded_rows),
                             (self.rejected, other.rejected), (self.repaired, other.repaired)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self.swept = dict(other.swept)  # every window sweeps the same rows: keep the latest count
        self.stale_hours |= other.stale_hours


SOURCE_TABLES = ("organizations", "bots", "conversations", "messages", "api_events")


class SourceError(Exception):
    """The source database is not as the contract (docs/contract/source.sql) describes it."""


# the source columns the loader reads (docs/contract/source.sql): the landed ones, the phone in the clear
SOURCE_COLUMNS = {table: tuple(dict.fromkeys("customer_phone" if c.startswith("customer_phone") else c
                                             for c in columns))
                  for table, columns in rules.LANDED_COLUMNS.items()}


def check_source_tables(source: psycopg.Connection, schema: str) -> None:
    """Every table and column the loader reads exists, or one error naming them and the settings."""
    found: dict[str, set[str]] = {}
    for table, column in source.execute(
            "select table_name, column_name from information_schema.columns where table_schema = %s", (schema,)):
        found.setdefault(table, set()).add(column)
    missing = [t for t in SOURCE_TABLES if t not in found]
    if missing:
        raise SourceError(
            f"source tables missing in schema {schema!r}: {', '.join(missing)} "
            f"(check BOTFLOW_SOURCE_URL and BOTFLOW_SOURCE_SCHEMA, or run `botflow simulate`)"
        )
    columns = [f"{t}.{c}" for t in SOURCE_TABLES for c in SOURCE_COLUMNS[t] if c not in found[t]]
    if columns:
        raise SourceError(
            f"source columns missing in schema {schema!r}: {', '.join(columns)} (the contract is "
            f"docs/contract/source.sql; check BOTFLOW_SOURCE_URL and BOTFLOW_SOURCE_SCHEMA)")


def _check_whole_hours(window: Window) -> None:
    """The loader's windows are whole hours (Window itself checks the time zone and emptiness)."""
    for bound in (window.start, window.end):
        if bound.minute or bound.second or bound.microsecond:
            raise ValueError(f"window bound {bound.isoformat()} is not on a whole hour")


def load_window(
    source: psycopg.Connection,
    warehouse: psycopg.Connection,
    *,
    source_schema: str,
    window: Window,
    run_id: str,
    phone_hash_key: str,
    now: datetime,
    floor: datetime,
    log: bool = True,
) -> LoadReport:
    """Load the window (whole hours) in one warehouse transaction; idempotent.

    `floor` is the first partition's start: rows dated before it belong to no partition and are swept
    into quarantine by every window, like those dated in the future.

    `log=False` skips the raw.ingest_log row (the live feed reloads the last two hours every few seconds).
    """
    _check_whole_hours(window)
    window_start, window_end = window.start, window.end
    future = now + FUTURE_TOLERANCE
    report = LoadReport(window_start, window_end)
    params = {"lo": window_start, "hi": window_end, "future": future, "floor": floor, "run_id": run_id}
    with warehouse.transaction(), warehouse.cursor() as wh:
        ensure_raw_schema(warehouse)
        # one writer of the raw layer at a time: windows overlap in the swept rows and dimensions
        wh.execute("select pg_advisory_xact_lock(hashtext('botflow.raw.load'))")
        wh.execute(LANDING_DDL)
        # a window's hash joins and sorts fit in memory instead of spilling (the default is 4 MB);
        # no JIT: these statements are short, and compiling one cost more than it saved (0.2 s)
        wh.execute("set local work_mem = '64MB'")
        wh.execute("set local jit = off")
        with source.transaction(), source.cursor() as src:
            src.execute("set transaction isolation level repeatable read, read only")
            # timestamps travel as text: ISO output parses the same whatever the warehouse's DateStyle
            src.execute("set local datestyle = 'ISO'")
            for table, query in source_queries(source_schema, window_start, window_end, future, floor,
                                               phone_hash_key).items():
                report.source_rows[table.removeprefix("land_")] = _copy_between(src, wh, query, table)
        # what the source held for each hour, as read: reconciliation compares it with the source later
        record_landed_figures(wh, params)
        for statement in rules.SUPERSEDE:  # duplicate ids: the newest version alone goes on
            wh.execute(statement, params)
        validate(warehouse, params)
        wh.execute(CLEAR_STALE, params)
        wh.execute(STALE_BY_BOT_MODEL, params)
        wh.execute(rules.STALE_BY_CHANGED_CONVERSATIONS, params)
        for table, statement in rules.LOAD:
            wh.execute(statement, params)
            if table:
                report.loaded_rows[table] = report.loaded_rows.get(table, 0) + max(wh.rowcount, 0)
        for table, statement in rules.REPLACE_VERSIONS.items():  # ids raw already holds, in another version
            valid = wh.execute(f"select count(*) from v_{table} where rejected_by is null").fetchone()[0]
            if report.loaded_rows.get(table, 0) < valid:
                replaced = wh.execute(statement, params).fetchall()
                report.loaded_rows[table] += len(replaced)
                report.stale_hours.update(hour for _, hours in replaced[:1] for hour in hours or ())
        if report.stale_hours:
            wh.execute(STALE_BY_MOVED_ROWS, {**params, "hours": sorted(report.stale_hours)})
        for statement in rules.QUARANTINE_AND_REPAIRS:
            wh.execute(statement, params)
        wh.execute(rules.REJECTED_COUNTS, params)
        for rule, swept, n in wh.fetchall():
            (report.swept if swept else report.rejected)[rule] = n
        wh.execute(rules.REPAIRED_COUNTS)
        report.repaired = {rule: n for rule, n in wh.fetchall()}
        if log:
            wh.execute(
                "insert into raw.ingest_log (window_start, window_end, run_id, source_rows, loaded_rows, "
                "rejected_rows, repaired_rows) values (%s, %s, %s, %s, %s, %s, %s)",
                (window_start, window_end, run_id, psycopg.types.json.Jsonb(report.source_rows),
                 psycopg.types.json.Jsonb(report.loaded_rows), report.rejected_total, report.repaired_total),
            )
    return report


def validate(warehouse: psycopg.Connection, params: dict) -> None:
    """Check the landed rows into the v_* tables: plain casts first, the row-by-row parser if one fails."""
    try:
        with warehouse.transaction(), warehouse.cursor() as wh:  # a savepoint
            for statement in rules.VALIDATE_STRICT:
                wh.execute(statement, params)
    except psycopg.errors.DataError:  # a timestamp does not parse: its row is rejected by its rule
        with warehouse.cursor() as wh:
            for statement in rules.VALIDATE:
                wh.execute(statement, params)


def _copy_between(src: psycopg.Cursor, dst: psycopg.Cursor, query: sql.Composed, table: str) -> int:
    """Stream the rows of `query` from the source into `table`; memory stays flat."""
    rows = 0
    copy_out = sql.SQL("copy ({}) to stdout").format(query)
    with src.copy(copy_out) as out, dst.copy(sql.SQL("copy {} from stdin").format(sql.Identifier(table))) as inp:
        for chunk in out:
            inp.write(chunk)
            rows += bytes(chunk).count(b"\n")
    return rows


def hour_chunks(window: Window, hours: int) -> list[Window]:
    """Split the window into windows of at most `hours` hours."""
    _check_whole_hours(window)
    chunks = []
    lo = window.start
    while lo < window.end:
        hi = min(lo + timedelta(hours=hours), window.end)
        chunks.append(Window(lo, hi))
        lo = hi
    return chunks


def load_range(
    source: psycopg.Connection,
    warehouse: psycopg.Connection,
    *,
    source_schema: str,
    window: Window,
    run_id: str,
    phone_hash_key: str,
    now: datetime,
    floor: datetime,
    chunk_hours: int = 24,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Load a range as a sequence of day-sized windows, each one transaction, then ANALYZE what grew."""
    check_source_tables(source, source_schema)
    source.rollback()
    total = LoadReport(window.start, window.end)
    chunks = hour_chunks(window, chunk_hours)
    for i, chunk in enumerate(chunks, 1):
        report = load_window(source, warehouse, source_schema=source_schema, window=chunk,
                             run_id=run_id, phone_hash_key=phone_hash_key, now=now, floor=floor)
        total.merge(report)
        if progress:
            progress(f"ingested [{chunk.start:%Y-%m-%d %H:%M}, {chunk.end:%Y-%m-%d %H:%M}) ({i}/{len(chunks)}): "
                     f"{report.loaded_rows.get('messages', 0)} messages, {report.rejected_total} rejected, "
                     f"{report.repaired_total} repaired")
    # a later chunk moved rows out of an earlier one (a newer version elsewhere): load that chunk again,
    # so that the range ends as it would in any other order (its quarantine included)
    again = [chunk for chunk in chunks if any(chunk.start <= hour < chunk.end for hour in total.stale_hours)]
    for chunk in again:
        load_window(source, warehouse, source_schema=source_schema, window=chunk,
                    run_id=run_id, phone_hash_key=phone_hash_key, now=now, floor=floor)
        if progress:
            progress(f"ingested [{chunk.start:%Y-%m-%d %H:%M}, {chunk.end:%Y-%m-%d %H:%M}) again: newer versions "
                     "of its rows were found in a later window")
    total.stale_hours = {hour for hour in total.stale_hours if not window.start <= hour < window.end}
    analyze_grown_tables(warehouse, total.loaded_rows)
    return total


ANALYZE_SHARE = 0.1  # autovacuum's default threshold (10%), applied at once: the next step's plans need it


def analyze_grown_tables(warehouse: psycopg.Connection, loaded_rows: dict[str, int]) -> list[str]:
    """ANALYZE the raw tables the load grew by 10% or more of their last row estimate (or that were
    never analyzed). Without statistics, the marts' plans go wrong: a daily partition took 170 s
    instead of 7 s after the first day was loaded (docs/performance.md). Returns the tables analyzed."""
    analyzed = []
    with warehouse.cursor() as cur:
        for table in ("conversations", "messages", "api_events"):
            cur.execute("select reltuples from pg_class where oid = %s::regclass", (f"raw.{table}",))
            estimate = cur.fetchone()[0]
            if loaded_rows.get(table, 0) > ANALYZE_SHARE * max(estimate, 0):
                cur.execute(sql.SQL("analyze raw.{}").format(sql.Identifier(table)))
                analyzed.append(table)
    warehouse.commit()
    return analyzed
