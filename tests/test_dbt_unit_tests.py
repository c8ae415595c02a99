"""dbt's own unit tests (models/marts/_marts__unit_tests.yml) pass against a built warehouse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_dbt_unit_tests_pass(make_scenario, dagster_instance):
    from conftest import run_job

    from dagster_project.dev.simulate import create_source_tables

    scenario = make_scenario("dbtunit")
    with scenario.source() as conn:
        create_source_tables(conn, "public")  # empty: the unit tests bring their own rows
        conn.commit()
    run_job(dagster_instance, "dbt_views_job")  # the relations the unit tests read column types from
    run_job(dagster_instance, "hourly_partition_job", partition_key="2026-03-01-00:00")
    run_job(dagster_instance, "daily_partition_job", partition_key="2026-03-01")
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [str(dbt), "test", "--select", "test_type:unit", "--project-dir", str(REPO / "dbt"),
         "--profiles-dir", str(REPO / "dbt"), "--target-path", "target/unit"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "PASS=6" in result.stdout, result.stdout[-4000:]  # 5 unit tests and the on-run-end hook
