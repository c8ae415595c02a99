"""The loader, window by window: its row checks and how a window's rows replace earlier loads.

A typed source only sends timestamps that parse, so the end-to-end tests only reach the checks'
fast path (plain casts). Here landing rows are written by hand, with timestamps that do not parse,
to reach the fallback. Then a real source: rows that move to another window, or become invalid,
after a window was loaded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import RUN_TAG, create_database, drop_database

from dagster_project.core.window import Window
from dagster_project.dev.simulate import create_source_tables
from dagster_project.ingest import rules
from dagster_project.ingest.loader import LANDING_DDL, analyze_grown_tables, load_range, load_window, validate
from dagster_project.ingest.schema import ensure_raw_schema

ORG, BOT = uuid.UUID(int=1), uuid.UUID(int=2)
PARAMS = {"future": "2026-05-01 00:00:00+00", "floor": "2026-01-01 00:00:00+00"}
FLOOR = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = "2026-04-01 10:00:00+00"
HOUR = datetime(2026, 4, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def warehouse_url() -> Iterator[str]:
    name = f"botflow_test_checks_{RUN_TAG}"
    url = create_database(name)
    with psycopg.connect(url) as conn:
        ensure_raw_schema(conn)
    yield url
    drop_database(name)


@pytest.fixture
def source_and_warehouse() -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    names = [f"botflow_test_loader_{part}_{RUN_TAG}" for part in ("src", "wh")]
    urls = [create_database(name) for name in names]
    with psycopg.connect(urls[0]) as src, psycopg.connect(urls[1]) as wh:
        create_source_tables(src, "public")
        src.execute("insert into organizations (id, name) values (%s, 'org')", (ORG,))
        src.execute("insert into bots (id, organization_id, name) values (%s, %s, 'bot')", (BOT, ORG))
        for n in (1, 2):
            src.execute("insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at) "
                        "values (%s, %s, %s, '+27820000000', 'active', %s)", (uuid.UUID(int=10 + n), ORG, BOT, HOUR))
        for n in (1, 2):
            src.execute("insert into messages (id, conversation_id, direction, created_at) "
                        "values (%s, %s, 'inbound', %s)", (uuid.UUID(int=20 + n), uuid.UUID(int=11), HOUR))
        src.commit()
        yield src, wh
    for name in names:
        drop_database(name)


def load(src: psycopg.Connection, wh: psycopg.Connection, hour: datetime) -> None:
    load_window(src, wh, source_schema="public", window=Window(hour, hour + timedelta(hours=1)),
                run_id="test", phone_hash_key="k", now=datetime(2026, 5, 1, tzinfo=UTC), floor=FLOOR)


def raw_ids(wh: psycopg.Connection, table: str) -> list[str]:
    return [str(r[0]) for r in wh.execute(f"select id from raw.{table} order by id")]


def land(conn: psycopg.Connection, *, ended_at: str, created_at: str, occurred_at: str) -> None:
    """One organization and bot, two conversations, two messages and one API event, by hand."""
    conn.execute(LANDING_DDL)
    conn.execute("insert into land_organizations values (%s, 'org', 'UTC', %s)", (ORG, GOOD))
    conn.execute("insert into land_bots values (%s, %s, 'bot', 'gpt-4o-mini', %s, %s)", (BOT, ORG, GOOD, GOOD))
    for n, ended in ((1, None), (2, ended_at)):
        conn.execute(
            "insert into land_conversations values (%s, %s, %s, 'h', '0001', 'resolved', %s, %s, null, 4, %s, 'own')",
            (uuid.UUID(int=10 + n), ORG, BOT, GOOD, ended, GOOD))
    for n, created in ((1, GOOD), (2, created_at)):
        conn.execute(
            "insert into land_messages values (%s, %s, 'inbound', %s, null, null, null, null, 0, 0, %s)",
            (uuid.UUID(int=20 + n), uuid.UUID(int=11), created, GOOD))
    conn.execute("insert into land_api_events values (1, %s, %s, 'api_call', %s)", (ORG, BOT, occurred_at))


def checked_rows(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {table: conn.execute(f"select * from {table} order by id").fetchall()
            for table in ("v_conversations", "v_messages", "v_api_events")}


def rejections(conn: psycopg.Connection) -> dict[str, str | None]:
    return {str(row[0]): row[1] for table in ("v_conversations", "v_messages", "v_api_events")
            for row in conn.execute(f"select id, rejected_by from {table}")}


def test_unparsable_timestamps_fall_back_and_reject_their_rows(warehouse_url):
    with psycopg.connect(warehouse_url) as conn, conn.transaction(force_rollback=True):
        land(conn, ended_at="yesterday-ish", created_at="2026-02-30 10:00:00+00", occurred_at="soon")
        with pytest.raises(psycopg.errors.DataError), conn.transaction(), conn.cursor() as cur:
            for statement in rules.VALIDATE_STRICT:  # the fast path alone fails on these rows
                cur.execute(statement, PARAMS)
        validate(conn, PARAMS)
        assert rejections(conn) == {
            str(uuid.UUID(int=11)): None,
            str(uuid.UUID(int=12)): "conversation_timestamp_unparsable",
            str(uuid.UUID(int=21)): None,
            str(uuid.UUID(int=22)): "message_created_at_invalid",
            "1": "api_event_occurred_at_invalid",
        }


def test_fast_path_equals_the_row_by_row_checks_when_every_timestamp_parses(warehouse_url):
    by_path = []
    for statements in (rules.VALIDATE_STRICT, rules.VALIDATE):
        with psycopg.connect(warehouse_url) as conn, conn.transaction(force_rollback=True):
            land(conn, ended_at="2026-04-01 09:00:00+00", created_at="2026-04-01 11:00:00+02",
                 occurred_at="2099-01-01 00:00:00+00")
            for statement in statements:
                conn.execute(statement, PARAMS)
            by_path.append(checked_rows(conn))
            assert rejections(conn)[str(uuid.UUID(int=12))] == "conversation_ended_before_started"
            assert rejections(conn)["1"] == "api_event_occurred_at_future"
    assert by_path[0] == by_path[1]


def test_a_message_moved_to_another_window_is_loaded_once_with_its_new_values(source_and_warehouse):
    src, wh = source_and_warehouse
    load(src, wh, HOUR)
    later = HOUR + timedelta(hours=1)
    # the app bumps updated_at on every change (docs/contract/source.sql): the newer version wins
    src.execute("update messages set created_at = %s, direction = 'outbound', outcome = 'success', "
                "prompt_tokens = 7, updated_at = updated_at + interval '1 second' where id = %s",
                (later + timedelta(minutes=5), uuid.UUID(int=22)))
    src.commit()
    load(src, wh, later)
    rows = wh.execute("select id, created_at, direction, prompt_tokens from raw.messages order by id").fetchall()
    assert rows == [(uuid.UUID(int=21), HOUR, "inbound", 0),
                    (uuid.UUID(int=22), later + timedelta(minutes=5), "outbound", 7)]
    load(src, wh, HOUR)  # its old window again, now without it
    assert wh.execute("select count(*) from raw.messages").fetchone()[0] == 2


def test_rows_that_become_invalid_leave_the_raw_layer_from_any_window(source_and_warehouse):
    src, wh = source_and_warehouse
    load(src, wh, HOUR)
    assert raw_ids(wh, "conversations") == [str(uuid.UUID(int=11)), str(uuid.UUID(int=12))]
    # a null timestamp belongs to no window: every run sweeps the row into quarantine
    src.execute("update messages set created_at = null, updated_at = updated_at + interval '1 second' "
                "where id = %s", (uuid.UUID(int=22),))
    src.execute("update conversations set started_at = null, updated_at = updated_at + interval '1 second' "
                "where id = %s", (uuid.UUID(int=12),))
    src.commit()
    load(src, wh, HOUR + timedelta(hours=5))  # another window
    assert raw_ids(wh, "messages") == [str(uuid.UUID(int=21))]
    assert raw_ids(wh, "conversations") == [str(uuid.UUID(int=11))]
    rules_found = dict(wh.execute("select source_id, rule from raw.quarantine").fetchall())
    assert rules_found == {str(uuid.UUID(int=22)): "message_created_at_invalid",
                           str(uuid.UUID(int=12)): "conversation_started_at_invalid"}


def test_a_load_analyzes_the_raw_tables_it_grew_by_a_tenth(source_and_warehouse):
    src, wh = source_and_warehouse
    load_range(src, wh, source_schema="public", window=Window(HOUR, HOUR + timedelta(hours=1)), run_id="test",
               phone_hash_key="k", now=datetime(2026, 5, 1, tzinfo=UTC), floor=FLOOR)
    estimates = dict(wh.execute("select relname, reltuples from pg_class "
                                "where relnamespace = 'raw'::regnamespace and relkind = 'r'").fetchall())
    assert estimates["messages"] == 2 and estimates["conversations"] == 2  # analyzed: they grew from nothing
    assert estimates["api_events"] == -1  # nothing loaded: left alone
    assert analyze_grown_tables(wh, {"messages": 0, "conversations": 0}) == []
    assert analyze_grown_tables(wh, {"messages": 1}) == ["messages"]  # 1 > 10% of 2


def stale_hours(wh: psycopg.Connection) -> list[datetime]:
    hours = [row[0] for row in wh.execute("select hour from raw.stale_hours order by hour")]
    wh.commit()
    return hours


def test_a_conversation_that_leaves_or_changes_marks_the_hours_that_counted_it(source_and_warehouse):
    """Its end, handoff and message hours outside the window count the old version until rebuilt."""
    src, wh = source_and_warehouse
    gone, moved = uuid.UUID(int=11), uuid.UUID(int=12)
    at = {n: HOUR + timedelta(hours=n, minutes=30) for n in range(8)}
    src.execute("update conversations set status = 'resolved', ended_at = %s where id = %s", (at[3], gone))
    src.execute("insert into messages (id, conversation_id, direction, created_at) values (%s, %s, 'inbound', %s)",
                (uuid.UUID(int=23), gone, at[2]))
    src.execute("update conversations set status = 'resolved', ended_at = %s, handoff_at = %s where id = %s",
                (at[1], at[1], moved))
    src.commit()
    for hour in (0, 1, 2, 3):
        load(src, wh, HOUR + timedelta(hours=hour))
    assert stale_hours(wh) == []  # a clean build marks nothing
    # the app deletes a conversation; its later message hour is loaded again first (a change capture run)
    src.execute("delete from messages where conversation_id = %s", (gone,))
    src.execute("delete from conversations where id = %s", (gone,))
    src.execute("update conversations set ended_at = %s, updated_at = updated_at + interval '1 second' "
                "where id = %s", (at[6], moved))
    src.commit()
    load(src, wh, HOUR + timedelta(hours=2))
    assert stale_hours(wh) == []
    load(src, wh, HOUR)  # then its start hour
    # the deleted one's end (3) and the moved end's old (1) and new (6) hours; its handoff (1) stayed
    assert stale_hours(wh) == [HOUR + timedelta(hours=n) for n in (1, 3, 6)]
    load(src, wh, HOUR)  # the same window again: raw holds the newest versions now
    wh.execute("delete from raw.stale_hours")
    wh.commit()
    load(src, wh, HOUR)
    assert stale_hours(wh) == []
