"""The oracle and edge-case tests again, with the marts built on Spark (docs/spark.md).

The tests are those of test_edge_cases.py and test_marts_match_oracle.py, imported: here their fixtures
build the same source rows through Dagster with BOTFLOW_ENGINE=spark, on a two-worker standalone cluster the
session starts (`spark_cluster`, conftest.py): the ingestion assets load the raw layer with its rules, the
mart assets land it as Parquet, compute the marts on the cluster and publish them into PostgreSQL, where
the tests read them. A module of its
own, not a parametrized fixture: the tests run in a random order, which would interleave the engines and
rebuild a module fixture per switch.
"""

from __future__ import annotations

import pytest
from conftest import lenient_quality_limits, module_scenario
from test_edge_cases import (  # noqa: F401 (collected here, with this module's fixtures)
    build_edge_cases,
    test_a_day_rebuilt_alone_leaves_every_row_as_it_was,
    test_all_marts_equal_the_oracle,
    test_empty_hours_ties_and_zero_denominators,
    test_response_times_fallbacks_and_midnight,
)
from test_marts_match_oracle import (  # noqa: F401
    simulated_and_built,
    test_bot_performance_metrics_equal_oracle,
    test_conversation_metrics_equal_oracle,
    test_sql_functions_are_exact_over_ranges,
    test_usage_analytics_equal_oracle,
)


@pytest.fixture(scope="module")
def engine() -> str:
    return "spark"


@pytest.fixture(scope="module")
def edge(dagster_instance, spark_cluster):
    with lenient_quality_limits(), module_scenario("spark_edge") as (scenario,):
        yield from build_edge_cases(scenario, dagster_instance, "spark")


@pytest.fixture(scope="module")
def marts_built(dagster_instance, spark_cluster):
    with simulated_and_built(dagster_instance, "spark") as result:
        yield result
