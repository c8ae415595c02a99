"""Partitions are idempotent: run twice, or in another order, they give the same rows."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest
from conftest import build_window, fetch_table, run_job, simulated_and_built
from marts_contract import MARTS
from oracle import half_up

START = date(2026, 5, 1)
RAW_KEYS = [dg.AssetKey(["raw", t]) for t in ("organizations", "bots", "conversations", "messages", "api_events")]
TABLES = {
    **{table: key for table, (_, key) in MARTS.items()},
    "marts.fct_bot_replies": ("message_id",),
    "raw.conversations": ("id",),
    "raw.messages": ("id",),
    "raw.api_events": ("id",),
    "raw.quarantine": ("source_table", "source_id", "rule"),
    "raw.repairs": ("source_table", "rule", "partition_hour"),
}
BOOKKEEPING = {"_run_id", "_loaded_at", "run_id", "quarantined_at", "counted_at"}


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every table's rows, without the columns that record which run wrote them."""
    import psycopg

    result = {}
    with psycopg.connect(url, options="-c timezone=UTC") as conn:
        for table, key in TABLES.items():
            cur = conn.execute(f"select * from {table} order by {', '.join(key)}")
            cols = [d.name for d in cur.description]
            keep = [i for i, c in enumerate(cols) if c not in BOOKKEEPING]
            result[table] = [tuple(row[i] for i in keep) for row in cur.fetchall()]
    return result


@pytest.fixture(scope="module")
def reference(dagster_instance):
    """One source and four warehouses: the first built now (the reference), the others by the tests that
    build them their own way. No test changes the source or another test's warehouse, so the tests
    pass in any order."""
    with simulated_and_built(dagster_instance, "idem", START, 2, seed=11, extra_warehouses=3) as (
            scenario, second, third, fourth):
        yield scenario, second, snapshot(scenario.warehouse_url), third, fourth


@pytest.fixture
def lost_hour(dagster_instance):
    """A source of its own (the same simulated days), built, for the test that deletes an hour of it."""
    with simulated_and_built(dagster_instance, "idem_gone", START, 2, seed=11) as (scenario,):
        yield scenario

def test_reference_build_has_rows(reference):
    _, _, ref, _, _ = reference
    for table in ("marts.conversation_metrics", "marts.usage_analytics", "raw.quarantine", "raw.repairs"):
        assert ref[table], f"{table} is empty"


def test_a_partition_run_twice_changes_nothing(reference, dagster_instance):
    scenario, _, ref, _, _ = reference
    scenario.activate()
    for _ in range(2):
        run_job(dagster_instance, "hourly_partition_job", partition_key="2026-05-01-14:00")
        run_job(dagster_instance, "daily_partition_job", partition_key="2026-05-02")
    assert snapshot(scenario.warehouse_url) == ref


def test_partitions_in_another_order_give_the_same_rows(reference, dagster_instance):
    """A fresh warehouse, raw hours loaded last day first, marts built in shuffled order."""
    _, second, ref, _, _ = reference
    second.activate()
    for day in ("2026-05-03", "2026-05-01", "2026-05-02"):
        run_job(dagster_instance, "hourly_partition_job", start=f"{day}-23:00", end=f"{day}-23:00",
                asset_selection=RAW_KEYS)
        run_job(dagster_instance, "hourly_partition_job", start=f"{day}-00:00", end=f"{day}-22:00",
                asset_selection=RAW_KEYS)
    run_job(dagster_instance, "dbt_views_job")
    hourly_marts = [dg.AssetKey(["marts", "fct_bot_replies"]), dg.AssetKey(["marts", "usage_analytics"]),
                    dg.AssetKey(["marts", "response_time_histogram"])]
    for start, end in (("2026-05-02-00:00", "2026-05-03-23:00"), ("2026-05-01-00:00", "2026-05-01-23:00")):
        run_job(dagster_instance, "hourly_partition_job", start=start, end=end, asset_selection=hourly_marts)
    for day in ("2026-05-03", "2026-05-01", "2026-05-02"):
        run_job(dagster_instance, "daily_partition_job", partition_key=day)
    assert snapshot(second.warehouse_url) == ref


def test_a_stopped_backfill_resumes_without_duplicates_or_gaps(reference, dagster_instance):
    """A backfill that stopped after its first day (raw and marts half built) is relaunched whole."""
    _, _, ref, third, _ = reference
    third.activate()
    run_job(dagster_instance, "dbt_views_job")
    run_job(dagster_instance, "hourly_partition_job", start="2026-05-01-00:00", end="2026-05-01-23:00")
    run_job(dagster_instance, "daily_partition_job", partition_key="2026-05-01")
    assert snapshot(third.warehouse_url) != ref  # stopped: not everything is there
    build_window(dagster_instance, START, date(2026, 5, 4))  # resume: relaunch the whole range
    assert snapshot(third.warehouse_url) == ref


def test_full_refresh_recomputes_costs_of_all_history(reference, dagster_instance):
    """After a price-list change, an ordinary partition run reprices only its window; the full refresh
    reprices every reply of every day."""
    *_, fourth = reference
    fourth.activate()
    build_window(dagster_instance, START, date(2026, 5, 4))
    full_refresh_reprices_all_history(fourth, dagster_instance, START)


def full_refresh_reprices_all_history(built, dagster_instance, start: date) -> None:
    """The warehouse `built` holds the three days from `start` (test_spark_engine.py: built on Spark); its prices
    are doubled, an hour of `start` rebuilt, then everything refreshed."""
    from datetime import timedelta

    from dagster_project.automation.runner import refresh_marts
    from dagster_project.definitions import defs

    fourth = built

    def costs():
        return {r["message_id"]: (r["cost_usd"], r["created_at"])
                for r in fetch_table(fourth.warehouse_url, "marts.fct_bot_replies", "message_id")}

    before = costs()
    with fourth.warehouse() as conn:
        conn.execute("update reference.llm_prices set prompt_price_per_1k = 2 * prompt_price_per_1k, "
                     "completion_price_per_1k = 2 * completion_price_per_1k")
        conn.commit()
    run_job(dagster_instance, "hourly_partition_job", partition_key=f"{start}-10:00")
    partial = costs()
    changed = {k for k in before if partial[k][0] != before[k][0]}
    assert changed and all(before[k][1].strftime("%Y-%m-%d %H") == f"{start} 10" for k in changed)
    refresh_marts(defs, dagster_instance, start, start + timedelta(days=3), progress=lambda _: None)
    after = costs()
    assert after.keys() == before.keys()
    assert all(after[k][0] == 2 * before[k][0] for k in before)
    per_conversation: dict = {}
    for row in fetch_table(fourth.warehouse_url, "marts.fct_bot_replies", "message_id"):
        per_conversation[row["conversation_id"]] = per_conversation.get(row["conversation_id"], 0) + row["cost_usd"]
    for row in fetch_table(fourth.warehouse_url, "marts.conversation_metrics", "conversation_id"):
        expected = per_conversation.get(row["conversation_id"], 0)
        assert row["estimated_cost_usd"] == half_up(expected, 6)


def test_a_window_that_now_yields_nothing_leaves_no_stale_rows(lost_hour, dagster_instance):
    """The app deletes an hour's data: re-running that hour removes its rows from every layer."""
    scenario = lost_hour
    scenario.activate()
    ref = snapshot(scenario.warehouse_url)
    hour = "2026-05-02 15:00+00"
    with scenario.source() as conn:
        conn.execute("delete from messages where created_at >= %s and created_at < %s::timestamptz + interval '1 hour'",
                     (hour, hour))
        conn.execute("delete from api_events where occurred_at >= %s and occurred_at < %s::timestamptz + interval "
                     "'1 hour'", (hour, hour))
        conn.execute("delete from conversations where (started_at >= %s and started_at < %s::timestamptz + "
                     "interval '1 hour') or (ended_at >= %s and ended_at < %s::timestamptz + interval '1 hour')",
                     (hour, hour, hour, hour))
        conn.commit()
    before = [r for r in ref["marts.usage_analytics"] if str(r[2]).startswith("2026-05-02 15:00")]
    assert before, "the reference has usage rows in that hour"
    run_job(dagster_instance, "hourly_partition_job", partition_key="2026-05-02-15:00")
    after = snapshot(scenario.warehouse_url)
    assert not [r for r in after["marts.usage_analytics"] if str(r[2]).startswith("2026-05-02 15:00")]
    assert not [r for r in after["marts.fct_bot_replies"] if str(r[4]).startswith("2026-05-02 15:")]
