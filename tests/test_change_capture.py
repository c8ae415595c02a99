"""Late and changed source rows reach the marts through the change-capture sensor, exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import oracle
import psycopg
import pytest
from conftest import (
    RUN_TAG,
    create_database,
    drop_database,
    requested,
    run_request,
    simulated_and_built,
    tick,
    tick_source,
)
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.dev.simulate import create_source_tables

START = date(2026, 6, 1)
HOUR, DAY = "%Y-%m-%d-%H:%M", "%Y-%m-%d"


def clusters(keys: set[str], key_format: str, gap: timedelta) -> list[tuple[str, str]]:
    """The ranges the sensor must request: sorted keys, split where two are more than `gap` apart."""
    times = sorted(datetime.strptime(k, key_format) for k in keys)
    out = [[times[0], times[0]]]
    for t in times[1:]:
        if t - out[-1][1] > gap:
            out.append([t, t])
        else:
            out[-1][1] = t
    return [(a.strftime(key_format), b.strftime(key_format)) for a, b in out]


@pytest.fixture(scope="module")
def captured(dagster_instance):
    with simulated_and_built(dagster_instance, "cc", START, 2, seed=21) as (scenario,):
        yield scenario


def test_changes_reach_the_marts_and_are_requested_once(captured, dagster_instance):
    changes_reach_the_marts_once(captured, dagster_instance)


def changes_reach_the_marts_once(scenario, dagster_instance) -> None:
    """Late messages and changed conversations of `scenario` (START's two days, built) requested by the sensor
    and run (test_spark_engine.py: with BOTFLOW_ENGINE=spark), then the marts compared with the oracle."""
    scenario.activate()
    result, cursor = tick(dagster_instance, scenario, None)
    assert not result.run_requests and "starts from the source's newest change" in result.skip_message
    result, cursor = tick(dagster_instance, scenario, cursor)
    assert not result.run_requests and "no source change" in result.skip_message

    with scenario.source() as conn:
        # a conversation that started on June 1st and ended that day; another one for status and CSAT
        conv, started, ended = conn.execute(
            "select id, started_at, ended_at from conversations where started_at::date = '2026-06-01' and "
            "status = 'resolved' and ended_at::date = '2026-06-01' order by id limit 1").fetchone()
        other, other_started, other_ended = conn.execute(
            "select id, started_at, ended_at from conversations where started_at::date = '2026-06-02' and "
            "status = 'resolved' and customer_satisfaction is null and id <> %s order by id limit 1",
            (conv,)).fetchone()
        late = [(uuid.uuid4(), "inbound", datetime(2026, 6, 2, 10, 15, tzinfo=UTC), None, None),
                (uuid.uuid4(), "outbound", datetime(2026, 6, 2, 10, 15, 2, tzinfo=UTC), None, "success"),
                (uuid.uuid4(), "outbound", datetime(2026, 6, 2, 11, 0, 1, tzinfo=UTC), -20, "failed"),  # repaired
                (uuid.uuid4(), "sideways", datetime(2026, 6, 2, 11, 5, tzinfo=UTC), None, None)]  # rejected
        for mid, direction, created, rt, outcome in late:  # a phone that was offline syncs late
            conn.execute("insert into messages (id, conversation_id, direction, created_at, response_time_ms, "
                         "outcome, prompt_tokens, completion_tokens, updated_at) values "
                         "(%s, %s, %s, %s, %s, %s, 10, 5, now())", (mid, conv, direction, created, rt, outcome))
        conn.execute("update conversations set customer_satisfaction = 2, updated_at = now() where id = %s", (conv,))
        conn.execute("update conversations set status = 'escalated', customer_satisfaction = 9, updated_at = now() "
                     "where id = %s", (other,))
        conn.commit()

    def hour_key(ts):
        return ts.replace(minute=0, second=0, microsecond=0).strftime(HOUR)

    expected_hours = {"2026-06-02-10:00", "2026-06-02-11:00", hour_key(started), hour_key(ended),
                      hour_key(other_started), hour_key(other_ended)}
    result, cursor = tick(dagster_instance, scenario, cursor)
    hourly = [r for r in result.run_requests if r.job_name == "hourly_partition_job"]
    # coalesced: one range run per stretch of changed hours no more than 12 hours apart
    assert sorted(requested(r) for r in hourly) == clusters(expected_hours, HOUR, timedelta(hours=12))
    assert len(hourly) < len(expected_hours)
    assert not [r for r in result.run_requests if r.job_name == "daily_partition_job"]  # after the hourly runs
    assert all(r.tags["botflow/reason"] for r in hourly)
    for request in hourly:
        run_request(dagster_instance, request)

    result, cursor = tick(dagster_instance, scenario, cursor)
    expected_days = {"2026-06-01", "2026-06-02"} | {started.strftime(DAY), other_ended.strftime(DAY)}
    assert {r.job_name for r in result.run_requests} == {"daily_partition_job"}
    assert sorted(requested(r) for r in result.run_requests) == clusters(expected_days, DAY, timedelta(days=2))
    assert len(result.run_requests) == 1  # the days are adjacent: one range run
    for request in result.run_requests:
        run_request(dagster_instance, request)

    result, cursor = tick(dagster_instance, scenario, cursor)  # the same changes, inside the overlap window
    assert not result.run_requests, [r.partition_key for r in result.run_requests]

    src = oracle.read_source(scenario.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    window = oracle.Window(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 4, tzinfo=UTC))
    for table, expected in (
        ("marts.conversation_metrics", oracle.conversation_metrics(valid, window)),
        ("marts.bot_performance_metrics", oracle.bot_performance_metrics(valid, window)),
        ("marts.usage_analytics", oracle.usage_analytics(valid, window, oracle.phone_map(src))),
    ):
        assert_equal_to_oracle(table, mart_rows(scenario.warehouse_url, table), expected)
    row = mart_rows(scenario.warehouse_url, "marts.conversation_metrics")[conv]
    assert row["customer_satisfaction"] == 2 and row["total_messages"] >= 4
    assert mart_rows(scenario.warehouse_url, "marts.conversation_metrics")[other]["handoff_triggered"]
    with scenario.warehouse() as wh:
        rules = {r for (r,) in wh.execute("select rule from raw.quarantine where source_id = %s", (str(late[3][0]),))}
    assert rules == {"message_direction_unknown"}


@pytest.fixture
def skewed_source():
    """A source whose newest change is months behind the Dagster host's clock, as after an import."""
    name = f"bf_test_cc_skew_{RUN_TAG}"
    url = create_database(name)
    with psycopg.connect(url) as conn:
        create_source_tables(conn, "public")
        org, bot, conv = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        conn.execute("insert into organizations (id, name) values (%s, 'org')", (org,))
        conn.execute("insert into bots (id, organization_id, name) values (%s, %s, 'bot')", (bot, org))
        conn.execute("insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at, "
                     "updated_at) values (%s, %s, %s, '+27820000000', 'active', '2026-06-01 08:00+00', "
                     "'2026-06-01 08:00+00')", (conv, org, bot))
    yield url, conv
    drop_database(name)


def add_message(url: str, conv, created: str, updated: str = "now") -> None:
    """A message created at `created` and stamped `updated` (by default the source's clock, now())."""
    with psycopg.connect(url) as conn:
        conn.execute("insert into messages (id, conversation_id, direction, created_at, updated_at) "
                     "values (%s, %s, 'inbound', %s, %s::timestamptz)", (uuid.uuid4(), conv, created, updated))


def hourly_keys(result) -> list[tuple[str, str]]:
    return sorted(requested(r) for r in result.run_requests if r.job_name == "hourly_partition_job")


def test_the_cursor_is_the_sources_high_water_mark_not_the_hosts_clock(skewed_source, dagster_instance):
    url, conv = skewed_source
    result, cursor = tick_source(dagster_instance, url, None)
    assert "2026-06-01T08:00:00+00:00" in result.skip_message  # the source's newest change, not now
    # rows stamped six months behind the host's clock but after the source's mark: a host-clock cursor
    # (the mark minus 10 minutes of overlap) never saw them
    add_message(url, conv, "2026-06-01 09:10+00", "2026-06-01 09:30+00")
    result, cursor = tick_source(dagster_instance, url, cursor)
    assert hourly_keys(result) == [("2026-06-01-09:00", "2026-06-01-09:00")]
    # a late commit inside the overlap is found; the rows seen before are not requested again
    add_message(url, conv, "2026-06-01 11:20+00", "2026-06-01 09:25+00")
    result, cursor = tick_source(dagster_instance, url, cursor)
    assert hourly_keys(result) == [("2026-06-01-11:00", "2026-06-01-11:00")]
    # an app server whose clock runs a day ahead: its row is found once, and it does not hide the rows
    # stamped after it by the source's own clock (the mark stops at the source's now())
    add_message(url, conv, "2026-06-02 04:00+00", str(datetime.now(UTC) + timedelta(days=1)))
    result, cursor = tick_source(dagster_instance, url, cursor)
    assert hourly_keys(result) == [("2026-06-02-04:00", "2026-06-02-04:00")]
    add_message(url, conv, "2026-06-02 05:00+00")
    add_message(url, conv, "2026-06-02 06:00+00")
    result, cursor = tick_source(dagster_instance, url, cursor)
    assert hourly_keys(result) == [("2026-06-02-05:00", "2026-06-02-06:00")]  # one range run
    result, cursor = tick_source(dagster_instance, url, cursor)
    assert hourly_keys(result) == []
