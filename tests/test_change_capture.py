"""Late and changed source rows reach the marts through the change-capture sensor, exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import dagster as dg
import oracle
import pytest
from conftest import build_window, lenient_quality_limits, module_scenario, run_job
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.definitions import defs
from dagster_project.resources import SourceDatabase
from dagster_project.simulate import simulate

START = date(2026, 6, 1)


def tick(instance, scenario, cursor):
    sensor = defs.resolve_sensor_def("change_capture_sensor")
    source = SourceDatabase(url=scenario.source_url, schema_name="public", phone_hash_key="k")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"source": source},
                                 definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    return result, result.cursor


@pytest.fixture(scope="module")
def captured(dagster_instance):
    with lenient_quality_limits(), module_scenario("cc") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", START, 2, seed=21, conversations_per_day=60)
        build_window(dagster_instance, START, date(2026, 6, 4))
        yield scenario


def test_changes_reach_the_marts_and_are_requested_once(captured, dagster_instance):
    scenario = captured
    scenario.activate()
    result, cursor = tick(dagster_instance, scenario, None)
    assert not result.run_requests and "starts from now" in result.skip_message
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
        return ts.strftime("%Y-%m-%d-%H:00")

    expected_hours = {"2026-06-02-10:00", "2026-06-02-11:00", hour_key(started), hour_key(ended),
                      hour_key(other_started), hour_key(other_ended)}
    result, cursor = tick(dagster_instance, scenario, cursor)
    hourly = [r for r in result.run_requests if r.job_name == "hourly_partition_job"]
    assert {r.partition_key for r in hourly} == expected_hours
    assert len(hourly) == len(expected_hours)  # coalesced: one request per partition
    assert not [r for r in result.run_requests if r.job_name == "daily_partition_job"]  # after the hourly runs
    assert all(r.tags["botflow/reason"] for r in hourly)
    for request in hourly:
        run_job(dagster_instance, "hourly_partition_job", partition_key=request.partition_key)

    result, cursor = tick(dagster_instance, scenario, cursor)
    daily = {r.partition_key for r in result.run_requests}
    assert {r.job_name for r in result.run_requests} == {"daily_partition_job"}
    assert daily == {"2026-06-01", "2026-06-02"} | {started.strftime("%Y-%m-%d"), other_ended.strftime("%Y-%m-%d")}
    for key in sorted(daily):
        run_job(dagster_instance, "daily_partition_job", partition_key=key)

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
