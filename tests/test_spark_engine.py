"""The oracle and edge-case tests again, with the marts built on Spark (docs/spark.md).

The tests are those of test_edge_cases.py and test_marts_match_oracle.py, called from here: their fixtures
build the same source rows through Dagster with BOTFLOW_ENGINE=spark, on a two-worker standalone cluster the
session starts (`spark_cluster`, conftest.py): the ingestion assets load the raw layer with its rules, the
mart assets land it as Parquet, compute the marts on the cluster and publish them into PostgreSQL, where
the tests read them. A module of its
own, not a parametrized fixture: the tests run in a random order, which would interleave the engines and
rebuild a module fixture per switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
import test_change_capture as change_capture
import test_edge_cases as edge_cases
import test_idempotency as idempotency
import test_marts_match_oracle as oracle_tests
import test_reports as reports
import test_superset as superset_tests
import test_tenant_isolation as tenant_isolation
from conftest import build_window, engine_environment, lenient_quality_limits, module_scenario, simulated_and_built

from dagster_project.core.settings import scoped_environment
from dagster_project.serve.superset.logins import user_login


@pytest.fixture(scope="module")
def engine() -> str:
    return "spark"


@pytest.fixture(scope="module")
def edge(dagster_instance, spark_cluster):
    with lenient_quality_limits(), module_scenario("spark_edge") as (scenario,):
        yield from edge_cases.build_edge_cases(scenario, dagster_instance, "spark")


@pytest.fixture(scope="module")
def marts_built(dagster_instance, spark_cluster):
    with oracle_tests.simulated_and_built(dagster_instance, "spark") as result:
        yield result


@contextmanager
def built_on_spark(instance, name: str, start: date, seed: int) -> Iterator:
    """Two simulated days from `start`, built on Spark; the block's runs stay on Spark."""
    with engine_environment("spark"), simulated_and_built(instance, name, start, 2, seed=seed) as (scenario,):
        yield scenario


# the shared tests, called from here (not imported: the random order buckets a test by the file that defines
# it, and would interleave these with their own module's, rebuilding both modules' fixtures at each switch)


def test_all_marts_equal_the_oracle(edge):
    edge_cases.test_all_marts_equal_the_oracle(edge)


def test_response_times_fallbacks_and_midnight(edge):
    edge_cases.test_response_times_fallbacks_and_midnight(edge)


def test_empty_hours_ties_and_zero_denominators(edge):
    edge_cases.test_empty_hours_ties_and_zero_denominators(edge)


def test_service_metrics_in_business_time(edge):
    edge_cases.test_service_metrics_in_business_time(edge)


def test_a_day_rebuilt_alone_leaves_every_row_as_it_was(edge, engine, dagster_instance):
    edge_cases.test_a_day_rebuilt_alone_leaves_every_row_as_it_was(edge, engine, dagster_instance)


def test_conversation_metrics_equal_oracle(marts_built):
    oracle_tests.test_conversation_metrics_equal_oracle(marts_built)


def test_bot_performance_metrics_equal_oracle(marts_built):
    oracle_tests.test_bot_performance_metrics_equal_oracle(marts_built)


def test_a_tenant_reads_only_its_organizations_rows_of_the_published_marts(edge):
    """Publishing replaces rows inside the isolated PostgreSQL marts: their policies hold for what Spark wrote."""
    from dagster_project.serve.superset.sync import ensure_superset_logins, ensure_user_login

    scenario, *_ = edge
    with scenario.warehouse() as owner:
        ensure_superset_logins(owner, tenant_isolation.KEY)
        ensure_user_login(owner, tenant_isolation.KEY, "alice", edge_cases.ORG_A)
        owner.commit()
        with psycopg.connect(tenant_isolation.login_url(scenario, user_login("alice"))) as tenant:
            compared = 0
            for relation in tenant_isolation.isolated_relations(owner):
                everything = tenant_isolation.frame(owner, f"select * from {relation}")
                expected = everything[everything["organization_id"] == edge_cases.ORG_A]
                got = tenant_isolation.frame(tenant, f"select * from {relation}")
                assert tenant_isolation.rows(got) == tenant_isolation.rows(expected), relation
                compared += len(expected)
            assert compared > 0 and tenant_isolation.frame(
                tenant, "select count(*) as n from marts.fct_bot_replies where organization_id <> "
                f"'{edge_cases.ORG_A}'")["n"][0] == 0


def test_bot_performance_metrics_local_equal_oracle(marts_built):
    """Built in the warehouse after the Spark marts are published (meta.built_in: warehouse)."""
    oracle_tests.test_bot_performance_metrics_local_equal_oracle(marts_built)


def test_response_time_histogram_equals_oracle(marts_built):
    oracle_tests.test_response_time_histogram_equals_oracle(marts_built)


def test_usage_analytics_equal_oracle(marts_built):
    oracle_tests.test_usage_analytics_equal_oracle(marts_built)


def test_sql_functions_are_exact_over_ranges(marts_built):
    oracle_tests.test_sql_functions_are_exact_over_ranges(marts_built)


def test_bot_summary_over_local_dates_is_exact_in_the_bots_zone(marts_built):
    oracle_tests.test_bot_summary_over_local_dates_is_exact_in_the_bots_zone(marts_built)


def test_superset_shows_the_marts_spark_built_each_organization_its_own(dagster_instance, spark_cluster,
                                                                        tmp_path_factory):
    """Superset reads the PostgreSQL marts whichever engine computed them: on marts Spark built and published,
    every chart's numbers equal pandas over the marts, and an organization's user sees its own rows only;
    again after Spark publishes a day while Superset serves (as every scheduled run does)."""
    with engine_environment("spark"), \
            superset_tests.serving(dagster_instance, tmp_path_factory, "spark_superset") as served:
        superset_tests.test_every_chart_shows_what_the_marts_hold(served)
        superset_tests.test_an_organization_user_sees_only_its_organization(served)  # grants org_analyst
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        build_window(dagster_instance, yesterday, yesterday + timedelta(days=1))
        superset_tests.charts_show_what_the_marts_hold(served, fresh=True)  # local days still open have grown
        scenario, s = served
        with scenario.warehouse() as conn:
            org = sorted(name for (name,) in conn.execute("select organization_name from marts.dim_organizations"))[0]
        analyst = superset_tests.SupersetApi(s.url, "org_analyst", "analyst-pw-1")
        assert {r["organization_name"] for r in superset_tests.chart_data(analyst, "bot_comparison")} == {org}


def test_late_rows_reach_the_marts_and_the_report_then_a_full_refresh_reprices_all_history(
        dagster_instance, spark_cluster, tmp_path):
    """Late messages and changed conversations, found by the change-capture sensor, rebuilt on Spark; the daily
    report read from the published marts; then, on the same warehouse (one build: the Spark tests are CI's
    longest), a price change and a full refresh."""
    out = tmp_path / "reports"
    report_settings = {"BOTFLOW_REPORTS_DIR": str(out), "BOTFLOW_REPORT_WAIT_MINUTES": "0",
                       "BOTFLOW_REPORT_RECIPIENTS": str(tmp_path / "none.toml")}
    with scoped_environment(report_settings), \
            built_on_spark(dagster_instance, "spark_cc", change_capture.START, seed=21) as scenario:
        change_capture.changes_reach_the_marts_once(scenario, dagster_instance)
        reports.daily_platform_report_equals_the_oracle(scenario, dagster_instance, "2026-06-02",
                                                        change_capture.START, 3, out)
        idempotency.full_refresh_reprices_all_history(scenario, dagster_instance, change_capture.START)


def test_raw_landed_from_the_same_rows_is_kept_and_a_changed_day_landed_again(edge, spark_cluster):
    """The hourly and the daily asset of a run land the window once: a day (a table landed whole) whose warehouse
    rows have not changed since they were landed is kept. A message replaced by ingestion (the same number of
    rows, a new load time) lands its day again, alone, with the new version; a full refresh lands whole once."""
    from dagster_project.core.window import Window
    from dagster_project.transform.spark.land import history_window, land_window
    from dagster_project.transform.spark.session import spark_session

    scenario, *_ = edge
    scenario.activate()
    spark, url = spark_session(spark_cluster), scenario.warehouse_url
    history = history_window(url)
    day = history.end.date() - timedelta(days=1)
    window = Window.days(day, day + timedelta(days=1))
    land_window(spark, url, window, progress=lambda _line: None)  # whatever another test of the module left
    assert land_window(spark, url, window, progress=lambda _line: None) == dict.fromkeys(
        ("organizations", "bots", "conversations", "messages", "api_events"), 0)

    def landed_version(message_id: str) -> str | None:  # in UTC, the session's time zone
        (row,) = spark.table("raw.messages").where(f"id = '{message_id}'").selectExpr(
            "date_format(updated_at, 'yyyy-MM-dd HH:mm:ss') as updated_at").collect()
        return row.updated_at

    with scenario.warehouse() as conn:
        message_id, updated_at = conn.execute(
            "select id::text, updated_at from raw.messages where created_at >= %s and created_at < %s order by id "
            "limit 1", (window.start, window.end)).fetchone()
        on_the_day = conn.execute("select count(*) from raw.messages where created_at >= %s and created_at < %s",
                                  (window.start, window.end)).fetchone()[0]
    try:
        for version in (datetime(2001, 1, 1, tzinfo=UTC), updated_at):  # a newer version, then the old one back
            with scenario.warehouse() as conn:  # as ingestion replaces a row (rules._replace_versions)
                conn.execute("update raw.messages set updated_at = %s, _loaded_at = now() where id = %s",
                             (version, message_id))
            landed = land_window(spark, url, window, progress=lambda _line: None)
            assert landed == {"organizations": 0, "bots": 0, "conversations": 0, "messages": on_the_day,
                              "api_events": 0}
            assert landed_version(message_id) == (version and version.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))
    finally:
        with scenario.warehouse() as conn:
            conn.execute("update raw.messages set updated_at = %s, _loaded_at = now() where id = %s",
                         (updated_at, message_id))

    with scenario.warehouse() as conn:  # a conversation changed: the table landed whole again
        conn.execute("update raw.conversations set _loaded_at = now() where id = "
                     "(select id from raw.conversations order by id limit 1)")
        conversations = conn.execute("select count(*) from raw.conversations").fetchone()[0]
    assert land_window(spark, url, window, progress=lambda _line: None)["conversations"] == conversations
    land_window(spark, url, history, progress=lambda _line: None, whole=True)
    assert set(land_window(spark, url, history, progress=lambda _line: None, whole=True).values()) == {0}
    assert set(land_window(spark, url, window, progress=lambda _line: None).values()) == {0}  # its days' too


def test_a_spark_build_waits_while_another_build_of_its_warehouse_runs(edge, spark_cluster):
    """Two builds of a warehouse (an hourly and a daily run: different pools) never land and read its raw
    tables at once: the second waits for the first's lock, says so, then builds."""
    import threading
    import time

    from dagster_project.core.window import Window
    from dagster_project.transform.spark.build import BUILD_LOCK, LOCK_POLL_S, WAITING, build_window

    scenario, *_ = edge
    scenario.activate()
    lines: list[str] = []
    built: list[dict] = []
    window = Window.days(date(2026, 4, 2), date(2026, 4, 3))
    build = threading.Thread(target=lambda: built.append(build_window(
        scenario.warehouse_url, spark_cluster, window, progress=lines.append)))
    with psycopg.connect(scenario.warehouse_url, autocommit=True) as other_build:
        other_build.execute("select pg_advisory_lock(%s)", (BUILD_LOCK,))
        build.start()
        deadline = time.monotonic() + 120
        while not lines:
            assert time.monotonic() < deadline and build.is_alive(), f"the build did not wait: {lines}"
            time.sleep(0.2)
        time.sleep(3 * LOCK_POLL_S)
        assert lines == [WAITING], "the build went on while another build held the lock"
    build.join(timeout=600)
    assert built and built[0]["published"]["fct_bot_replies"] > 0


def test_the_engine_setting_names_itself_when_wrong(monkeypatch):
    from dagster_project.core.settings import ConfigError, engine

    monkeypatch.setenv("BOTFLOW_ENGINE", "spark; drop table marts.fct_bot_replies")
    with pytest.raises(ConfigError, match="BOTFLOW_ENGINE=.* is not one of postgres, spark"):
        engine()
    monkeypatch.setenv("BOTFLOW_ENGINE", "Spark")
    assert engine() == "spark"


def test_the_metastore_password_stays_out_of_command_lines_and_other_users_files(tmp_path, monkeypatch):
    """The password of the metastore's database reaches Spark through a file only its owner reads, never
    through a process's arguments or environment."""
    from dagster_project.transform.spark.cluster import SparkCluster

    secret = "s3cret-metastore-pw"
    monkeypatch.setenv("BOTFLOW_SPARK_DIR", str(tmp_path))
    monkeypatch.setenv("BOTFLOW_SPARK_METASTORE_URL", f"postgresql://botflow:{secret}@127.0.0.1:5432/metastore")
    cluster = SparkCluster.from_env("postgresql://postgres@127.0.0.1:5432/unused")
    cluster.write_conf()
    conf = tmp_path / "conf" / "spark-defaults.conf"
    assert secret in conf.read_text() and conf.stat().st_mode & 0o077 == 0
    assert secret not in " ".join(f"{k}={v}" for k, v in cluster.environment().items())
    assert "jdbc:postgresql://127.0.0.1:5432/metastore" in conf.read_text()  # the URL itself carries no password
    assert f"{secret}@" not in conf.read_text()


def test_a_second_warehouse_in_the_same_process_is_refused(spark_cluster):
    """One session per process, on one metastore: a run for another warehouse (another metastore) in the
    same process is refused with the reason, never built into the first warehouse's tables."""
    import dataclasses

    from dagster_project.core.settings import ConfigError
    from dagster_project.transform.spark.session import spark_session

    spark_session(spark_cluster).catalog.databaseExists("raw")  # the session and its metastore client exist
    other = dataclasses.replace(spark_cluster,
                                metastore_url=spark_cluster.metastore_url.rsplit("/", 1)[0] + "/another_metastore")
    with pytest.raises(ConfigError, match="one warehouse per process on the Spark engine"):
        spark_session(other)


def test_without_a_cluster_the_run_says_how_to_start_one(tmp_path):
    from conftest import free_port

    from dagster_project.core.settings import ConfigError
    from dagster_project.transform.spark.cluster import SparkCluster
    from dagster_project.transform.spark.session import spark_session

    cluster = SparkCluster(home=tmp_path, master_port=free_port(), workers=2, worker_cores=1, worker_memory="1g",
                           metastore_url="postgresql://postgres@127.0.0.1:5432/unused")
    with pytest.raises(ConfigError, match=r"no Spark master answers on spark://127\.0\.0\.1:\d+: start it with "
                                          "`botflow spark up`"):
        spark_session(cluster)
