"""End to end: simulate, `botflow run` through Dagster, compare every value with the pandas oracle."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import oracle
import pytest
from conftest import build_window, engine_environment, fetch_table
from marts_contract import CONVERSATION_METRICS, assert_equal_to_oracle, mart_rows

from dagster_project.dev.simulate import simulate

START = date(2026, 3, 1)
DAYS = 3


@contextmanager
def simulated_and_built(instance, engine: str) -> Iterator[tuple]:
    """Databases of their own, DAYS simulated and built through Dagster with BOTFLOW_ENGINE=`engine`."""
    from conftest import RUN_TAG, Scenario, create_database, database_url, drop_database

    names = [f"bf_test_e2e_{engine}_src_{RUN_TAG}", f"bf_test_e2e_{engine}_wh_{RUN_TAG}"]
    for name in names:
        create_database(name)
    scenario = Scenario(f"e2e_{engine}", database_url(names[0]), database_url(names[1]))
    scenario.activate()
    with scenario.source() as conn:
        summary = simulate(conn, "public", START, DAYS, seed=7, conversations_per_day=150)
    # one day more than simulated: conversations that cross the last midnight end in it
    with engine_environment(engine):
        build_window(instance, START, START + timedelta(days=DAYS + 1))
    src = oracle.read_source(scenario.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    window = oracle.Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))
    try:
        yield scenario, summary, src, valid, window
    finally:
        for name in names:
            drop_database(name)


@pytest.fixture(scope="module")
def built(dagster_instance):
    with simulated_and_built(dagster_instance, "postgres") as result:
        yield result


@pytest.fixture(scope="module")
def marts_built(built):
    """The marts the tests compare with the oracle (test_spark_engine.py: built on Spark)."""
    return built


def test_conversation_metrics_equal_oracle(marts_built):
    scenario, _, _, valid, window = marts_built
    expected = oracle.conversation_metrics(valid, window)
    assert len(expected) > 300
    compared = assert_equal_to_oracle(
        "marts.conversation_metrics", mart_rows(scenario.warehouse_url, "marts.conversation_metrics"), expected)
    assert compared == len(expected) * len(CONVERSATION_METRICS)
    # the service metrics' cases occur in the simulated traffic: met and missed SLAs, no verdict (no target,
    # or no first response), business time shorter than wall time (closed hours, a holiday), and equal to it
    rows = expected.values()
    assert {r["sla_first_response_met"] for r in rows} == {True, False, None}
    timed = [r for r in rows if r["first_response_time_ms"] is not None]
    assert any(r["first_response_business_ms"] < r["first_response_time_ms"] for r in timed)
    assert any(r["first_response_business_ms"] == r["first_response_time_ms"] > 0 for r in timed)
    resolved = [r for r in rows if r["resolution_time_secs"] is not None]
    assert any(r["resolution_business_secs"] < r["resolution_time_secs"] for r in resolved)


def test_bot_performance_metrics_equal_oracle(marts_built):
    scenario, _, _, valid, window = marts_built
    expected = oracle.bot_performance_metrics(valid, window)
    assert len(expected) >= 30
    assert_equal_to_oracle("marts.bot_performance_metrics",
                           mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics"), expected)


def test_bot_performance_metrics_local_equal_oracle(marts_built):
    """Local days of the simulator's zones (+05:30, +02:00, -03:00, London): the first and last of the window are
    partial (the rows loaded), the others whole; every row is its local day's."""
    scenario, _, _, valid, window = marts_built
    expected = oracle.bot_performance_metrics_local(valid, window)
    assert {row["timezone"] for row in expected.values()} >= {"Asia/Kolkata", "Europe/London"}
    assert expected.keys() != oracle.bot_performance_metrics(valid, window).keys()  # more local days than UTC ones
    assert_equal_to_oracle("marts.bot_performance_metrics_local",
                           mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics_local"), expected)


def test_response_time_histogram_equals_oracle(marts_built):
    scenario, _, _, valid, window = marts_built
    expected = oracle.response_time_histogram(valid, window)
    assert {key[2] for key in expected} >= {250, 500, 1000, 2000, 3000}  # the simulated traffic fills the buckets
    assert_equal_to_oracle("marts.response_time_histogram",
                           mart_rows(scenario.warehouse_url, "marts.response_time_histogram"), expected)


def test_usage_analytics_equal_oracle(marts_built):
    scenario, _, src, valid, window = marts_built
    expected = oracle.usage_analytics(valid, window, oracle.phone_map(src))
    assert len(expected) > 250
    assert_equal_to_oracle("marts.usage_analytics", mart_rows(scenario.warehouse_url, "marts.usage_analytics"),
                           expected)


def test_simulated_traffic_has_the_edge_cases_the_oracle_must_cover(built):
    _, summary, _, valid, window = built
    messages, conversations = oracle.in_scope(valid, window)
    replies = [m for m in messages if m["direction"] == "outbound"]
    assert any(m["response_time_ms"] is None and m["response_time"] is not None for m in replies)
    assert any(m["response_time"] is None for m in replies)  # a greeting: no earlier inbound
    assert any(c["ended_at"] and c["ended_at"].date() != c["started_at"].date() for c in conversations.values())
    days_of = {}
    for m in messages:
        days_of.setdefault(m["conversation_id"], set()).add(m["created_at"].date())
    assert sum(len(days) > 1 for days in days_of.values()) >= 3  # conversations across midnight
    assert any(m["model"] == "botflow-experimental" for m in replies)  # unpriced: costs 0
    assert all(n > 0 for n in summary.bad_rows.values()), summary.bad_rows


def test_every_rejected_source_row_is_in_quarantine_and_nowhere_else(built):
    scenario, _, _, valid, _ = built
    quarantined = {(r["source_table"], r["source_id"]) for r in
                   fetch_table(scenario.warehouse_url, "raw.quarantine", "source_table, source_id")}
    for table, ids in valid.rejected.items():
        assert ids, f"the simulator wrote no bad {table}"
        for row_id in ids:
            assert (table, str(row_id)) in quarantined, f"rejected {table} {row_id} is not in quarantine"
    replies = {r["message_id"] for r in fetch_table(scenario.warehouse_url, "marts.fct_bot_replies", "message_id")}
    assert not replies & valid.rejected["messages"]
    raw_messages = {r["id"] for r in fetch_table(scenario.warehouse_url, "raw.messages", "id")}
    assert not raw_messages & valid.rejected["messages"]


def test_repairs_are_counted_per_rule(built):
    scenario, summary, _, _, _ = built
    counts = {r["rule"]: 0 for r in fetch_table(scenario.warehouse_url, "raw.repairs", "rule")}
    for r in fetch_table(scenario.warehouse_url, "raw.repairs", "rule"):
        counts[r["rule"]] += r["repaired_rows"]
    assert counts["message_response_time_negative"] == summary.bad_rows["message_response_time_negative"]
    assert counts["message_tokens_invalid"] == summary.bad_rows["message_tokens_negative"]
    assert counts["message_inbound_fields_ignored"] == summary.bad_rows["message_inbound_fields"]
    assert counts["conversation_csat_out_of_range"] >= 1


def test_phone_numbers_never_reach_the_warehouse_in_the_clear(built):
    scenario, _, src, _, _ = built
    phones = set(src["conversations"]["customer_phone"])
    with scenario.warehouse() as conn:
        dump = conn.execute(
            "select string_agg(t::text, ' ') from (select * from raw.conversations) t").fetchone()[0]
        dump += conn.execute("select coalesce(string_agg(source_row::text, ' '), '') from raw.quarantine").fetchone()[0]
    assert not [p for p in list(phones)[:500] if p in dump]


def test_sql_functions_are_exact_over_ranges(marts_built):
    scenario, _, _, valid, window = marts_built
    messages, _ = oracle.in_scope(valid, window)
    with scenario.warehouse() as conn:
        bot_id, = conn.execute("select bot_id from marts.bot_performance_metrics order by total_messages desc "
                               "limit 1").fetchone()
        p50, p95, p99 = conn.execute(
            "select * from marts.calculate_response_time_percentiles(%s, '2026-03-01', '2026-03-03')",
            (bot_id,)).fetchone()
        summary = conn.execute(
            "select * from marts.get_bot_performance_summary(%s, '2026-03-01', '2026-03-02')", (bot_id,)
        ).fetchone()
        org_id = conn.execute("select organization_id from marts.usage_analytics limit 1").fetchone()[0]
        usage = conn.execute(
            "select active_users, bots_active, messages_sent from "
            "marts.get_organization_analytics_summary(%s, '2026-03-01', '2026-03-03')", (org_id,)).fetchone()
    lo, hi = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    times = [m["response_time"] for m in messages if m["bot_id"] == bot_id and m["direction"] == "outbound"
             and lo <= m["created_at"] < hi and m["response_time"] is not None]
    assert (p50, p95, p99) == tuple(oracle.percentile_ms(times, p) for p in (0.5, 0.95, 0.99))
    # the range summary: counts over the whole range, rates over the range's totals, exact percentiles
    _, conversations = oracle.in_scope(valid, window)
    replies = [m for m in messages if m["bot_id"] == bot_id and m["direction"] == "outbound"
               and lo <= m["created_at"] < hi]
    with_outcome = [m for m in replies if m["outcome"] is not None]
    started = [c for c in conversations.values() if c["bot_id"] == bot_id and lo <= c["started_at"] < hi]
    bot_msgs = [m for m in messages if m["bot_id"] == bot_id and lo <= m["created_at"] < hi]
    assert summary[2] == len(started)
    assert summary[3] == len(bot_msgs)
    assert summary[4] == len({m["conversation_id"] for m in bot_msgs})
    assert summary[5:9] == (oracle.avg_ms(times), p50, p95, p99)
    assert summary[9] == oracle.rate(sum(m["outcome"] == "success" for m in with_outcome), len(with_outcome))
    org_msgs = [m for m in messages if m["organization_id"] == org_id and lo <= m["created_at"] < hi]
    assert usage[1] == len({m["bot_id"] for m in org_msgs})
    assert usage[2] == sum(m["direction"] == "outbound" for m in org_msgs)


def test_a_local_day_starts_at_the_first_instant_of_its_date(marts_built):
    """marts.local_day_start, the local dates' bounds of the SQL functions, against PostgreSQL's own dating of
    instants (local_date: the mart's) and against the reports' zoneinfo (periods.local_midnight), every day of 2026
    in zones whose clocks change at midnight: Havana's 2026-11-01 midnight occurs twice (its day starts at the
    first), Santiago skips 2026-09-06 00:00."""
    from dagster_project.serve.reports.periods import local_midnight

    scenario, *_ = marts_built
    zones = ["America/Havana", "America/Santiago", "Asia/Beirut", "Europe/London", "Asia/Kolkata",
             "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Chatham", "UTC"]
    with scenario.warehouse() as conn:
        rows = conn.execute(
            "select z, d, s, (s at time zone z)::date, ((s - interval '1 microsecond') at time zone z)::date, "
            "d::timestamp at time zone z from unnest(%s::text[]) z, "
            "generate_series('2026-01-01'::date, '2026-12-31'::date, interval '1 day') g(d_ts), "
            "lateral (select d_ts::date as d) dd, lateral (select marts.local_day_start(d, z) as s) ss",
            (zones,)).fetchall()
    assert len(rows) == 365 * len(zones)
    for zone, day, start, date_there, date_before, _ in rows:
        assert (date_there, date_before < day) == (day, True), (zone, day)
        assert start == local_midnight(day, zone), (zone, day)
    naive = {(zone, day) for zone, day, start, _, _, wall_midnight in rows if start != wall_midnight}
    assert naive == {("America/Havana", date(2026, 11, 1))}  # where `d at time zone z` alone is an hour late


def test_bot_summary_over_local_dates_is_exact_in_the_bots_zone(marts_built):
    """get_bot_performance_summary_local: the dates 2026-03-02..03 in the zone of the bot's organization, e.g.
    Kolkata's from 2026-03-01 18:30 to 2026-03-03 18:30 UTC; its counts equal bot_performance_metrics_local's."""
    scenario, _, src, valid, window = marts_built
    messages, conversations = oracle.in_scope(valid, window)
    zones = {o["id"]: oracle.zone_of(o["timezone"]) for o in src["organizations"].to_dict("records")}
    checked = set()
    with scenario.warehouse() as conn:
        bots = conn.execute("select b.bot_id, b.organization_id, sum(m.total_messages) from marts.dim_bots b "
                            "join marts.bot_performance_metrics_local m using (bot_id) group by 1, 2 "
                            "order by 3 desc").fetchall()
        for bot_id, org_id, _ in bots:
            zone = zones[org_id]
            if zone.key in checked:
                continue
            checked.add(zone.key)
            summary = conn.execute("select * from marts.get_bot_performance_summary_local(%s, '2026-03-02', "
                                   "'2026-03-03')", (bot_id,)).fetchone()
            days = conn.execute("select sum(total_conversations), sum(total_messages) from "
                                "marts.bot_performance_metrics_local where bot_id = %s and date between "
                                "'2026-03-02' and '2026-03-03'", (bot_id,)).fetchone()
            lo, hi = (datetime(2026, 3, d, tzinfo=zone).astimezone(UTC) for d in (2, 4))
            bot_msgs = [m for m in messages if m["bot_id"] == bot_id and lo <= m["created_at"] < hi]
            times = [m["response_time"] for m in bot_msgs if m["response_time"] is not None]
            started = [c for c in conversations.values() if c["bot_id"] == bot_id and lo <= c["started_at"] < hi]
            assert summary[2:4] == (len(started), len(bot_msgs)) == tuple(days), zone.key
            assert summary[5:9] == (oracle.avg_ms(times), *(oracle.percentile_ms(times, p)
                                                             for p in (0.5, 0.95, 0.99))), zone.key
    assert {"Asia/Kolkata", "America/Sao_Paulo", "Europe/London"} <= checked



def test_export_round_trips_through_csv_with_the_marts_values(built, tmp_path):
    import csv

    from dagster_project.serve.export import ExportFilters, export_csv

    scenario, *_ = built
    out = tmp_path / "conversations.csv"
    with scenario.warehouse() as conn, out.open("wb") as f:
        rows = export_csv(conn, "conversations", ExportFilters(date(2026, 3, 1), date(2026, 3, 5)), f)
    with out.open(newline="", encoding="utf-8") as f:
        exported = list(csv.DictReader(f))
    marts = mart_rows(scenario.warehouse_url, "marts.conversation_metrics")
    assert rows == len(exported) == len(marts)
    for row in exported:
        mart = marts[uuid.UUID(row["conversation_id"])]
        for column in ("total_messages", "p95_response_time_ms", "estimated_cost_usd", "resolution_status",
                       "customer_satisfaction", "duration_seconds", "first_response_time_ms",
                       "first_response_business_ms", "resolution_time_secs", "resolution_business_secs",
                       "sla_first_response_met"):
            value = mart[column]
            expected = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            assert row[column] == expected, (column, row[column], expected)
        assert row["customer_phone"].startswith("***") and len(row["customer_phone"]) == 7


def test_export_filters_are_parameters_and_bad_ones_are_named(built, capsys, tmp_path):
    from dagster_project.cli.main import main

    scenario, *_ = built
    scenario.activate()
    hostile = "x'); drop table marts.conversation_metrics; --"
    out = tmp_path / "hostile.csv"
    assert main(["export", "conversations", "--start", "2026-03-01", "--end", "2026-03-05", "--search", hostile,
                 "--output", str(out)]) == 0
    assert out.read_text().count("\n") == 1  # the header: no bot is called that
    assert mart_rows(scenario.warehouse_url, "marts.conversation_metrics")  # the table is still there
    assert main(["export", "conversations", "--start", "2026-03-01", "--end", "2026-03-05", "--status",
                 "lost"]) == 2
    assert "--status 'lost' is not one of active, resolved, escalated" in capsys.readouterr().err
    assert main(["export", "bot-performance", "--start", "2026-03-01", "--end", "2026-03-05", "--bot",
                 "Nobody"]) == 2
    assert "--bot 'Nobody' matches no bot" in capsys.readouterr().err


def _copies(conn, table: str, seed_where: str, overrides: dict[str, str]) -> None:
    """Insert one copy of the seed row per row of temp table `many` (id, n), with some columns overridden."""
    columns = [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema || '.' || table_name = %s "
        "order by ordinal_position", (table,)).fetchall()]
    select = ", ".join(overrides.get(c, f"s.{c}") for c in columns)
    conn.execute(f"insert into {table} select {select} from (select * from {table} where {seed_where} limit 1) s, "
                 "many")


def _export_peak_rss(start: str, end: str, out: Path) -> tuple[int, int]:
    """(data rows, peak RSS in KiB) of `botflow export conversations` in its own process."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "dagster_project.cli", "export", "conversations", "--start", start,
                             "--end", end, "--output", str(out)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    message = proc.stderr.read().decode()
    assert proc.returncode == 0, message
    return int(message.split()[1]), usage.ru_maxrss


def test_export_of_a_million_rows_keeps_memory_flat(built, tmp_path):
    """The seed's export stopped at 1,000 rows; this one streams 1M with the memory it needs for 100."""
    scenario, *_ = built
    scenario.activate()
    n = 1_000_000
    with scenario.warehouse() as conn:
        conn.execute("create temp table many as select gen_random_uuid() as id, n "
                     "from generate_series(1, %s) n", (n,))
        seed = conn.execute("select conversation_id from marts.conversation_metrics order by conversation_id "
                            "limit 1").fetchone()[0]
        moved = "timestamptz '2026-04-01' + many.n * interval '50 ms'"
        _copies(conn, "raw.conversations", f"id = '{seed}'", {"id": "many.id", "started_at": moved})
        _copies(conn, "marts.conversation_metrics", f"conversation_id = '{seed}'",
                {"id": "many.id", "conversation_id": "many.id", "started_at": moved})
    try:
        small_rows, small_rss = _export_peak_rss("2026-03-01", "2026-03-05", tmp_path / "small.csv")
        big_rows, big_rss = _export_peak_rss("2026-04-01", "2026-04-02", tmp_path / "big.csv")
        print(f"export peak RSS: {small_rows} rows {small_rss} KiB, {big_rows} rows {big_rss} KiB")
        assert small_rows < 1000 and big_rows == n
        assert (tmp_path / "big.csv").stat().st_size > 150 * n  # the rows really went through this process
        # flat: 1M rows cost no more than a few MB over a few hundred (a buffered export would need ~300 MB more)
        assert big_rss < small_rss + 30 * 1024, (small_rss, big_rss)
    finally:
        with scenario.warehouse() as conn:
            conn.execute("delete from marts.conversation_metrics where started_at >= '2026-04-01'")
            conn.execute("delete from raw.conversations where started_at >= '2026-04-01'")
