"""The simulator is deterministic, idempotent per day, and writes every kind of bad row."""

from __future__ import annotations

import hashlib
from datetime import date

from dagster_project.dev.simulate import BAD_CONVERSATION_KINDS, BAD_EVENT_KINDS, BAD_MESSAGE_KINDS, simulate


def digest(conn) -> dict[str, str]:
    out = {}
    for table, order in (("conversations", "id"), ("messages", "id"), ("api_events", "occurred_at, kind, bot_id")):
        rows = conn.execute(f"select * from {table} order by {order}").fetchall()
        if table == "api_events":
            rows = [r[1:] for r in rows]  # identity ids depend on insertion history
        out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return out


def test_same_seed_same_rows_and_rerun_adds_nothing(make_scenario):
    first = make_scenario("sim1")
    second = make_scenario("sim2")
    with first.source() as a, second.source() as b:
        summary = simulate(a, "public", date(2026, 3, 1), 2, seed=5, conversations_per_day=80)
        simulate(b, "public", date(2026, 3, 1), 2, seed=5, conversations_per_day=80)
        assert digest(a) == digest(b)
        before = digest(a)
        simulate(a, "public", date(2026, 3, 2), 1, seed=5, conversations_per_day=80)  # a day again
        assert digest(a) == before
        messages = a.execute("select count(*) from messages").fetchone()[0]
        assert messages == summary.messages
    kinds = {f"message_{k}" for k in BAD_MESSAGE_KINDS} | {f"conversation_{k}" for k in BAD_CONVERSATION_KINDS}
    kinds |= {f"api_event_{k}" for k in BAD_EVENT_KINDS}
    assert set(summary.bad_rows) == kinds and all(n >= 1 for n in summary.bad_rows.values())
    share = sum(summary.bad_rows.values()) / (summary.messages + summary.conversations + summary.api_events)
    assert 0.002 < share < 0.02


def test_other_seed_other_rows(make_scenario):
    a = make_scenario("sim3")
    with a.source() as conn:
        simulate(conn, "public", date(2026, 3, 1), 1, seed=1, conversations_per_day=50)
        first = digest(conn)
        simulate(conn, "public", date(2026, 3, 1), 1, seed=2, conversations_per_day=50)
        assert digest(conn)["messages"] != first["messages"]
