"""The Window type: the one form of a time window, from Dagster into the loader, dbt, GX and the runner."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.core.window import DBT_WINDOW_ENV, Window, partition_key

ROOT = Path(__file__).resolve().parent.parent
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", timezone="UTC")
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


def test_bounds_are_utc_and_the_window_is_never_empty():
    plus_two = timezone(timedelta(hours=2))
    window = Window(datetime(2026, 3, 1, 9, tzinfo=plus_two), datetime(2026, 3, 1, 12, tzinfo=plus_two))
    assert window.start == datetime(2026, 3, 1, 7, tzinfo=UTC) and window.start.tzinfo is UTC
    assert str(window) == "[2026-03-01T07:00:00+00:00, 2026-03-01T10:00:00+00:00)"
    with pytest.raises(ValueError, match="empty window"):
        Window(window.end, window.start)
    with pytest.raises(ValueError, match="has no time zone"):
        Window(datetime(2026, 3, 1), datetime(2026, 3, 2, tzinfo=UTC))


def test_days_are_whole_utc_days():
    window = Window.days(date(2026, 3, 1), date(2026, 3, 3))
    assert (window.start, window.end) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert window.duration == timedelta(days=2)


def test_what_each_consumer_reads():
    window = Window.days(date(2026, 3, 1), date(2026, 3, 2))
    assert window.dbt_env() == {DBT_WINDOW_ENV[0]: "2026-03-01T00:00:00+00:00",
                                DBT_WINDOW_ENV[1]: "2026-03-02T00:00:00+00:00"}
    assert window.sql_literals() == {"lo": "'2026-03-01T00:00:00+00:00'::timestamptz",
                                     "hi": "'2026-03-02T00:00:00+00:00'::timestamptz"}
    assert len(window.partition_keys(HOURLY)) == 24
    tags, n = window.range_tags(DAILY)
    assert n == 1 and set(tags.values()) == {"2026-03-01"}
    tags, n = window.range_tags(HOURLY)
    assert n == 24 and sorted(tags.values()) == ["2026-03-01-00:00", "2026-03-01-23:00"]


def test_a_window_before_the_first_partition_has_no_range():
    with pytest.raises(ValueError, match="no partitions of"):
        Window.days(date(2025, 1, 1), date(2025, 1, 2)).range_tags(DAILY)


def test_partition_keys_of_a_start():
    assert partition_key(HOURLY, datetime(2026, 3, 1, 7, tzinfo=UTC)) == "2026-03-01-07:00"
    assert partition_key(DAILY, datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01"


def test_a_steps_window_is_its_partitions():
    @dg.asset(partitions_def=HOURLY)
    def hours(context):
        return Window.of(context)

    result = dg.materialize([hours], partition_key="2026-03-01-07:00")
    assert result.output_for_node("hours") == Window(datetime(2026, 3, 1, 7, tzinfo=UTC),
                                                     datetime(2026, 3, 1, 8, tzinfo=UTC))


def test_every_data_test_of_a_partitioned_mart_is_scoped_to_the_window(tmp_path):
    """dbt_project.yml gives every data test `where: __window__`; macros/window.sql turns it into the
    tested model's window filter (its meta.window), so a partition run never tests all of history.
    Compiled by dbt itself with a window set: every test of a partitioned mart reads the window,
    a test of a dim does not."""
    import json
    import os
    import subprocess
    import sys

    from dagster_project.core.window import Window

    dbt = Path(sys.executable).with_name("dbt")
    project = ROOT / "dbt"
    window = Window(datetime(2026, 3, 1, 7, tzinfo=UTC), datetime(2026, 3, 1, 9, tzinfo=UTC))
    env = {**os.environ, **window.dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "BOTFLOW_DBT_HOST": "127.0.0.1", "BOTFLOW_DBT_PORT": "5432", "BOTFLOW_DBT_USER": "postgres",
           "BOTFLOW_DBT_DBNAME": "postgres"}
    subprocess.run([str(dbt), "compile", "--project-dir", str(project), "--profiles-dir", str(project),
                    "--target-path", str(tmp_path), "--no-partial-parse", "--select", "test_type:data"],
                   capture_output=True, text=True, env=env, check=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    windowed = {"fct_bot_replies", "conversation_metrics", "bot_performance_metrics", "usage_analytics",
                "response_time_histogram", "bot_performance_metrics_local"}
    seen = set()
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test" or not node.get("test_metadata"):
            continue
        model = manifest["nodes"][node["attached_node"]]["name"]
        sql = node["compiled_code"]
        reads_window = window.start.isoformat() in sql and window.end.isoformat() in sql
        assert reads_window == (model in windowed), f"{node['name']} on {model}:\n{sql}"
        seen.add(model)
    assert windowed <= seen
