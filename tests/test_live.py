"""The live feed: the sensor launches one run when the source changed, the run's numbers are right."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import oracle
import pytest
from conftest import fetch_table, module_scenario, run_job

from dagster_project.core.resources import SourceDatabase
from dagster_project.core.window import Window
from dagster_project.dev.simulate import Trickle, create_source_tables, seed_directory
from dagster_project.live_definitions import defs


@pytest.fixture
def live(dagster_instance):
    """A source with the tables and the directory (organizations, bots) but no traffic, for each test."""
    with module_scenario("live") as (scenario,):
        with scenario.source() as conn:
            create_source_tables(conn, "public")
            seed_directory(conn, "public")
            conn.commit()
        yield scenario


def tick(instance, scenario, cursor):
    sensor = defs.resolve_sensor_def("live_feed_sensor")
    source = SourceDatabase(url=scenario.source_url, schema_name="public", phone_hash_key="k")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"source": source}) as context:
        result = sensor.evaluate_tick(context)
    return result, result.cursor


def test_sensor_runs_once_per_change_and_never_piles_up(live, dagster_instance):
    scenario = live
    scenario.activate()
    result, cursor = tick(dagster_instance, scenario, None)
    assert not result.run_requests and "no messages" in result.skip_message

    with scenario.source() as conn:
        trickle = Trickle(conn, "public", seed=3)
        for _ in range(5):
            trickle.step()
    result, cursor = tick(dagster_instance, scenario, cursor)
    assert len(result.run_requests) == 1 and result.run_requests[0].tags["botflow/reason"]
    result, cursor = tick(dagster_instance, scenario, cursor)  # nothing changed since
    assert not result.run_requests and "no source change" in result.skip_message

    # a live run is in progress: a new change is coalesced, not queued behind it
    live_job = defs.resolve_job_def("live_job")
    queued = dagster_instance.create_run_for_job(live_job, status=dg.DagsterRunStatus.STARTED)
    with scenario.source() as conn:
        Trickle(conn, "public", seed=4).step()
    result, cursor_after = tick(dagster_instance, scenario, cursor)
    assert not result.run_requests and "still in progress" in result.skip_message
    assert cursor_after == cursor  # the change is not forgotten
    dagster_instance.report_run_canceled(queued)
    result, _ = tick(dagster_instance, scenario, cursor)
    assert len(result.run_requests) == 1


def test_live_tables_match_a_computation_over_the_source_window(live, dagster_instance):
    scenario = live
    scenario.activate()
    now = datetime.now(UTC)
    org = uuid.UUID("0a000000-0000-0000-0000-0000000000aa")
    bot = uuid.UUID("0b000000-0000-0000-0000-0000000000bb")
    rows = [  # (conversation, status, messages [(minutes ago, direction, response_time_ms, outcome)])
        (1, "active", [(50, "inbound", None, None), (49.99, "outbound", None, "success")]),  # older than 30 min
        (2, "active", [(10, "inbound", None, None), (9.9, "outbound", 900, "failed"), (9, "inbound", None, None)]),
        (3, "resolved", [(5, "inbound", None, None), (4.5, "outbound", None, "success")]),
        (4, "active", [(90, "inbound", None, None), (20, "outbound", 100, None)]),  # inbound outside the hour
    ]
    with scenario.source() as conn:
        conn.execute("insert into organizations (id, name) values (%s, 'live org')", (org,))
        conn.execute("insert into bots (id, organization_id, name, llm_model) values (%s, %s, 'b', 'gpt-4o')",
                     (bot, org))
        for n, status, msgs in rows:
            conv = uuid.UUID(int=n)
            conn.execute("insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at,"
                         " updated_at) values (%s, %s, %s, %s, %s, %s, %s)",
                         (conv, org, bot, f"+2781000{n:04d}", status, now - timedelta(hours=2), now))
            for ago, direction, rt, outcome in msgs:
                conn.execute("insert into messages (id, conversation_id, direction, created_at, response_time_ms, "
                             "outcome, updated_at) values (gen_random_uuid(), %s, %s, %s, %s, %s, %s)",
                             (conv, direction, now - timedelta(minutes=ago), rt, outcome, now))
        conn.commit()
    # older hours come from the hourly partitions (the live run itself loads only the last two hours)
    from dagster_project.core.partitions import hourly_partitions
    from dagster_project.ingest.loader import load_window

    hour = now.replace(minute=0, second=0, microsecond=0)
    with scenario.source() as src, scenario.warehouse() as wh:
        load_window(src, wh, source_schema="public", window=Window(hour - timedelta(hours=3), hour),
                    run_id="hourly", phone_hash_key="k", now=now, floor=hourly_partitions.start)
    run_job(dagster_instance, "live_job", defs=defs)

    metrics = {r["organization_id"]: r for r in fetch_table(scenario.warehouse_url, "live.organization_metrics",
                                                            "organization_id")}
    m = metrics[org]
    refreshed = m["refreshed_at"]
    src = oracle.read_source(scenario.source_url)
    msgs = [r for r in src["messages"].to_dict("records")
            if r["conversation_id"].int in {1, 2, 3, 4} and r["created_at"] <= refreshed]
    convs = {r["id"]: r for r in src["conversations"].to_dict("records")}
    last_hour = [r for r in msgs if r["created_at"] > refreshed - timedelta(hours=1)]
    replies = [r for r in last_hour if r["direction"] == "outbound"]
    times = []
    for r in replies:
        if r["response_time_ms"] is not None:
            times.append(r["response_time_ms"])
            continue
        earlier = [x["created_at"] for x in msgs if x["conversation_id"] == r["conversation_id"]
                   and x["direction"] == "inbound" and x["created_at"] < r["created_at"]]
        if earlier:
            times.append((r["created_at"] - max(earlier)) // timedelta(milliseconds=1))
    with_outcome = [r for r in replies if r["outcome"]]
    active = {r["conversation_id"] for r in last_hour if convs[r["conversation_id"]]["status"] == "active"
              and r["created_at"] > refreshed - timedelta(minutes=30)}
    assert m["messages_last_hour"] == len(last_hour) == 8
    assert m["active_conversations"] == len(active) == 2
    assert m["avg_response_time_ms"] == oracle.avg_ms(times)
    assert m["success_rate"] == oracle.rate(sum(r["outcome"] == "success" for r in with_outcome), len(with_outcome))
    assert m["success_rate"] == Decimal("66.67")
    assert m["newest_message_at"] == max(r["created_at"] for r in last_hour)

    feed = [r for r in fetch_table(scenario.warehouse_url, "live.conversation_feed", "feed_rank")
            if r["organization_id"] == org]
    assert [r["conversation_id"].int for r in feed] == [3, 2, 4, 1]
    assert [r["message_count"] for r in feed] == [2, 3, 2, 2]
    assert feed[0]["customer_phone_masked"] == "***0003"
    assert all("+27" not in (r["customer_phone_masked"] or "") for r in feed)
