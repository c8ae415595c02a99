"""Every rule fails, naming itself, on a warehouse where it was broken on purpose: the raw layer's in
great-expectations, the marts' in dbt (each rule is checked in one place); and a failed blocking check
stops the partition's downstream assets."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from conftest import build_window, module_scenario

from dagster_project.core.window import Window
from dagster_project.dev.simulate import simulate
from dagster_project.quality.checks import SUITES, run_suite

LO, HI = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 2, tzinfo=UTC)
SUITE = {s.name: s for s in SUITES}

# (suite, rule named in the failure, SQL that breaks it inside the window): the raw layer's rules
BREAKAGES = [
    ("raw_messages", "prompt_tokens >= 0",
     "update raw.messages set prompt_tokens = -1 where id = (select id from raw.messages "
     "where created_at >= '2026-07-01' and direction = 'outbound' limit 1)"),
    ("raw_quality", "quarantined share of a rule <= BOTFLOW_MAX_REJECTED_SHARE",
     "insert into raw.quarantine (source_table, source_id, rule, partition_hour, run_id) "
     "select 'messages', g::text, 'message_direction_unknown', '2026-07-01 09:00+00', 'test' "
     "from generate_series(1, 5000) g"),
]


# (mart, the dbt test that must fail: its generic test and column, SQL that breaks it inside the window)
MART_BREAKAGES = [
    ("conversation_metrics", ("unique", "id"),
     "update marts.conversation_metrics set id = (select id from marts.conversation_metrics "
     "where started_at >= '2026-07-01' order by id limit 1) where conversation_id = (select conversation_id "
     "from marts.conversation_metrics where started_at >= '2026-07-01' order by id offset 1 limit 1)"),
    ("conversation_metrics", ("message_totals_add_up", None),
     "update marts.conversation_metrics set total_messages = total_messages + 1 where conversation_id = "
     "(select conversation_id from marts.conversation_metrics where started_at >= '2026-07-01' limit 1)"),
    ("conversation_metrics", ("percentiles_ordered", None),
     "update marts.conversation_metrics set p50_response_time_ms = p95_response_time_ms + 1 where conversation_id = "
     "(select conversation_id from marts.conversation_metrics where p95_response_time_ms is not null "
     "and started_at >= '2026-07-01' limit 1)"),
    ("conversation_metrics", ("p99_at_most_the_slowest_reply", None),
     "update marts.conversation_metrics set p99_response_time_ms = 10000000 where conversation_id = "
     "(select conversation_id from marts.conversation_metrics where p99_response_time_ms is not null "
     "and started_at >= '2026-07-01' limit 1)"),
    ("conversation_metrics", ("within_range", "estimated_cost_usd"),
     "update marts.conversation_metrics set estimated_cost_usd = -1 where conversation_id = "
     "(select conversation_id from marts.conversation_metrics where started_at >= '2026-07-01' limit 1)"),
    ("bot_performance_metrics", ("within_range", "success_rate"),
     "update marts.bot_performance_metrics set success_rate = 150 where date = '2026-07-01' "
     "and bot_id = (select min(bot_id::text)::uuid from marts.bot_performance_metrics)"),
    ("bot_performance_metrics", ("within_range", "total_messages"),
     "update marts.bot_performance_metrics set total_messages = -3 where date = '2026-07-01' "
     "and bot_id = (select min(bot_id::text)::uuid from marts.bot_performance_metrics)"),
    ("bot_performance_metrics", ("p99_at_most_the_slowest_reply", None),
     "update marts.bot_performance_metrics set p99_response_time_ms = 10000000 where date = '2026-07-01' "
     "and bot_id = (select min(bot_id::text)::uuid from marts.bot_performance_metrics "
     "where p99_response_time_ms is not null)"),
    ("usage_analytics", ("every_active_hour_has_a_row", None),
     "delete from marts.usage_analytics where hour = '2026-07-01 14:00+00'"),
    ("usage_analytics", ("within_range", "messages_sent"),
     "update marts.usage_analytics set messages_sent = -1 where hour = '2026-07-01 14:00+00'"),
]


TOUCHED = ["marts.conversation_metrics", "marts.bot_performance_metrics", "marts.usage_analytics",
           "raw.messages", "raw.quarantine"]


@pytest.fixture(scope="module")
def warehouse(dagster_instance):
    with module_scenario("gx") as (scenario,):
        with scenario.source() as conn:
            simulate(conn, "public", date(2026, 7, 1), 1, seed=31, conversations_per_day=200)
        build_window(dagster_instance, date(2026, 7, 1), date(2026, 7, 2))
        with scenario.warehouse() as conn:
            conn.execute("create schema backup")
            for table in TOUCHED:
                conn.execute(f"create table backup.{table.replace('.', '__')} as table {table}")
            conn.commit()
        yield scenario


def restore(scenario) -> None:
    with scenario.warehouse() as conn:
        for table in TOUCHED:
            conn.execute(f"delete from {table}")
            conn.execute(f"insert into {table} table backup.{table.replace('.', '__')}")
        conn.commit()


def test_every_suite_passes_on_the_built_warehouse(warehouse):
    for suite in SUITES:
        result = run_suite(suite, warehouse.warehouse_url, Window(LO, HI))
        assert result.success, f"{suite.name}: {result.description}"
        assert result.evaluated == len(suite.rules)


@pytest.mark.parametrize(("suite", "rule", "breakage"), BREAKAGES, ids=[f"{s}:{r}" for s, r, _ in BREAKAGES])
def test_each_rule_fails_when_broken_naming_the_rule(warehouse, suite, rule, breakage):
    with warehouse.warehouse() as conn:
        conn.execute(breakage)
        conn.commit()
    try:
        result = run_suite(SUITE[suite], warehouse.warehouse_url, Window(LO, HI))
    finally:
        restore(warehouse)  # the next case starts from the valid warehouse
    assert not result.success
    assert rule in result.failures, result.description
    assert f"rule '{rule}'" in result.description


def failing_dbt_tests(scenario, model: str) -> set[tuple[str, str | None]]:
    """`dbt test` of the model's data tests over the window [LO, HI): (generic test, column) of each failure."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from conftest import REPO

    scenario.activate()
    dbt = Path(sys.executable).with_name("dbt")
    with tempfile.TemporaryDirectory() as target:
        subprocess.run([str(dbt), "test", "--select", f"{model},test_type:data", "--project-dir", str(REPO / "dbt"),
                        "--profiles-dir", str(REPO / "dbt"), "--target-path", target],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, **Window(LO, HI).dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
        results = json.loads((Path(target) / "run_results.json").read_text())["results"]
        nodes = json.loads((Path(target) / "manifest.json").read_text())["nodes"]
    assert results, "dbt ran no test"
    errors = [r for r in results if r["status"] == "error"]
    assert errors == [], errors
    return {(nodes[r["unique_id"]]["test_metadata"]["name"], nodes[r["unique_id"]].get("column_name"))
            for r in results if r["status"] == "fail"}


def test_every_mart_test_passes_on_the_built_warehouse(warehouse):
    for model in ("conversation_metrics", "bot_performance_metrics", "usage_analytics"):
        assert failing_dbt_tests(warehouse, model) == set(), model


@pytest.mark.parametrize(("model", "test", "breakage"), MART_BREAKAGES,
                         ids=[f"{m}:{t[0]}:{t[1]}" for m, t, _ in MART_BREAKAGES])
def test_each_mart_rule_fails_in_dbt_when_broken(warehouse, model, test, breakage):
    with warehouse.warehouse() as conn:
        conn.execute(breakage)
        conn.commit()
    try:
        failing = failing_dbt_tests(warehouse, model)
    finally:
        restore(warehouse)
    assert test in failing, failing


def test_a_suite_validates_the_warehouse_it_is_given_each_time(warehouse):
    """The GX context is kept per process: validating another warehouse must not reuse the first's
    connection."""
    import psycopg
    from conftest import create_database, drop_database

    from dagster_project.ingest.schema import ensure_raw_schema

    other = create_database("bf_test_gx_other")
    try:
        with psycopg.connect(other) as conn:
            ensure_raw_schema(conn)
            conn.execute("insert into raw.messages (id, conversation_id, direction, created_at, prompt_tokens, "
                         "completion_tokens) values (gen_random_uuid(), gen_random_uuid(), 'outbound', "
                         "'2026-07-01 10:00+00', -5, 0)")
        suite = SUITE["raw_messages"]
        assert run_suite(suite, warehouse.warehouse_url, Window(LO, HI)).success
        broken = run_suite(suite, other, Window(LO, HI))
        assert not broken.success and "prompt_tokens >= 0" in broken.failures
        assert run_suite(suite, warehouse.warehouse_url, Window(LO, HI)).success
    finally:
        drop_database("bf_test_gx_other")


def test_data_docs_render_the_stored_validations(warehouse):
    """`botflow gx-docs` renders every stored validation result (the checks themselves do not)."""
    from dagster_project.quality.checks import build_data_docs

    run_suite(SUITE["raw_messages"], warehouse.warehouse_url, Window(LO, HI))
    index = build_data_docs()
    assert index.is_file()
    assert "raw_messages" in index.read_text()


def test_quarantine_rule_is_named_and_limit_is_configurable(warehouse, monkeypatch):
    monkeypatch.setenv("BOTFLOW_MAX_REJECTED_SHARE", "0.0001")
    result = run_suite(SUITE["raw_quality"], warehouse.warehouse_url, Window(LO, HI))
    assert not result.success
    assert "message_conversation_rejected" in result.description  # the source rule that rose


def test_a_failed_blocking_check_stops_the_partitions_downstream(warehouse, dagster_instance, monkeypatch):
    from dagster_project.automation.runner import QUIET_LOGS
    from dagster_project.definitions import defs

    warehouse.activate()
    monkeypatch.setenv("BOTFLOW_MAX_REJECTED_SHARE", "0.0001")
    result = defs.resolve_job_def("hourly_partition_job").execute_in_process(
        instance=dagster_instance, partition_key="2026-07-01-14:00", run_config=QUIET_LOGS, raise_on_error=False)
    assert not result.success
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    failed = [e for e in evaluations if not e.passed]
    assert [e.check_name for e in failed] == ["gx_raw_quality"]
    assert "quarantined share of a rule" in failed[0].description
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert "dbt_hourly" in skipped or not any(
        e.step_key == "dbt_hourly" and e.event_type_value == "STEP_SUCCESS" for e in result.all_events)


def test_marts_freshness_policies_pass_when_just_built_and_fail_a_day_later(warehouse, dagster_instance):
    """Dagster's freshness daemon, over this code location, evaluates the marts' policies: the module
    built every mart minutes ago (fresh); 28 hours later both the 2-hour window and the 03:00 UTC
    deadline have passed (stale)."""
    from datetime import timedelta

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    from dagster_project.transform.freshness import DAILY_MARTS, HOURLY_MARTS

    warehouse.activate()
    marts = [*HOURLY_MARTS, *DAILY_MARTS]
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="dagster_project.definitions"),
                                         location_name="botflow")

    def states() -> dict[str, str]:
        with WorkspaceProcessContext(dagster_instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
            list(FreshnessDaemon().run_iteration(workspace))
        records = dagster_instance.get_freshness_state_records(marts)
        return {key.path[-1]: records[key].freshness_state.value for key in marts}

    assert states() == dict.fromkeys(["fct_bot_replies", "usage_analytics", "response_time_histogram",
                                      "conversation_metrics", "bot_performance_metrics",
                                      "bot_performance_metrics_local", "metric_anomalies"], "PASS")
    with freeze_time(datetime.now(UTC) + timedelta(hours=28)):
        assert set(states().values()) == {"FAIL"}
