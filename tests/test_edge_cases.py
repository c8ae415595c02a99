"""Hand-made source rows for the edge cases, built through Dagster and checked value by value.

Covers: empty hours, a conversation across midnight, replies with a null response time, a reply
with no earlier inbound message, a reply at the same instant as an inbound message, ties for
most_active_bot_id, CSAT outside 1..5, a bot with no replies (rates with zero denominators), a model
without a price, and every "Bad rows" rule (the row is in quarantine with its rule, and in no mart).

Service metrics (the demo organizations of the seeds business_hours, holidays and sla_targets): a first
inbound after a bot greeting, a reply at the same instant as it, a conversation across a holiday and a
weekend, a lunch break of a split shift, a +05:30 zone, a resolution across the 25-hour day of a clock
change (opening at a local time that occurs twice), an unknown zone (repaired to UTC), an organization
with no schedule and one with no target, a first response exactly at its SLA target. (A 23-hour day: the
dbt unit tests of conversation_metrics.)
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import oracle
import pytest
from conftest import build_window, engine_environment, fetch_table, lenient_quality_limits, module_scenario
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.dev.simulate import create_source_tables
from dagster_project.ingest.rules import REJECTION_RULES, REPAIR_RULES

D = datetime(2026, 4, 1, tzinfo=UTC)
ORG_A = uuid.UUID("0a000000-0000-0000-0000-000000000001")
ORG_B = uuid.UUID("0a000000-0000-0000-0000-000000000002")
BOT_1 = uuid.UUID("0b000000-0000-0000-0000-000000000001")  # smaller id than BOT_2: wins ties
BOT_2 = uuid.UUID("0b000000-0000-0000-0000-000000000002")
BOT_3 = uuid.UUID("0b000000-0000-0000-0000-000000000003")  # unpriced model, org B
MISSING = uuid.UUID("0f000000-0000-0000-0000-00000000dead")
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before the first partition (BOTFLOW_PARTITIONS_START)
# the demo organizations of the service-metric seeds (dbt/seeds), with a bot each
ACME = uuid.UUID("77443c4a-3787-f649-c1c2-d4c01a64d8ef")  # Johannesburg; Mon-Fri 8-17, Sat 8-13; 3 s SLA
GLOBEX = uuid.UUID("fedf0e6f-0f61-8e1f-fc15-40abdde3649a")  # London; Mon-Fri 9-12:30 + 13:30-18, Sun from 1:30
INITECH = uuid.UUID("12757510-c6a6-508e-3ee0-593a3a9dda7c")  # no schedule (always open); 2 s SLA
UMBRELLA = uuid.UUID("a861c15f-20ca-b3e7-449a-54d45d2849e9")  # Kolkata (+05:30); Mon-Sat 9-21; no SLA
SERVICE_ORGS = {ACME: "Africa/Johannesburg", GLOBEX: "Europe/London", INITECH: "Mars/Olympus",  # unknown zone
                UMBRELLA: "Asia/Kolkata"}
BOT_OF = {org: uuid.UUID(f"0b000000-0000-0000-0000-00000000010{i}") for i, org in enumerate(SERVICE_ORGS)}


def cid(n: int) -> uuid.UUID:
    return uuid.UUID(f"0c000000-0000-0000-0000-{n:012d}")


def mid(n: int) -> uuid.UUID:
    return uuid.UUID(f"0d000000-0000-0000-0000-{n:012d}")


def at(hours: float, **kw) -> datetime:
    return D + timedelta(hours=hours, **kw)


# conversation id -> (org, bot, phone, status, started, ended, handoff, csat, expected rejection rule)
CONVERSATIONS = {
    1: (ORG_A, BOT_1, "+27820000001", "resolved", at(23, minutes=50), at(24, minutes=20), None, 9, None),
    2: (ORG_A, BOT_2, "+27820000002", "escalated", at(10), at(10, minutes=30), at(10, minutes=10), 4, None),
    3: (ORG_A, BOT_1, "+27820000003", "active", at(10, minutes=20), None, None, None, None),
    4: (ORG_B, BOT_3, "+27820000004", "resolved", at(14), at(14, minutes=5), None, 0, None),
    5: (ORG_A, BOT_1, "+27820000005", "resolved", at(9), None, None, None, None),  # no message: no row
    # bad conversations, one per rule
    10: (ORG_A, BOT_1, "+27820000010", "pending", at(12), None, None, None, "conversation_status_unknown"),
    11: (ORG_A, MISSING, "+27820000011", "active", at(12), None, None, None, "conversation_bot_missing"),
    12: (MISSING, BOT_1, "+27820000012", "active", at(12), None, None, None, "conversation_organization_missing"),
    13: (ORG_A, BOT_1, "+27820000013", "active", None, None, None, None, "conversation_started_at_invalid"),
    14: (ORG_A, BOT_1, "+27820000014", "active", FUTURE, None, None, None, "conversation_started_at_future"),
    15: (ORG_A, BOT_1, "+27820000015", "resolved", at(12), at(11), None, None, "conversation_ended_before_started"),
    16: (ORG_A, BOT_1, "+27820000016", "active", EPOCH, None, None, None, "conversation_started_at_before_partitions"),
    # service metrics (2026-04-01 is a Wednesday)
    30: (ACME, BOT_OF[ACME], "+27820000030", "resolved", at(38), datetime(2026, 4, 6, 7, tzinfo=UTC), None, None,
         None),  # Thu 16:00 local to Mon 09:00: Fri 3 April a holiday, then a weekend; 7 business hours
    31: (ACME, BOT_OF[ACME], "+27820000031", "active", at(6), None, None, None, None),  # greeting first
    32: (UMBRELLA, BOT_OF[UMBRELLA], "+27820000032", "resolved", at(2, minutes=59), at(4), None, None, None),
    33: (GLOBEX, BOT_OF[GLOBEX], "+27820000033", "resolved", at(34), datetime(2026, 10, 26, 9, tzinfo=UTC), None,
         None, None),  # open until Monday 26 October: on Sunday 25 October 01:30 (opening) occurs twice
    34: (GLOBEX, BOT_OF[GLOBEX], "+27820000034", "escalated", at(11), at(13), None, None, None),  # lunch break
    35: (INITECH, BOT_OF[INITECH], "+27820000035", "active", at(20), None, None, None, None),
    # 01:30 to 06:00 on 2 April in Kolkata: one local day across the UTC midnight (a day rebuilt alone must
    # rebuild that local day whole)
    36: (UMBRELLA, BOT_OF[UMBRELLA], "+27820000036", "active", at(20), None, None, None, None),
}

# message id -> (conversation, direction, created, response_time_ms, outcome, kb, model, prompt,
#                completion, expected rejection rule)
MESSAGES = {
    # conversation 1: across midnight; a null response time falls back over midnight
    1: (1, "inbound", at(23, minutes=50), None, None, None, None, 0, 0, None),
    2: (1, "outbound", at(23, minutes=50, seconds=1, microseconds=500_900), None, "success", True, None, 1000, 200,
        None),
    3: (1, "inbound", at(23, minutes=59, seconds=59), None, None, None, None, 0, 0, None),
    4: (1, "outbound", at(24, seconds=2), None, "fallback", False, None, 800, 100, None),
    5: (1, "outbound", at(24, minutes=10), 250, "success", None, "gpt-4o", 500, 50, None),
    # conversation 2: a greeting with no earlier inbound; a reply at the same instant as an inbound;
    # a negative response time (repaired to null, falls back); 5 messages in hour 10
    6: (2, "outbound", at(10), None, "success", None, None, 100, 10, None),
    7: (2, "inbound", at(10, minutes=1), None, None, None, None, 0, 0, None),
    8: (2, "outbound", at(10, minutes=1), None, "failed", None, None, 100, 10, None),
    9: (2, "inbound", at(10, minutes=5), None, None, None, None, 0, 0, None),
    10: (2, "outbound", at(10, minutes=5, seconds=1), -40, None, True, None, 100, 10, None),
    # conversation 3: 5 messages in hour 10 too (tie with bot 2: bot 1 has the smaller id)
    11: (3, "inbound", at(10, minutes=20), None, "success", True, "gpt-4o", 7, 7, None),  # inbound: fields ignored
    12: (3, "outbound", at(10, minutes=20, seconds=2), 2000, "failed", False, None, -5, 30, None),  # tokens repaired
    13: (3, "inbound", at(10, minutes=30), None, None, None, None, 0, 0, None),
    14: (3, "outbound", at(10, minutes=30, seconds=1), 1000, "success", True, None, 10, 10, None),
    15: (3, "inbound", at(10, minutes=40), None, None, None, None, 0, 0, None),
    # conversation 4: a bot whose replies have no outcome and no lookup, with an unpriced model
    16: (4, "inbound", at(14), None, None, None, None, 0, 0, None),
    17: (4, "outbound", at(14, seconds=3), None, None, None, None, 300, 30, None),
    # service metrics
    40: (30, "inbound", at(38, minutes=59, seconds=59), None, None, None, None, 0, 0, None),  # 16:59:59 local
    41: (30, "outbound", at(39, seconds=3), None, "success", None, None, 10, 10, None),  # 1 s before closing
    42: (31, "outbound", at(6), None, "success", None, None, 10, 10, None),  # a greeting, before any inbound
    43: (31, "inbound", at(6, seconds=10), None, None, None, None, 0, 0, None),
    44: (31, "outbound", at(6, seconds=10), None, "success", None, None, 10, 10, None),  # same instant: not after
    45: (31, "outbound", at(6, seconds=15), None, "success", None, None, 10, 10, None),  # 5 s: misses 3 s
    46: (32, "inbound", at(3), None, None, None, None, 0, 0, None),  # 08:30 in Kolkata, before opening
    47: (32, "outbound", at(3, minutes=45), None, "success", None, None, 10, 10, None),  # 09:15: 15 business min
    48: (33, "inbound", at(34), None, None, None, None, 0, 0, None),
    49: (33, "outbound", at(34, seconds=1, microseconds=999), None, "success", None, None, 10, 10, None),
    50: (34, "inbound", at(11), None, None, None, None, 0, 0, None),  # 12:00 in London (BST)
    51: (34, "outbound", at(12, minutes=45), None, "fallback", None, None, 10, 10, None),  # 13:45: 45 business min
    52: (35, "inbound", at(20), None, None, None, None, 0, 0, None),
    53: (35, "outbound", at(20, seconds=2), None, "success", None, None, 10, 10, None),  # exactly at the target
    54: (36, "inbound", at(20), None, None, None, None, 0, 0, None),  # 01:30 IST on 2 April, 1 April in UTC
    55: (36, "outbound", at(20, seconds=1), None, "success", None, None, 10, 10, None),
    56: (36, "inbound", at(24, minutes=30), None, None, None, None, 0, 0, None),  # 06:00 IST, 2 April in UTC too
    57: (36, "outbound", at(24, minutes=30, seconds=1), None, "success", None, None, 10, 10, None),
    # bad messages, one per rule
    20: (2, "sideways", at(10, minutes=6), None, None, None, None, 0, 0, "message_direction_unknown"),
    21: (2, "inbound", None, None, None, None, None, 0, 0, "message_created_at_invalid"),
    22: (2, "inbound", FUTURE, None, None, None, None, 0, 0, "message_created_at_future"),
    23: (2, "outbound", at(10, minutes=7), 100, "maybe", None, None, 0, 0, "message_outcome_unknown"),
    24: (MISSING, "inbound", at(10, minutes=8), None, None, None, None, 0, 0, "message_conversation_missing"),
    25: (10, "inbound", at(12), None, None, None, None, 0, 0, "message_conversation_rejected"),
    26: (2, "inbound", EPOCH, None, None, None, None, 0, 0, "message_created_at_before_partitions"),
    27: (2, "outbound", at(10, minutes=9), 100, "success", None, None, 2**31 - 1, 2**31 - 1,
         "message_tokens_out_of_range"),  # 2^31-1 twice overflowed fct_bot_replies.tokens
}

EVENTS = [  # (org, kind, occurred, expected rejection rule)
    (ORG_A, "api_call", at(10, minutes=3), None),
    (ORG_A, "webhook_received", at(10, minutes=4), None),
    (ORG_B, "api_call", at(16), None),  # an hour with only an api event
    (ORG_A, "ping", at(10, minutes=5), "api_event_kind_unknown"),
    (ORG_A, "api_call", FUTURE, "api_event_occurred_at_future"),
    (ORG_A, "api_call", EPOCH, "api_event_occurred_at_before_partitions"),
]


def _bucket(key) -> uuid.UUID:
    return key if isinstance(key, uuid.UUID) else cid(key)


@pytest.fixture(scope="module")
def engine() -> str:
    """The engine that builds this module's marts (test_spark_engine.py runs the same tests with spark)."""
    return "postgres"


@pytest.fixture(scope="module")
def edge(dagster_instance):
    with lenient_quality_limits(), module_scenario("edge") as (scenario,):
        yield from build_edge_cases(scenario, dagster_instance)


def build_edge_cases(scenario, dagster_instance, engine: str = "postgres"):
    """The hand-made rows in the source, built through Dagster with BOTFLOW_ENGINE=`engine`."""
    with scenario.source() as conn:
        create_source_tables(conn, "public")
        conn.execute("insert into organizations (id, name) values (%s, 'A'), (%s, 'B')", (ORG_A, ORG_B))
        for org, zone in SERVICE_ORGS.items():
            conn.execute("insert into organizations (id, name, timezone, created_at) values (%s, %s, %s, %s)",
                         (org, zone, zone, D))
            conn.execute("insert into bots (id, organization_id, name, llm_model) values (%s, %s, %s, 'gpt-4o-mini')",
                         (BOT_OF[org], org, f"bot of {zone}"))
        conn.execute(
            "insert into bots (id, organization_id, name, llm_model) values "
            "(%s, %s, 'one', 'gpt-4o-mini'), (%s, %s, 'two', 'gpt-4o'), (%s, %s, 'three', 'no-price-model')",
            (BOT_1, ORG_A, BOT_2, ORG_A, BOT_3, ORG_B),
        )
        for n, (org, bot, phone, status, started, ended, handoff, csat, _) in CONVERSATIONS.items():
            conn.execute(
                "insert into conversations (id, organization_id, bot_id, customer_phone, status, started_at, "
                "ended_at, handoff_at, customer_satisfaction, updated_at) values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (cid(n), org, bot, phone, status, started, ended, handoff, csat, D),
            )
        for n, (conv, direction, created, rt, outcome, kb, model, prompt, completion, _) in MESSAGES.items():
            conn.execute(
                "insert into messages (id, conversation_id, direction, created_at, response_time_ms, outcome, "
                "knowledge_base_hit, llm_model, prompt_tokens, completion_tokens, updated_at) "
                "values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (mid(n), _bucket(conv), direction, created, rt, outcome, kb, model, prompt, completion, D),
            )
        for org, kind, occurred, _ in EVENTS:
            conn.execute("insert into api_events (organization_id, kind, occurred_at) values (%s,%s,%s)",
                         (org, kind, occurred))
        conn.commit()
    with engine_environment(engine):
        build_window(dagster_instance, date(2026, 4, 1), date(2026, 4, 3))
    src = oracle.read_source(scenario.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    window = oracle.Window(D, D + timedelta(days=2))
    yield scenario, src, valid, window


def test_all_marts_equal_the_oracle(edge):
    scenario, src, valid, window = edge
    for table, expected in (
        ("marts.conversation_metrics", oracle.conversation_metrics(valid, window)),
        ("marts.bot_performance_metrics", oracle.bot_performance_metrics(valid, window)),
        # Kolkata's 1 April starts at 18:30 UTC on 31 March; an unknown zone's days are UTC days
        ("marts.bot_performance_metrics_local", oracle.bot_performance_metrics_local(valid, window)),
        ("marts.usage_analytics", oracle.usage_analytics(valid, window, oracle.phone_map(src))),
        ("marts.response_time_histogram", oracle.response_time_histogram(valid, window)),
        # two days of history: no verdict (tests/test_anomalies.py has the anomalies' own edge cases)
        ("marts.metric_anomalies", oracle.metric_anomalies(oracle.bot_performance_metrics(valid, window))),
    ):
        assert_equal_to_oracle(table, mart_rows(scenario.warehouse_url, table), expected)


def test_response_times_fallbacks_and_midnight(edge):
    scenario, *_ = edge
    replies = {r["message_id"]: r for r in fetch_table(scenario.warehouse_url, "marts.fct_bot_replies", "message_id")}
    assert replies[mid(2)]["response_time_ms"] == 1500  # 1500.9 ms, truncated
    assert replies[mid(4)]["response_time_ms"] == 3000  # falls back across midnight
    assert replies[mid(5)]["response_time_ms"] == 250  # the app's own measure wins
    assert replies[mid(6)]["response_time_ms"] is None  # greeting: no earlier inbound
    assert replies[mid(8)]["response_time_ms"] is None  # same instant is not "strictly before"
    assert replies[mid(10)]["response_time_ms"] == 1000  # negative repaired to null, then fallback
    assert replies[mid(12)]["prompt_tokens"] == 0  # negative tokens repaired to 0
    assert replies[mid(17)]["cost_usd"] == 0 and not replies[mid(17)]["is_priced"]
    convs = mart_rows(scenario.warehouse_url, "marts.conversation_metrics")
    c1 = convs[cid(1)]
    assert c1["duration_seconds"] == 1800
    assert (c1["p50_response_time_ms"], c1["avg_response_time_ms"]) == (1500, 1583)
    assert c1["customer_satisfaction"] is None  # 9 is outside 1..5
    assert convs[cid(4)]["customer_satisfaction"] is None  # 0 too
    assert cid(5) not in convs  # no message: no row
    assert convs[cid(3)]["user_messages"] == 3 and convs[cid(3)]["tokens_used"] == 50  # inbound tokens ignored


def test_empty_hours_ties_and_zero_denominators(edge):
    scenario, *_ = edge
    usage = mart_rows(scenario.warehouse_url, "marts.usage_analytics")
    assert (ORG_A, at(11)) not in usage  # an empty hour has no row
    assert usage[(ORG_A, at(10))]["most_active_bot_id"] == BOT_1  # 5 messages each: smaller id
    assert usage[(ORG_B, at(16))]["api_calls_made"] == 1 and usage[(ORG_B, at(16))]["most_active_bot_id"] is None
    assert usage[(ORG_A, at(9))]["conversations_started"] == 1  # activity without a message
    bots = mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics")
    b3 = bots[(BOT_3, D.date())]
    assert b3["success_rate"] is None and b3["knowledge_base_hit_rate"] is None
    assert b3["avg_response_time_ms"] == 3000 and b3["total_cost_usd"] == 0
    b1_next_day = bots[(BOT_1, (D + timedelta(days=1)).date())]
    assert b1_next_day["total_conversations"] == 0 and b1_next_day["active_conversations"] == 1


def test_every_bad_row_rule_is_quarantined_with_its_rule(edge):
    scenario, *_ = edge
    quarantine = fetch_table(scenario.warehouse_url, "raw.quarantine", "source_table, source_id")
    found = {(r["source_table"], r["source_id"]): r["rule"] for r in quarantine}
    expected = {("conversations", str(cid(n))): row[-1] for n, row in CONVERSATIONS.items() if row[-1]}
    expected |= {("messages", str(mid(n))): row[-1] for n, row in MESSAGES.items() if row[-1]}
    assert {k: v for k, v in found.items() if k[0] != "api_events"} == expected
    assert sorted(r["rule"] for r in quarantine if r["source_table"] == "api_events") == sorted(
        e[-1] for e in EVENTS if e[-1])
    exercised = set(expected.values()) | {e[-1] for e in EVENTS if e[-1]}
    untestable = {"conversation_timestamp_unparsable", "api_event_occurred_at_invalid"}  # typed source columns
    assert set(REJECTION_RULES) - untestable == exercised
    for row in quarantine:
        assert row["run_id"] and row["source_row"], row
    swept = {r["source_id"] for r in quarantine if r["partition_hour"] is None}
    assert str(mid(21)) in swept and str(mid(22)) in swept and str(cid(13)) in swept
    assert str(mid(26)) in swept and str(cid(16)) in swept  # dated 1970: in quarantine, not dropped


def test_repairs_are_counted_per_rule_and_partition(edge):
    scenario, *_ = edge
    repairs = {(r["rule"], r["partition_hour"]): r["repaired_rows"]
               for r in fetch_table(scenario.warehouse_url, "raw.repairs", "rule")}
    assert repairs == {
        ("conversation_csat_out_of_range", at(23)): 1,
        ("conversation_csat_out_of_range", at(14)): 1,
        ("message_response_time_negative", at(10)): 1,
        ("message_inbound_fields_ignored", at(10)): 1,
        ("message_tokens_invalid", at(10)): 1,
        ("organization_timezone_unknown", D): 1,  # Mars/Olympus
    }
    assert set(REPAIR_RULES) == {rule for rule, _ in repairs}


def test_service_metrics_in_business_time(edge):
    """Worked by hand from the seeds (the oracle, which walks local dates with zoneinfo, agrees: above)."""
    scenario, *_ = edge
    convs = mart_rows(scenario.warehouse_url, "marts.conversation_metrics")

    def service(n: int) -> tuple:
        row = convs[cid(n)]
        return tuple(row[c] for c in ("first_response_time_ms", "first_response_business_ms", "resolution_time_secs",
                                      "resolution_business_secs", "sla_first_response_met"))

    # Thu 16:59:59 to 17:00:03 local: 1 business second, within 3 s; resolved after a holiday and a weekend:
    # Thu 16-17, Sat 8-13, Mon 8-9 local = 7 h
    assert service(30) == (4000, 1000, 3 * 86400 + 17 * 3600, 7 * 3600, True)
    assert service(31) == (5000, 5000, None, None, False)  # greeting and same-instant reply skipped; 5 s > 3 s
    assert service(32) == (45 * 60_000, 15 * 60_000, 61 * 60, 30 * 60, None)  # +05:30; Umbrella has no SLA
    assert service(34) == (105 * 60_000, 45 * 60_000, None, None, False)  # the lunch hour is not business time
    assert service(35) == (2000, 2000, None, None, True)  # no schedule: business = wall; exactly 2 s is met
    globex = convs[cid(33)]
    assert globex["first_response_business_ms"] == 1000  # 1.000999 s, truncated
    with scenario.warehouse() as conn:
        assert conn.execute("select timezone from raw.organizations where id = %s", (INITECH,)).fetchone() == ("UTC",)
    bots = mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics")
    acme = bots[(BOT_OF[ACME], D.date())]  # conversation 31 only (30 started on the 2nd)
    assert (acme["first_response_p50_ms"], acme["first_response_p95_ms"], acme["sla_met_rate"]) == (5000, 5000, 0)
    assert bots[(BOT_OF[UMBRELLA], D.date())]["sla_met_rate"] is None  # no target: no verdict
    local = mart_rows(scenario.warehouse_url, "marts.bot_performance_metrics_local")
    kolkata_2_april = local[(BOT_OF[UMBRELLA], date(2026, 4, 2))]  # conversation 36's 4 messages, both UTC days
    assert (kolkata_2_april["total_messages"], kolkata_2_april["timezone"]) == (4, "Asia/Kolkata")
    assert local[(BOT_OF[INITECH], D.date())]["timezone"] == "UTC"  # an unknown zone's days are UTC days
    histogram = mart_rows(scenario.warehouse_url, "marts.response_time_histogram")
    assert (histogram[(BOT_1, at(24), 250)]["bucket_upper_ms"], histogram[(BOT_1, at(24), 250)]["replies"]) == (
        500, 1)  # 250 ms exactly: [250, 500)
    assert histogram[(BOT_1, at(24), 3000)]["replies"] == 1  # 3000 ms (the fallback over midnight)
    assert histogram[(BOT_OF[UMBRELLA], at(3), 60000)]["bucket_upper_ms"] is None  # 45 min: the open bucket


def test_unparsable_timestamps_become_null(edge):
    scenario, *_ = edge
    with scenario.warehouse() as conn:
        values = conn.execute(
            "select raw.try_timestamptz('2026-02-30 10:00:00+00'), raw.try_timestamptz('yesterday-ish'), "
            "raw.try_timestamptz('2026-02-28 10:00:00+00')").fetchone()
    assert values[:2] == (None, None) and values[2] == datetime(2026, 2, 28, 10, tzinfo=UTC)


def test_a_day_rebuilt_alone_leaves_every_row_as_it_was(edge, engine, dagster_instance):
    """Idempotency on each engine: the second day built again by itself (on spark: its raw rows kept as they
    were landed, its mart partitions overwritten, published) gives back exactly the rows of the two-day build."""
    scenario, *_ = edge
    scenario.activate()  # another test of the module may have pointed the settings at its own databases

    def marts() -> dict:
        rows = {table: mart_rows(scenario.warehouse_url, table) for table in
                ("marts.conversation_metrics", "marts.bot_performance_metrics", "marts.usage_analytics",
                 "marts.response_time_histogram", "marts.metric_anomalies", "marts.bot_performance_metrics_local")}
        rows["marts.fct_bot_replies"] = fetch_table(scenario.warehouse_url, "marts.fct_bot_replies", "message_id")
        return rows

    before = marts()
    assert len(before["marts.fct_bot_replies"]) >= 9
    with engine_environment(engine):
        build_window(dagster_instance, date(2026, 4, 2), date(2026, 4, 3))
    assert marts() == before
