"""The code location loads, and its schedules, policies and partitions are what the design says."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import dagster as dg
import pytest

from dagster_project.core.policies import RETRY_POLICY
from dagster_project.definitions import defs


def test_definitions_load_with_the_expected_assets_and_jobs():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw/messages", "raw/conversations", "raw/api_events", "marts/fct_bot_replies",
            "marts/conversation_metrics", "marts/bot_performance_metrics", "marts/usage_analytics"} <= keys
    for job in ("hourly_partition_job", "daily_partition_job", "dbt_views_job"):
        assert defs.resolve_job_def(job)


PENDING = "pending"  # a report's catch-up run: the organizations whose local period had not ended (build.py)


@pytest.mark.parametrize(
    ("schedule", "tick", "partitions"),
    [
        ("hourly_at_05", datetime(2026, 3, 1, 10, 5, tzinfo=UTC), [("2026-03-01-09:00", None)]),
        ("hourly_at_05", datetime(2026, 3, 2, 0, 5, tzinfo=UTC), [("2026-03-01-23:00", None)]),
        ("daily_at_0100", datetime(2026, 3, 2, 1, 0, tzinfo=UTC), [("2026-03-01", None)]),
        # yesterday's reports, and the catch-up of the day before's for the zones west of UTC
        ("daily_report_at_0700", datetime(2026, 3, 2, 7, 0, tzinfo=UTC), [("2026-03-01", None),
                                                                          ("2026-02-28", PENDING)]),
        # Monday 2026-03-09 07:00: the ISO week Monday 2026-03-02 .. Sunday 2026-03-08; Tuesday: its catch-up
        ("weekly_report_monday_0700", datetime(2026, 3, 9, 7, 0, tzinfo=UTC), [("2026-03-02", None)]),
        ("weekly_report_monday_0700", datetime(2026, 3, 10, 7, 0, tzinfo=UTC), [("2026-03-02", PENDING)]),
    ],
)
def test_schedules_target_the_previous_partition(schedule, tick, partitions):
    schedule_def = defs.resolve_schedule_def(schedule)
    assert schedule_def.cron_schedule == {"hourly_at_05": "5 * * * *", "daily_at_0100": "0 1 * * *",
                                          "daily_report_at_0700": "0 7 * * *",
                                          "weekly_report_monday_0700": "0 7 * * 1,2"}[schedule]
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        result = schedule_def.evaluate_tick(context)
    assert [(r.partition_key, r.tags.get("botflow/reports")) for r in result.run_requests] == partitions
    assert len({r.run_key for r in result.run_requests}) == len(partitions)


def test_partitioned_assets_backfill_as_one_run_retry_and_use_pools():
    graph = defs.resolve_asset_graph()
    expectations = {
        "raw/messages": ("HourlyPartitionsDefinition", "botflow_raw"),
        "marts/usage_analytics": ("HourlyPartitionsDefinition", "botflow_dbt_hourly"),
        "marts/fct_bot_replies": ("HourlyPartitionsDefinition", "botflow_dbt_hourly"),
        "marts/conversation_metrics": ("DailyPartitionsDefinition", "botflow_dbt_daily"),
        "marts/bot_performance_metrics": ("DailyPartitionsDefinition", "botflow_dbt_daily"),
    }
    for key, (partitions, pool) in expectations.items():
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert type(node.partitions_def).__name__ == partitions
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assets_def = graph.assets_def_for_key(node.key)
        assert assets_def.op.retry_policy == RETRY_POLICY
        assert assets_def.op.pool == pool
    assert RETRY_POLICY.max_retries == 2 and RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL  # 3 attempts


def test_instance_config_limits_runs_and_pools(dagster_instance):
    import yaml

    from dagster_project.core.settings import DAGSTER_YAML

    config = yaml.safe_load(DAGSTER_YAML.read_text())
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 5
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert "postgres" in config["storage"]
    assert type(dagster_instance.run_storage).__name__ == "PostgresRunStorage"


def test_a_dead_runs_pool_slot_is_freed_once_the_run_is_terminated(dagster_instance):
    """A run killed mid-step never releases its pool slot; terminated in the UI, the daemon frees it."""
    import time

    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

    storage, pool = dagster_instance.event_log_storage, "botflow_test_dead_run"
    assert storage.initialize_concurrency_limit_to_default(pool)
    dead = dagster_instance.add_run(DagsterRun(job_name="hourly_partition_job", status=DagsterRunStatus.STARTED))
    assert storage.claim_concurrency_slot(pool, dead.run_id, "raw_ingestion").is_claimed
    waiting = storage.claim_concurrency_slot(pool, "next-run", "raw_ingestion")
    assert not waiting.is_claimed  # the pool's only slot is held by the dead run

    class Workspace:  # the daemon's workspace context: this iteration only needs the instance
        instance = dagster_instance

    dagster_instance.report_run_canceled(dead)  # what Terminate does when the run's process is gone
    timeout = dagster_instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
    list(execute_concurrency_slots_iteration(Workspace(), logging.getLogger("test")))
    assert not storage.claim_concurrency_slot(pool, "next-run", "raw_ingestion").is_claimed  # not yet
    time.sleep(timeout + 1.5)
    list(execute_concurrency_slots_iteration(Workspace(), logging.getLogger("test")))
    assert storage.claim_concurrency_slot(pool, "next-run", "raw_ingestion").is_claimed


LOAD_BOTH_LOCATIONS = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import dagster_project.definitions as botflow
    import dagster_project.live_definitions as live
    for defs in (botflow.defs, live.defs):
        repo = defs.get_repository_def()  # what a code server, the webserver and the daemon load
        repo.get_all_jobs(), repo.schedule_defs, repo.sensor_defs, repo.asset_graph.get_all_asset_keys()
for w in caught:
    print(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}")
"""


def test_loading_the_code_locations_raises_no_warning_from_our_code():
    """A fresh process loads both code locations as Dagster's processes do: no warning points at our code
    (the test suite also turns such warnings into errors: pyproject.toml, filterwarnings)."""
    import subprocess
    import sys

    from processes import warnings_of_our_code

    from dagster_project.core.settings import REPO_ROOT

    out = subprocess.run([sys.executable, "-c", LOAD_BOTH_LOCATIONS], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    assert warnings_of_our_code(out) == [], out


IMPORT_ONLY = """
import sys
from dagster._core.workspace.autodiscovery import loadable_targets_from_loaded_module
import dagster_project.definitions as botflow, dagster_project.live_definitions as live
HEAVY = ("dagster_dbt", "great_expectations", "pgserver", "dagster_project.transform.assets")
heavy = [m for m in HEAVY if m in sys.modules]
print("heavy:", heavy)
print("targets:", [t.attribute for m in (botflow, live) for t in loadable_targets_from_loaded_module(m)])
"""


def test_importing_the_code_locations_does_no_work(tmp_path):
    """Importing a code location starts no PostgreSQL, parses no dbt project and imports neither dbt nor
    GX: Dagster finds the @dg.definitions functions and calls them when it loads the location."""
    import os
    import subprocess
    import sys

    from dagster_project.core.settings import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTFLOW_", "DAGSTER_HOME"))}
    env["BOTFLOW_HOME"] = str(tmp_path)  # embedded: loading would start a PostgreSQL here
    out = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT, env=env).stdout
    assert "heavy: []" in out, out
    assert "targets: ['botflow', 'botflow_live']" in out, out
    assert list(tmp_path.iterdir()) == []


def _exposures() -> dict:
    import json

    from dagster_project.transform.assets import MANIFEST_JSON

    return {e["name"]: e for e in json.loads(json.dumps(MANIFEST_JSON))["exposures"].values()}


def test_every_exposure_ends_the_asset_graph_with_the_marts_it_reads():
    """Each exposure of models/_exposures.yml is an asset (a spec, or the report asset it names) whose
    parents are exactly the exposure's dependencies."""
    from dagster_project.serve.exposures import exposure_deps
    from dagster_project.transform.assets import MANIFEST_JSON

    graph = defs.resolve_asset_graph()
    exposures = _exposures()
    assert set(exposures) == {"bot_performance_dashboard", "usage_dashboard", "live_dashboard", "daily_report",
                              "weekly_report", "csv_export"}
    for name, exposure in exposures.items():
        key = dg.AssetKey((exposure.get("meta", {}).get("dagster_asset") or f"exposures/{name}").split("/"))
        assert set(graph.get(key).parent_keys) == set(exposure_deps(MANIFEST_JSON, exposure)), name


def test_each_dashboard_exposure_lists_every_table_its_datasets_read():
    """superset/dashboards.yaml: the tables in the SQL of a dashboard's datasets are the exposure's."""
    import re

    from dagster_project.serve.superset.bundle import load_spec

    spec = load_spec()
    exposures = _exposures()
    for slug, dashboard in spec["dashboards"].items():
        charts = [chart for row in dashboard["rows"] for chart in row]
        datasets = {spec["charts"][chart]["dataset"] for chart in charts}
        read = {m for ds in datasets for m in re.findall(r"\b(?:marts|live)\.(\w+)", spec["datasets"][ds]["sql"])}
        exposure = exposures[slug.replace("-", "_") + "_dashboard"]
        listed = {node.rsplit(".", 1)[-1] for node in exposure["depends_on"]["nodes"]}
        assert read == listed, slug


def test_processes_that_load_the_code_together_parse_the_manifest_once(tmp_path):
    """On a fresh clone every process that loads the code (pytest workers, `botflow ui`'s webserver and
    daemon) finds no dbt manifest and parses one: none of them reads another's half-written manifest."""
    import json
    import shutil
    import subprocess
    import sys

    from dagster_project.core.settings import DBT_PROJECT_DIR, REPO_ROOT

    project = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    shutil.copytree(REPO_ROOT / "models", tmp_path / "models")
    load = ("import json, pathlib, sys\n"
            "from dagster_project.transform.project import ensure_manifest\n"
            "json.loads(ensure_manifest(pathlib.Path(sys.argv[1])).read_text())\n")
    loaders = [subprocess.Popen([sys.executable, "-c", load, str(project)], cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    manifest, torn = project / "target" / "manifest.json", []
    while any(p.poll() is None for p in loaders):  # what any other process would read meanwhile
        try:
            text = manifest.read_text()
            json.loads(text)
        except FileNotFoundError:
            pass
        except json.JSONDecodeError as error:
            torn.append(f"{error} in {len(text)} characters")
    outputs = [(p.returncode, p.communicate(timeout=300)[0]) for p in loaders]
    assert not torn, torn[:3]
    assert [code for code, _ in outputs] == [0, 0, 0, 0], [out[-2000:] for _, out in outputs]
    assert "conversation_metrics" in json.dumps(json.loads(manifest.read_text())["nodes"])
    assert not [p.name for p in (project / "target").iterdir() if p.name.startswith("dbt-manifest-")]
