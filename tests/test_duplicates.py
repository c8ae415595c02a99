"""Duplicate keys in the source: the newest `updated_at` wins, in one window and across windows, in any
load order, and the superseded versions are kept in quarantine; never a failed load (issue #14).

The source here runs without its primary keys, as production sources may. First the loader window by
window (two warehouses, opposite orders); then a simulated source with duplicates built through
Dagster, every mart compared with the pandas oracle (which keeps the newest version of each id).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import oracle
import psycopg
import pytest
from conftest import (
    RUN_TAG,
    build_window,
    create_database,
    drop_database,
    drop_keys,
    lenient_quality_limits,
    module_scenario,
)
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.core.window import Window
from dagster_project.dev.simulate import create_source_tables, simulate
from dagster_project.ingest.loader import load_window
from dagster_project.ingest.rules import SUPERSEDED_RULE

ORG, BOT = uuid.UUID(int=1), uuid.UUID(int=2)
CONV = uuid.UUID(int=10)
H1 = datetime(2026, 4, 1, 10, tzinfo=UTC)
H2 = H1 + timedelta(hours=1)
T0 = datetime(2026, 4, 1, 12, tzinfo=UTC)  # updated_at of the first versions
NOW = datetime(2026, 5, 1, tzinfo=UTC)
SOURCE_TABLES = ("organizations", "bots", "conversations", "messages", "api_events")


def message(conn, n: int, created: datetime, updated: datetime, *, direction="outbound", outcome="success",
            tokens=10) -> None:
    conn.execute("insert into messages (id, conversation_id, direction, created_at, response_time_ms, outcome, "
                 "prompt_tokens, completion_tokens, updated_at) values (%s, %s, %s, %s, 100, %s, %s, 0, %s)",
                 (uuid.UUID(int=100 + n), CONV, direction, created, outcome if direction == "outbound" else None,
                  tokens, updated))


@pytest.fixture
def source_and_warehouses() -> Iterator[tuple]:
    names = [f"bf_test_dup_{part}_{RUN_TAG}" for part in ("src", "wh1", "wh2")]
    urls = [create_database(name) for name in names]
    with psycopg.connect(urls[0]) as src:
        create_source_tables(src, "public")
        drop_keys(src)
        src.execute("insert into organizations (id, name) values (%s, 'org'), (%s, 'org')", (ORG, ORG))  # twins
        src.execute("insert into bots (id, organization_id, name, llm_model, updated_at) values "
                    "(%s, %s, 'bot', 'gpt-4o', %s), (%s, %s, 'bot v2', 'gpt-4o-mini', %s)",
                    (BOT, ORG, T0, BOT, ORG, T0 + timedelta(hours=1)))
        src.execute("insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at, "
                    "updated_at, customer_satisfaction) values (%s, %s, %s, '+27820000000', 'active', %s, %s, null), "
                    "(%s, %s, %s, '+27820000000', 'resolved', %s, %s, 5)",
                    (CONV, ORG, BOT, H1, T0, CONV, ORG, BOT, H1, T0 + timedelta(hours=2)))
        # 1: two versions in one window, the newer last;  2: the newer first (insertion order must not matter)
        message(src, 1, H1, T0, tokens=1)
        message(src, 1, H1 + timedelta(minutes=5), T0 + timedelta(hours=1), tokens=2)
        message(src, 2, H1 + timedelta(minutes=5), T0 + timedelta(hours=1), tokens=2)
        message(src, 2, H1, T0, tokens=1)
        # 3: the newer version moved to the next window;  4: the older version in the next window
        message(src, 3, H1, T0, tokens=1)
        message(src, 3, H2, T0 + timedelta(hours=1), tokens=2)
        message(src, 4, H1, T0 + timedelta(hours=1), tokens=2)
        message(src, 4, H2, T0, tokens=1)
        # 5: the same updated_at in both windows, other values: a tie, broken the same way in any order
        message(src, 5, H1, T0, tokens=1)
        message(src, 5, H2, T0, tokens=2, outcome="failed")
        # 6: the newer version is invalid: the id is rejected, the older version is not loaded either
        message(src, 6, H1, T0, tokens=1)
        message(src, 6, H1 + timedelta(minutes=1), T0 + timedelta(hours=1), direction="sideways")
        src.execute("insert into api_events (id, organization_id, kind, occurred_at) overriding system value "
                    "values (7, %s, 'api_call', %s), (7, %s, 'api_call', %s)", (ORG, H1, ORG, H1))
        src.commit()
    with psycopg.connect(urls[0]) as src, psycopg.connect(urls[1]) as wh1, psycopg.connect(urls[2]) as wh2:
        yield src, wh1, wh2
    for name in names:
        drop_database(name)


def load(src, wh, hour: datetime):
    return load_window(src, wh, source_schema="public", window=Window(hour, hour + timedelta(hours=1)),
                       run_id="test", phone_hash_key="k", now=NOW, floor=datetime(2026, 1, 1, tzinfo=UTC))


def raw(wh, table: str) -> dict:
    cur = wh.execute(f"select * from raw.{table} order by id")
    cols = [d.name for d in cur.description]
    return {row[0]: {c: v for c, v in zip(cols, row, strict=True) if c not in ("_run_id", "_loaded_at")}
            for row in cur.fetchall()}


def test_duplicate_ids_load_the_newest_version_in_any_order(source_and_warehouses):
    src, wh1, wh2 = source_and_warehouses
    reports = [load(src, wh1, H1), load(src, wh1, H2)]  # in time order
    # the newer versions of 3 and 5 (if its tie went that way) moved them out of H1: H1 is stale
    assert H1 in reports[1].stale_hours
    load(src, wh1, H1)  # as change capture (or load_range) does: the stale hour again
    load(src, wh2, H2)  # the other order, twice: idempotent
    load(src, wh2, H1)
    load(src, wh2, H2)
    load(src, wh2, H1)
    messages = raw(wh1, "messages")
    tokens = {m.int - 100: row["prompt_tokens"] for m, row in messages.items()}
    assert tokens == {1: 2, 2: 2, 3: 2, 4: 2, 5: tokens[5]}  # 6 is rejected: no version of it is loaded
    assert messages[uuid.UUID(int=103)]["created_at"] == H2  # the newer version moved it to the next window
    assert messages[uuid.UUID(int=104)]["created_at"] == H1
    assert raw(wh1, "bots")[BOT]["name"] == "bot v2"
    assert raw(wh1, "conversations")[CONV]["status"] == "resolved"
    assert len(raw(wh1, "organizations")) == 1 and len(raw(wh1, "api_events")) == 1
    for table in SOURCE_TABLES:  # the same rows whatever the order, the tie included
        assert raw(wh1, table) == raw(wh2, table), table
    # every superseded version is in quarantine with its rule, once, in the window that saw it
    quarantine = wh1.execute("select source_table, source_id, partition_hour from raw.quarantine "
                             "where rule = %s order by 1, 2, 3", (SUPERSEDED_RULE,)).fetchall()
    loser_5 = H2 if tokens[5] == 1 else H1
    assert quarantine == sorted([
        ("api_events", "7", H1), ("bots", str(BOT), None), ("conversations", str(CONV), H1),
        ("messages", str(uuid.UUID(int=101)), H1), ("messages", str(uuid.UUID(int=102)), H1),
        ("messages", str(uuid.UUID(int=103)), H1), ("messages", str(uuid.UUID(int=104)), H2),
        ("messages", str(uuid.UUID(int=105)), loser_5), ("messages", str(uuid.UUID(int=106)), H1),
        ("organizations", str(ORG), None)])
    assert sorted(wh1.execute("select source_table, source_id, rule, partition_hour from raw.quarantine")) == sorted(
        wh2.execute("select source_table, source_id, rule, partition_hour from raw.quarantine"))
    assert reports[0].rejected[SUPERSEDED_RULE] >= 5  # in the run's report, hence its metadata
    assert wh1.execute("select rule from raw.quarantine where source_id = %s and rule <> %s",
                       (str(uuid.UUID(int=106)), SUPERSEDED_RULE)).fetchone() == ("message_direction_unknown",)


# -- end to end, against the oracle ---------------------------------------------------------------------
START = date(2026, 6, 1)
DAYS = 2


def add_duplicates(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Newer and older versions of existing rows, in the same hour and in other days."""
    drop_keys(conn)
    later, earlier = "updated_at + interval '1 hour'", "updated_at - interval '1 hour'"
    cols = ("id, conversation_id, direction, content, created_at, response_time_ms, outcome, knowledge_base_hit, "
            "llm_model, prompt_tokens, completion_tokens, updated_at")
    picked = [r[0] for r in conn.execute(
        "select id from messages where direction = 'outbound' and response_time_ms is not null order by id limit 60")]
    outbound = "from messages where id = any(%s)"  # three disjoint sets of 20 replies
    added = {}
    added["same hour, newer"] = conn.execute(
        f"insert into messages ({cols}) select id, conversation_id, direction, content, created_at, "
        f"response_time_ms + 777, 'failed', knowledge_base_hit, llm_model, prompt_tokens + 9, completion_tokens, "
        f"{later} {outbound} returning id::text", (picked[:20],)).fetchall()
    added["next day, newer"] = conn.execute(
        f"insert into messages ({cols}) select id, conversation_id, direction, content, created_at + interval '1 day', "
        f"response_time_ms, outcome, knowledge_base_hit, llm_model, prompt_tokens, completion_tokens, {later} "
        f"{outbound} returning id::text", (picked[20:40],)).fetchall()
    added["next day, older"] = conn.execute(
        f"insert into messages ({cols}) select id, conversation_id, direction, content, created_at + interval '1 day', "
        f"response_time_ms + 5000, outcome, knowledge_base_hit, llm_model, prompt_tokens, completion_tokens, "
        f"{earlier} {outbound} returning id::text", (picked[40:],)).fetchall()
    added["conversation, newer"] = conn.execute(
        "insert into conversations select id, organization_id, bot_id, customer_phone, 'resolved', started_at, "
        "coalesce(ended_at, started_at + interval '20 minutes'), handoff_at, 2, updated_at + interval '1 day' "
        "from conversations order by id limit 15 returning id::text").fetchall()
    added["bot, newer"] = conn.execute(
        "insert into bots select id, organization_id, name || ' (renamed)', 'gpt-4o', created_at, "
        "updated_at + interval '1 hour' from bots order by id limit 2 returning id::text").fetchall()
    added["api event, twin"] = conn.execute(
        "insert into api_events (id, organization_id, bot_id, kind, occurred_at) overriding system value "
        "select id, organization_id, bot_id, kind, occurred_at from api_events order by id limit 10 returning id::text"
    ).fetchall()
    conn.commit()
    return added


@pytest.fixture(scope="module")
def built(dagster_instance):
    with lenient_quality_limits(), module_scenario("dups") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", START, DAYS, seed=13, conversations_per_day=50)
            added = add_duplicates(conn)
        build_window(dagster_instance, START, START + timedelta(days=DAYS + 1))
        src = oracle.read_source(scenario.source_url)
        yield scenario, src, oracle.validate(src, datetime.now(UTC)), added


def test_a_source_with_duplicate_ids_builds_and_every_mart_equals_the_oracle(built):
    scenario, src, valid, added = built
    assert all(ids for ids in added.values()), added
    window = oracle.Window(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 4, tzinfo=UTC))
    for table, expected in (
        ("marts.conversation_metrics", oracle.conversation_metrics(valid, window)),
        ("marts.bot_performance_metrics", oracle.bot_performance_metrics(valid, window)),
        ("marts.usage_analytics", oracle.usage_analytics(valid, window, oracle.phone_map(src))),
    ):
        assert assert_equal_to_oracle(table, mart_rows(scenario.warehouse_url, table), expected) > 100
    with scenario.warehouse() as conn:
        rules = {}
        for source_id, rule in conn.execute("select source_id, rule from raw.quarantine"):
            rules.setdefault(source_id, set()).add(rule)
        renamed = conn.execute("select count(*) from marts.dim_bots where bot_name like '%%(renamed)'").fetchone()[0]
    duplicated = {i for ids in added.values() for (i,) in ids}
    superseded = {i for i, found in rules.items() if SUPERSEDED_RULE in found}
    assert superseded <= duplicated  # no other row is called superseded
    for case, ids in added.items():  # no version is dropped unseen: the superseded one is in quarantine,
        # unless both versions were rejected by a rule of their own (a message of a rejected conversation)
        unseen = {i for (i,) in ids} - superseded
        assert all(rules.get(i) for i in unseen), (case, unseen - set(rules))
        assert len(unseen) <= len(ids) // 4, (case, len(unseen))
    assert renamed == 2
