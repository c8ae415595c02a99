"""What change capture cannot see reaches the marts through reconciliation, with nobody involved (issue #14).

First the sensor and jobs evaluated in this process, step by step; then the same with the product's own
daemon running and nobody touching it.

A built window, then changes that leave no trace in `updated_at` past change capture's mark: rows
deleted from the source, a late row stamped months behind the mark (an import, a slow clock), a reused
id whose newer version is stamped behind the mark too, a conversation's end moved to a later hour,
and a bot's default-model change. Change capture alone requests nothing and the marts are wrong;
after one reconciliation, change capture's requests (run as the daemon would) leave marts equal to
the pandas oracle, and a second reconciliation finds nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import oracle
import pytest
from conftest import build_window, drop_keys, lenient_quality_limits, module_scenario, run_job, settle, tick
from marts_contract import assert_equal_to_oracle, mart_rows
from processes import REPO_ROOT, Process, assert_marts_are_exact, drop_stack, make_stack, warnings_of_our_code

from dagster_project.core.policies import ACTIVE_RUN_STATUSES as ACTIVE
from dagster_project.core.settings import scoped_environment
from dagster_project.dev.simulate import simulate

START, END = date(2026, 6, 1), date(2026, 6, 3)
WINDOW = oracle.Window(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 3, tzinfo=UTC))
MARTS = ("marts.conversation_metrics", "marts.bot_performance_metrics", "marts.usage_analytics")


@pytest.fixture(scope="module")
def built(dagster_instance):
    # the scenario lies months before today: reconcile a year back
    with lenient_quality_limits(), scoped_environment({"BOTFLOW_RECONCILE_DAYS": "365"}), \
            module_scenario("recon") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", START, 2, seed=33, conversations_per_day=60)
            drop_keys(conn)  # a reused id must be possible, as in a source without enforced keys
        build_window(dagster_instance, START, END)
        yield scenario


def expected(scenario) -> dict[str, dict]:
    src = oracle.read_source(scenario.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    return {
        "marts.conversation_metrics": oracle.conversation_metrics(valid, WINDOW),
        "marts.bot_performance_metrics": oracle.bot_performance_metrics(valid, WINDOW),
        "marts.usage_analytics": oracle.usage_analytics(valid, WINDOW, oracle.phone_map(src)),
    }


def reconcile(instance) -> dict:
    result = run_job(instance, "reconciliation_job")
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def change_the_source_behind_the_mark(scenario) -> dict[str, object]:
    """Changes whose updated_at lies behind change capture's mark (or that have none: deletions)."""
    with scenario.source() as conn:
        mark = conn.execute("select max(updated_at) from messages").fetchone()[0]
        behind = mark - timedelta(days=1)  # far more than the overlap
        # a whole conversation deleted (and its messages), and one bot reply deleted
        gone_conv = conn.execute("select id from conversations where started_at::date = '2026-06-01' "
                                 "and status = 'resolved' order by id limit 1").fetchone()[0]
        conn.execute("delete from messages where conversation_id = %s", (gone_conv,))
        conn.execute("delete from conversations where id = %s", (gone_conv,))
        gone_reply = conn.execute("select id from messages where direction = 'outbound' and response_time_ms "
                                  "is not null and created_at::date = '2026-06-02' order by id limit 1").fetchone()[0]
        conn.execute("delete from messages where id = %s", (gone_reply,))
        # a late inbound message and its reply, imported with an old updated_at
        conv, started = conn.execute(
            "select id, started_at from conversations where started_at::date = '2026-06-01' and status = 'active' "
            "and id <> %s order by id limit 1", (gone_conv,)).fetchone()
        for direction, seconds, rt, outcome in (("inbound", 60, None, None), ("outbound", 63, 3000, "success")):
            conn.execute("insert into messages (id, conversation_id, direction, created_at, response_time_ms, "
                         "outcome, prompt_tokens, completion_tokens, updated_at) values (%s, %s, %s, %s, %s, %s, "
                         "40, 20, %s)", (uuid.uuid4(), conv, direction, started + timedelta(seconds=seconds), rt,
                                         outcome, behind))
        # a reused id: a newer version of a reply, 3 hours later, stamped behind the mark too
        reused, updated = conn.execute(
            "select id, updated_at from messages where direction = 'outbound' and created_at::date = "
            "'2026-06-02' and created_at < '2026-06-02 20:00+00' and id <> %s order by id desc limit 1",
            (gone_reply,)).fetchone()
        conn.execute("insert into messages (id, conversation_id, direction, created_at, response_time_ms, outcome, "
                     "llm_model, prompt_tokens, completion_tokens, updated_at) select id, conversation_id, direction, "
                     "created_at + interval '3 hours', 4321, 'fallback', null, 111, 222, %s from messages "
                     "where id = %s", (max(updated, behind) + timedelta(seconds=1), reused))
        # a conversation's end moves 3 hours later (an hour no message of it is in), stamped behind the mark
        ended = conn.execute("select id from conversations where started_at::date = '2026-06-02' and status = "
                             "'resolved' and ended_at < '2026-06-02 18:00+00' order by id limit 1").fetchone()[0]
        conn.execute("update conversations set ended_at = ended_at + interval '3 hours', "
                     "updated_at = greatest(updated_at, %s) + interval '1 second' where id = %s", (behind, ended))
        # a bot's default model changes (bots are not change-captured; every load syncs them)
        bot = conn.execute("select b.id from bots b join conversations c on c.bot_id = b.id join messages m on "
                           "m.conversation_id = c.id where m.direction = 'outbound' and m.llm_model is null "
                           "and b.llm_model <> 'gpt-4o' group by b.id order by count(*) desc limit 1").fetchone()[0]
        conn.execute("update bots set llm_model = 'gpt-4o', updated_at = now() where id = %s", (bot,))
        conn.commit()
    return {"conversation": gone_conv, "reply": gone_reply, "reused": reused}


def test_a_clean_build_reconciles(built, dagster_instance):
    built.activate()
    with scoped_environment({"BOTFLOW_RECONCILE_DAYS": "365"}):
        found = reconcile(dagster_instance)
    assert found["hours_compared"] == 48 and found["drifted"] == 0 and found["hours_marked_stale"] == 0


def test_what_change_capture_cannot_see_reaches_the_marts(built, dagster_instance):
    scenario = built
    scenario.activate()
    _, cursor = tick(dagster_instance, scenario, None)  # change capture starts at the source's mark
    changed = change_the_source_behind_the_mark(scenario)

    result, cursor = tick(dagster_instance, scenario, cursor)
    assert not result.run_requests  # change capture alone sees none of it
    with pytest.raises(AssertionError):  # and the marts are wrong
        assert_equal_to_oracle(MARTS[0], mart_rows(scenario.warehouse_url, MARTS[0]), expected(scenario)[MARTS[0]])

    with scoped_environment({"BOTFLOW_RECONCILE_DAYS": "365", "BOTFLOW_MAX_REJECTED_SHARE": "1",
                             "BOTFLOW_MAX_REPAIRED_SHARE": "1"}):
        found = reconcile(dagster_instance)
        assert found["drifted"] >= 3 and found["hours_marked_stale"] >= 3
        cursor, runs = settle(dagster_instance, scenario, cursor)
        assert {r.job_name for r in runs} == {"hourly_partition_job", "daily_partition_job"}
        assert len(runs) < found["hours_marked_stale"] + 2  # range runs, not one run per hour
        with scenario.warehouse() as wh:  # every stale hour was loaded again
            assert wh.execute("select hour, reason from raw.stale_hours").fetchall() == []
        again = reconcile(dagster_instance)
    assert again["drifted"] == 0

    want = expected(scenario)
    for table in MARTS:
        assert_equal_to_oracle(table, mart_rows(scenario.warehouse_url, table), want[table])
    conversations = mart_rows(scenario.warehouse_url, "marts.conversation_metrics")
    assert changed["conversation"] not in conversations
    with scenario.warehouse() as wh:
        replies = {r[0] for r in wh.execute("select message_id from marts.fct_bot_replies")}
        versions = wh.execute("select prompt_tokens, response_time_ms from marts.fct_bot_replies "
                              "where message_id = %s", (changed["reused"],)).fetchall()
        stale_cost = wh.execute(
            "select count(*) from marts.fct_bot_replies f join raw.messages m on m.id = f.message_id "
            "join raw.conversations c on c.id = m.conversation_id join raw.bots b on b.id = c.bot_id "
            "where m.llm_model is null and f.llm_model is distinct from b.llm_model").fetchone()[0]
    assert changed["reply"] not in replies
    assert versions == [(111, 4321)]  # the newer version, once
    assert stale_cost == 0  # every reply priced by its bot's current default model


def sensor_has_ticked(instance: dg.DagsterInstance, name: str) -> bool:
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            return bool(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1))
    return False


def test_with_the_daemon_running_and_nobody_touching_it(tmp_path):
    """`botflow run` builds two days; then the daemon alone (change capture, reconciliation every minute,
    the runs they launch) brings deletions, late rows stamped behind the mark, a reused id, a bot's model
    change and an ordinary late message into marts equal to the oracle."""
    stack = make_stack(tmp_path, "daemon", days=2)
    daemon = None
    try:
        with stack.source() as conn:
            drop_keys(conn)
        built = Process(stack.env, "run", "--start", "2026-06-01", "--end", "2026-06-03")
        assert built.finish() == 0, built.output
        env = dict(stack.env, BOTFLOW_RECONCILE_CRON="* * * * *", BOTFLOW_RECONCILE_DAYS="365")
        daemon = Process(env, "run", "-w", str(REPO_ROOT / "workspace.yaml"),
                         command=[str(Path(sys.executable).with_name("dagster-daemon"))], cwd=str(REPO_ROOT))
        with stack.instance() as instance:
            deadline = time.monotonic() + 180
            while not sensor_has_ticked(instance, "change_capture_sensor"):
                assert time.monotonic() < deadline, "change_capture_sensor never ticked:\n" + daemon.output
                time.sleep(2)
        changed = change_the_source_behind_the_mark(stack)
        with stack.source() as conn:  # and an ordinary late message, stamped now
            conn.execute("insert into messages (id, conversation_id, direction, created_at, updated_at) "
                         "select gen_random_uuid(), id, 'inbound', started_at + interval '2 minutes', now() "
                         "from conversations where started_at::date = '2026-06-02' order by id limit 1")
        began = time.monotonic()
        deadline, last = began + 600, "nothing compared yet"
        while time.monotonic() < deadline:
            time.sleep(15)
            with stack.instance() as instance:
                busy = [f"{r.job_name} {r.status.value}" for r in
                        instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE), limit=20)]
            with stack.warehouse() as wh:
                stale = wh.execute("select hour, reason from raw.stale_hours order by hour").fetchall()
            if busy or stale:
                last = f"busy: {busy}; stale: {stale}"
                continue
            try:
                assert_marts_are_exact(stack, days=2)
                break
            except AssertionError as exc:
                last = str(exc)[:2000]
        else:
            with stack.instance() as instance:
                runs = [(r.job_name, r.status.value, r.tags.get("botflow/reason", "")) for r in instance.get_runs()]
            raise AssertionError(f"the marts did not converge in 10 minutes: {last}\nruns: {runs}\n"
                                 + daemon.output[-4000:])
        print(f"converged {time.monotonic() - began:.0f} s after the changes")
        with stack.warehouse() as wh:
            assert wh.execute("select count(*) from marts.conversation_metrics where conversation_id = %s",
                              (changed["conversation"],)).fetchone()[0] == 0
        with stack.instance() as instance:
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert not failed, [(r.job_name, r.run_id) for r in failed]
        assert warnings_of_our_code(daemon.output) == []  # the daemon and the runs it launched
    finally:
        if daemon is not None:
            os.killpg(daemon.proc.pid, signal.SIGTERM)
            daemon.finish(timeout=60)
        drop_stack(stack)
