"""metric_anomalies and bot_performance_metrics_local: hand-made bots over 20 days around the end of British
Summer Time, built through Dagster and checked against the oracle.

Covers: a spike and a drop against a flat history (MAD 0: the floors 5% of the median and 1 decide), values
exactly at the threshold (not anomalous), a noisy history (MAD decides), a bot with fewer than 7 days, a
metric null on most days (fewer than 7 values: no verdict while the other metrics have one), the 14 dates
that have a row rather than 14 calendar days, and a rebuilt range of days changing the verdict of a day
after it that was not rebuilt (the mart is rebuilt whole). Local days: a bot active from 22:30 to 01:30 UTC
every night, in London, through the 25-hour Sunday of 25 October 2026 (BST ends at 01:00 UTC).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import oracle
import pytest
from conftest import build_window, lenient_quality_limits, module_scenario
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.dev.simulate import create_source_tables

START = date(2026, 10, 12)  # day 13: Sunday 25 October, 25 hours in London
DAYS = 20
ORG = uuid.UUID("0a000000-0000-0000-0000-0000000000a1")
STEADY, SHORT, SPARSE, GAPS, NOISY, NIGHT = (uuid.UUID(f"0b000000-0000-0000-0000-0000000000a{i}") for i in range(1, 7))
ZONE = "Europe/London"

# bot -> day -> (replies as (response_time_ms, outcome), inbound messages). A reply with a null response time
# and no inbound message before it has none (no computed fallback either)
Day = tuple[list[tuple[int | None, str | None]], int]


def steady_day(day: int) -> Day:
    """5 replies a day (10 messages), all 1000 ms, one failed (error_rate 20): MAD 0 everywhere."""
    if day == 14:  # 30 messages, p95 5000, error_rate 66.67: high on all three
        return [(5000, "failed")] * 10 + [(5000, "success")] * 5, 15
    if day == 15:  # 13 messages (|13 - 10| = 3, not > 3) and p95 1150 (|150| = 0.05 * 1000 * 3): no verdict
        return [(1150, "failed"), (1150, "success"), (1150, "success"), (1150, "success"), (1000, "success"),
                (1000, "success")], 7
    if day == 16:  # 6 messages: low; error_rate 0 (|0 - 20| > 3): low
        return [(1000, "success")] * 3, 3
    return [(1000, "failed")] + [(1000, "success")] * 4, 5


def noisy_day(day: int, rng: random.Random) -> Day:
    replies = rng.randint(3, 9) if day != 17 else 40  # day 17: far outside the spread
    return [(rng.choice([300, 800, 1500, 2500]), rng.choice(["success", "success", "fallback", None]))
            for _ in range(replies)], replies + rng.randint(0, 3)


def traffic() -> dict[uuid.UUID, dict[int, Day]]:
    rng = random.Random(19)
    return {
        STEADY: {d: steady_day(d) for d in range(DAYS)},
        SHORT: {d: ([(1000, "success")] * (2 if d < 4 else 30), 2 if d < 4 else 30) for d in range(5)},  # a spike
        # response times on 6 of the first 14 days only (4 messages a day): p95 has no verdict on day 14,
        # total_messages (40) has
        SPARSE: {**{d: ([(1000, "success")] * 2, 2) if d % 2 == 0 and d <= 10 else ([(None, "success")] * 4, 0)
                    for d in range(14)}, 14: ([(4000, "success")] * 20, 20)},
        # rows on days 0-6, then none until day 18: its 7 dates before it that have a row give a verdict
        GAPS: {**{d: ([(1000, "success")] * 5, 5) for d in range(7)}, 18: ([(1000, "success")] * 20, 20)},
        NOISY: {d: noisy_day(d, rng) for d in range(DAYS)},
        NIGHT: {d: night_day(d) for d in range(10, 16)},
    }


def night_day(day: int) -> Day:
    """From 22:30 UTC, a reply every 20 minutes past midnight (the conversation starts at 22:30)."""
    return [(700 + 10 * day, "success")] * 10, 10


def at(day: int, minutes: float) -> datetime:
    return datetime.combine(START, datetime.min.time(), UTC) + timedelta(days=day, hours=10, minutes=minutes)


def insert_traffic(conn, days: dict[uuid.UUID, dict[int, Day]], first_id: int) -> int:
    """One conversation per bot and day, an inbound message before each reply; returns the next free id."""
    n = first_id
    for bot, by_day in days.items():
        start, step = (750, 20) if bot == NIGHT else (0, 2)  # NIGHT: 22:30 UTC, 20 minutes apart
        for day, (replies, inbound) in by_day.items():
            conversation = uuid.UUID(int=n)
            n += 1
            conn.execute("insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at, "
                         "updated_at) values (%s, %s, %s, '+27820000100', 'active', %s, %s)",
                         (conversation, ORG, bot, at(day, start), at(day, start)))
            messages = [("inbound", at(day, start + step * i), None, None) for i in range(inbound)]
            messages += [("outbound", at(day, start + step * i + step / 2), rt, outcome)
                         for i, (rt, outcome) in enumerate(replies)]
            for direction, created, rt, outcome in messages:
                conn.execute(
                    "insert into messages (id, conversation_id, direction, created_at, response_time_ms, outcome, "
                    "knowledge_base_hit, llm_model, prompt_tokens, completion_tokens, updated_at) "
                    "values (%s, %s, %s, %s, %s, %s, null, 'gpt-4o-mini', 10, 10, %s)",
                    (uuid.UUID(int=n), conversation, direction, created, rt, outcome, created))
                n += 1
    return n


@pytest.fixture(scope="module")
def anomalies(dagster_instance):
    with lenient_quality_limits(), module_scenario("anomalies") as (scenario,):
        with scenario.source() as conn:
            create_source_tables(conn, "public")
            conn.execute("insert into organizations (id, name, timezone) values (%s, 'A', %s)", (ORG, ZONE))
            for bot in (STEADY, SHORT, SPARSE, GAPS, NOISY, NIGHT):
                conn.execute("insert into bots (id, organization_id, name, llm_model) "
                             "values (%s, %s, 'bot', 'gpt-4o-mini')", (bot, ORG))
            next_id = insert_traffic(conn, traffic(), 1_000_000)
        build_window(dagster_instance, START, START + timedelta(days=DAYS))
        yield scenario, dagster_instance, next_id


def expected(scenario, local: bool = False) -> dict:
    src = oracle.read_source(scenario.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    window = oracle.Window(datetime.combine(START, datetime.min.time(), UTC),
                           datetime.combine(START + timedelta(days=DAYS), datetime.min.time(), UTC))
    if local:
        return oracle.bot_performance_metrics_local(valid, window)
    return oracle.metric_anomalies(oracle.bot_performance_metrics(valid, window))


def test_local_days_through_the_25_hour_sunday_equal_the_oracle(anomalies):
    scenario, _, _ = anomalies
    rows = mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics_local")
    assert_equal_to_oracle("marts.bot_performance_metrics_local", rows, expected(scenario, local=True))
    utc = mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics")
    night = {day: row["total_messages"] for (bot, day), row in rows.items() if bot == NIGHT}
    # by hand: the 25-hour Sunday is [24 Oct 23:00 UTC, 26 Oct 00:00 UTC): of the night from the 24th (a message
    # every 10 minutes, 22:30 to 01:40 UTC) the 17 from 23:00 UTC, of the night from the 25th (after BST ended)
    # the 9 before midnight UTC
    assert night[date(2026, 10, 25)] == 17 + 9
    assert night[date(2026, 10, 24)] == 3 + 17  # 22:30-22:50 UTC of the 24th, and the 23rd's from 23:00 UTC
    assert sum(night.values()) == sum(row["total_messages"] for (bot, _), row in utc.items() if bot == NIGHT) == 120


def verdicts(rows: dict) -> set[tuple]:
    return {(bot, (day - START).days, metric, row["direction"]) for (bot, day, metric), row in rows.items()}


def test_metric_anomalies_equal_the_oracle_before_and_after_a_rebuilt_range(anomalies):
    scenario, instance, next_id = anomalies
    rows = mart_rows(scenario.warehouse_url, "marts.metric_anomalies")
    assert_equal_to_oracle("marts.metric_anomalies", rows, expected(scenario))
    found = verdicts(rows)
    # worked by hand (the docstrings of steady_day and traffic)
    assert {(STEADY, 14, "total_messages", "high"), (STEADY, 14, "p95_response_time_ms", "high"),
            (STEADY, 14, "error_rate", "high"), (STEADY, 16, "total_messages", "low"),
            (STEADY, 16, "error_rate", "low"), (SPARSE, 14, "total_messages", "high"),
            (GAPS, 18, "total_messages", "high"), (NOISY, 17, "total_messages", "high")} <= found
    assert not {v for v in found if v[0] == STEADY and v[1] == 15 and v[2] in ("total_messages",
                                                                               "p95_response_time_ms")}
    assert not {v for v in found if v[0] == SHORT}, "fewer than 7 dates of history: no verdict"
    assert not {v for v in found if v[0] == SPARSE and v[2] == "p95_response_time_ms"}, "6 values: no verdict"
    assert not {v for v in found if v[1] < 7}, "no bot has 7 dates before day 7"
    steady_14 = rows[(STEADY, START + timedelta(days=14), "total_messages")]
    assert (steady_14["value"], steady_14["baseline_median"], steady_14["threshold"]) == (Decimal(30), 10, 3)
    noisy = {row["threshold"] for (bot, _, _), row in rows.items() if bot == NOISY}
    assert any(t > 3 for t in noisy), "the noisy bot's spread (MAD) sets its thresholds"

    # a rebuilt range changes the verdicts of the days after it: days 10-17 of GAPS gain traffic (40 messages a
    # day) and only they are rebuilt; the baseline of day 18, which was not rebuilt, becomes mostly 40s, and its
    # verdict (40 messages against a median of 10) goes
    with scenario.source() as conn:
        insert_traffic(conn, {GAPS: {d: ([(1000, "success")] * 20, 20) for d in range(10, 18)}}, next_id)
    build_window(instance, START + timedelta(days=10), START + timedelta(days=18))
    rows = mart_rows(scenario.warehouse_url, "marts.metric_anomalies")
    assert_equal_to_oracle("marts.metric_anomalies", rows, expected(scenario))
    assert_equal_to_oracle("marts.bot_performance_metrics_local",
                           mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics_local"),
                           expected(scenario, local=True))
    assert (GAPS, START + timedelta(days=18), "total_messages") not in rows
    assert (GAPS, START + timedelta(days=10), "total_messages") in rows
