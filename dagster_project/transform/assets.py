"""dbt models as Dagster assets, split by partitions definition.

Each split is one `@dbt_assets` with `BackfillPolicy.single_run()`: a backfill of any range is one
dbt invocation whose window covers the whole range. dbt runs in the step's process
(dagster_project/transform/dbt_runner.py), parsed once per process.
"""


import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject, dbt_assets

from dagster_project.core.partitions import daily_partitions, hourly_partitions
from dagster_project.core.policies import (
    POOL_DBT_DAILY,
    POOL_DBT_HOURLY,
    POOL_DBT_VIEWS,
    RETRY_POLICY,
    interrupts_stop_the_step,
)
from dagster_project.core.resources import WarehouseDatabase
from dagster_project.core.run_process import record_run_process
from dagster_project.core.settings import engine
from dagster_project.core.window import Window
from dagster_project.ingest.schema import ensure_raw_schema
from dagster_project.transform.dbt_runner import dbt_build
from dagster_project.transform.freshness import policy_for
from dagster_project.transform.project import dbt_project, ensure_manifest

MANIFEST = ensure_manifest()
MANIFEST_JSON = json.loads(MANIFEST.read_text())


def _upstream_sources(manifest: Mapping[str, Any], unique_id: str) -> set[str]:
    """The dbt sources a node reads, through any number of models."""
    found: set[str] = set()
    stack = [unique_id]
    seen: set[str] = set()
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        if node_id.startswith("source."):
            found.add(node_id)
            continue
        node = manifest["nodes"].get(node_id, {})
        stack.extend(node.get("depends_on", {}).get("nodes", []))
    return found


class BotflowDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        """Partitioned marts also depend directly on the raw tables their views read, so that a
        partition run orders ingestion before the marts (the views themselves are not partitioned)."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["nodes"].get(unique_id, {})
        tags = set(node.get("tags", []))
        policy = policy_for(tags)
        if policy is not None:
            spec = spec.replace_attributes(freshness_policy=policy)
        if {"hourly", "daily"} & tags:
            raw_keys = sorted(
                dg.AssetKey(["raw", manifest["sources"][source_id]["name"]])
                for source_id in _upstream_sources(manifest, unique_id)
            )
            spec = spec.merge_attributes(deps=[key for key in raw_keys if key not in {d.asset_key for d in spec.deps}])
        return spec

    def get_group_name(self, dbt_resource_props: dict[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "seed":
            return "reference"
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "dbt"


TRANSLATOR = BotflowDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=False))


def run_dbt(context: dg.AssetExecutionContext, args: list[str], window: Window | None = None) -> Iterator[Any]:
    """`dbt build` of the step's models over `window` (none: all of history), in this process."""
    record_run_process(context)
    with interrupts_stop_the_step():
        yield from dbt_build(context, Path(dbt_project.project_dir), MANIFEST_JSON, TRANSLATOR, args, window)


@dbt_assets(
    manifest=MANIFEST,
    select="tag:views resource_type:seed",
    name="dbt_views",
    dagster_dbt_translator=TRANSLATOR,
    project=dbt_project,
    retry_policy=RETRY_POLICY,
    pool=POOL_DBT_VIEWS,
)
def dbt_views(context: dg.AssetExecutionContext, warehouse: WarehouseDatabase):
    """Staging and intermediate views and the LLM price list seed (no partitions)."""
    with warehouse.connect() as conn, conn.transaction():
        ensure_raw_schema(conn)  # the views read raw tables: on a new warehouse, create them empty
    yield from run_dbt(context, [])


def upstream_first(assets_def: dg.AssetsDefinition, keys: Iterable[dg.AssetKey]) -> list[dg.AssetKey]:
    """`keys` in an order Dagster accepts a multi-asset's results in: each after the keys it depends on
    (bot_performance_metrics reads conversation_metrics), else by name."""
    remaining, ordered = sorted(keys), []
    while remaining:
        ready = next(key for key in remaining
                     if not {dep.asset_key for dep in assets_def.get_asset_spec(key).deps} & set(remaining))
        ordered.append(ready)
        remaining.remove(ready)
    return ordered


def run_on_spark(context: dg.AssetExecutionContext, warehouse_url: str, window: Window | None) -> Iterator[Any]:
    """BOTFLOW_ENGINE=spark (docs/spark.md): the step's partitioned marts computed on the Spark cluster over the
    window and published into the warehouse; then the marts whose meta says `built_in: warehouse`
    (bot_performance_metrics_local, metric_anomalies) built by dbt in the warehouse, and every dbt test run
    there, on what people read. No window: a full refresh."""
    from dagster_project.transform.spark.build import build_window
    from dagster_project.transform.spark.cluster import SparkCluster
    from dagster_project.transform.spark.publish import mart_windows

    record_run_process(context)
    keys = upstream_first(context.assets_def, context.selected_asset_keys)
    partitioned = set(mart_windows())
    on_spark = {key.path[-1]: key for key in keys if key.path[-1] in partitioned}
    in_warehouse = [key.path[-1] for key in keys if key.path[-1] not in partitioned]
    if on_spark:
        with interrupts_stop_the_step():
            result = build_window(warehouse_url, SparkCluster.from_env(warehouse_url), window, list(on_spark),
                                  progress=context.log.info)
        for name, key in on_spark.items():
            yield dg.MaterializeResult(asset_key=key, metadata={
                "engine": "spark", "rows_published": result["published"][name],
                "spark_rows_landed": sum(result["landed"].values()),
                **{f"spark_{stage}_s": round(seconds, 1) for stage, seconds in result["seconds"].items()}})
        tests_only = ["--resource-type", "test", *(["--exclude", *in_warehouse] if in_warehouse else [])]
        yield from run_dbt(context, tests_only, window)
    if in_warehouse:
        yield from run_dbt(context, ["--exclude", *on_spark] if on_spark else [], window)


class DbtBuildConfig(dg.Config):
    """Run config of the partitioned dbt assets."""

    full_refresh: bool = False  # rebuild the whole table from all of raw (e.g. after a price-list change)


def dbt_build_args(config: DbtBuildConfig) -> list[str]:
    return ["--full-refresh"] if config.full_refresh else []


def partitioned_dbt_assets(name: str, select: str, partitions_def, pool: str, description: str):
    """dbt models of one partitions definition: a range runs as one dbt invocation over its window."""

    @dbt_assets(
        manifest=MANIFEST,
        select=select,
        name=name,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        dagster_dbt_translator=TRANSLATOR,
        project=dbt_project,
        retry_policy=RETRY_POLICY,
        pool=pool,
    )
    def _models(context: dg.AssetExecutionContext, config: DbtBuildConfig, warehouse: WarehouseDatabase):
        window = None if config.full_refresh else Window.of(context)  # no window: all of history
        if engine() == "spark":
            yield from run_on_spark(context, warehouse.url, window)
        else:
            yield from run_dbt(context, dbt_build_args(config), window)

    _models.__doc__ = description
    return _models


dbt_hourly = partitioned_dbt_assets(
    "dbt_hourly", "tag:hourly", hourly_partitions, POOL_DBT_HOURLY,
    "fct_bot_replies, usage_analytics and response_time_histogram for the partition's hours.",
)
dbt_daily = partitioned_dbt_assets(
    "dbt_daily", "tag:daily", daily_partitions, POOL_DBT_DAILY,
    "conversation_metrics and bot_performance_metrics for the partition's days; metric_anomalies rebuilt whole "
    "(its verdicts on a day read the 14 days before it).",
)
