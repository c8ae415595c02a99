"""great-expectations suites, run as blocking Dagster asset checks on the raw layer of each hourly partition.

Every expectation carries the name of the rule it enforces (`meta.rule`); a failed check's
description lists the broken rules and how many rows break them. Each check validates only its
partition's window (a GX query asset over the warehouse), and every run stores its validation result
in the GX project under `$BOTFLOW_HOME/gx/`; `botflow gx-docs` renders them all as Data Docs
(`gx/uncommitted/data_docs/local_site/index.html`). The context is opened once per process.
"""


import contextlib
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from dagster_project.core.db import connect
from dagster_project.core.partitions import hourly_partitions
from dagster_project.core.resources import WarehouseDatabase
from dagster_project.core.settings import botflow_home, publish, setting_number, sqlalchemy_url
from dagster_project.core.window import Window


def share_limits() -> dict[str, float]:
    """The largest share of a partition's messages one rule may reject / repair (read at check time)."""
    return {"max_rejected": setting_number("BOTFLOW_MAX_REJECTED_SHARE", minimum=0),
            "max_repaired": setting_number("BOTFLOW_MAX_REPAIRED_SHARE", minimum=0),
            # a handful of bad rows in a quiet hour is no trend: below this many rows a rule never fails
            "min_rows": setting_number("BOTFLOW_MIN_FLAGGED_ROWS", int, minimum=0)}

_GX_LOCK = threading.Lock()


@dataclass(frozen=True)
class Rule:
    name: str
    build: Callable[[], object]  # returns a gx expectation


@dataclass(frozen=True)
class Suite:
    name: str
    asset_key: tuple[str, ...]
    partitions_def: dg.TimeWindowPartitionsDefinition
    query: str  # {lo} and {hi}: the window bounds as SQL literals
    rules: tuple[Rule, ...]


def _gx():
    # great-expectations imports pyspark when it is installed (the spark extra), and pyspark 4 warns that it
    # does not fully support pandas 3, in every run's log: neither GX nor the Spark engine uses pyspark's pandas
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    import great_expectations as gx

    return gx


def between(column: str, low=None, high=None, label: str | None = None) -> Rule:
    text = label or (f"{column} within {low}..{high}" if high is not None else f"{column} >= {low}")
    return Rule(text, lambda: _gx().expectations.ExpectColumnValuesToBeBetween(
        column=column, min_value=low, max_value=high))


_WINDOW_TS = "{col} >= {{lo}} and {col} < {{hi}}"

# Each rule is checked in one place. The row rules of the marts are dbt tests (models/marts/_marts.yml),
# run in the same dbt build as their model and scoped to its window. Here, only what dbt does not run
# per ingestion partition: the raw layer's row rules (blocking, before any mart reads the hour) and the
# shares of quarantined and repaired rows (a rate over a partition, which no dbt test expresses).
SUITES = (
    # (id unique / not null are the table's primary key: a rule that cannot fail is not checked)
    Suite("raw_messages", ("raw", "messages"), hourly_partitions, """
        select m.prompt_tokens, m.completion_tokens, m.response_time_ms from raw.messages m
        where """ + _WINDOW_TS.format(col="m.created_at"),
          (between("prompt_tokens", 0), between("completion_tokens", 0),
           between("response_time_ms", 0))),
    Suite("raw_quality", ("raw", "messages"), hourly_partitions, """
        with seen as (
          select count(*) as n from raw.messages where """ + _WINDOW_TS.format(col="created_at") + """),
        rejected as (
          select rule, count(*) as n from raw.quarantine
          where source_table = 'messages' and """ + _WINDOW_TS.format(col="partition_hour") + """ group by rule),
        repaired as (
          select rule, sum(repaired_rows) as n from raw.repairs
          where source_table = 'messages' and """ + _WINDOW_TS.format(col="partition_hour") + """ group by rule)
        select case when j.n >= {min_rows} and j.n::numeric / greatest(j.n + s.n, 1) > {max_rejected}
                    then j.rule end as rejected_rule_over_limit, null::text as repaired_rule_over_limit
        from rejected j cross join seen s
        union all
        select null, case when p.n >= {min_rows} and p.n::numeric / greatest(s.n, 1) > {max_repaired}
                    then p.rule end from repaired p cross join seen s
        """,
          (Rule("quarantined share of a rule <= BOTFLOW_MAX_REJECTED_SHARE",
                lambda: _gx().expectations.ExpectColumnValuesToBeNull(column="rejected_rule_over_limit")),
           Rule("repaired share of a rule <= BOTFLOW_MAX_REPAIRED_SHARE",
                lambda: _gx().expectations.ExpectColumnValuesToBeNull(column="repaired_rule_over_limit")))),
)


@dataclass
class SuiteResult:
    success: bool
    failures: dict[str, str]  # rule -> what breaks it
    evaluated: int

    @property
    def description(self) -> str:
        if self.success:
            return f"{self.evaluated} expectations passed"
        return "; ".join(f"rule '{rule}' broken by {what}" for rule, what in self.failures.items())


def gx_home() -> Path:
    home = botflow_home() / "gx"
    home.mkdir(parents=True, exist_ok=True)
    return home


# GX file context per project folder, kept for this process: opening and configuring it costs more
# than validating an hour. Its datasource resolves the warehouse URL from the environment at each
# validation (tests/test_quality.py checks that a second warehouse is validated, not the first).
_CONTEXTS: dict[Path, object] = {}


def gx_context(warehouse_url: str | None = None):
    """The GX file context under $BOTFLOW_HOME/gx, opened once per process."""
    gx = _gx()
    home = gx_home()
    if warehouse_url is not None:
        # the URL stays out of great_expectations.yml (it may hold a password): GX reads it from the
        # environment at run time, which also accepts socket URLs its URL validation would refuse
        publish({"BOTFLOW_GX_WAREHOUSE_URL": sqlalchemy_url(warehouse_url)})
    if home not in _CONTEXTS:
        context = gx.get_context(mode="file", project_root_dir=str(home))
        if getattr(context.variables.progress_bars, "globally", True) is not False:  # keep run logs readable
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            context.variables.save()
        _CONTEXTS[home] = context
    return _CONTEXTS[home]


def data_docs_index() -> Path:
    return gx_home() / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def build_data_docs() -> Path:
    """Render GX Data Docs from every stored validation result (`botflow gx-docs`). Not part of the
    checks: the index covers all results ever stored, so its cost grows with history."""
    with _GX_LOCK:
        gx_context().build_data_docs()
    return data_docs_index()


def run_suite(suite: Suite, warehouse_url: str, window: Window) -> SuiteResult:
    """Validate `suite` over the window of the warehouse with great-expectations; the validation result
    is stored in the GX project (`botflow gx-docs` renders them as Data Docs)."""
    with window_snapshot(suite, warehouse_url, window) as snapshot:
        return _validate(suite, warehouse_url, snapshot)


@contextmanager
def window_snapshot(suite: Suite, warehouse_url: str, window: Window) -> Iterator[str]:
    """The suite's rows of the window, computed once into a scratch table (dropped afterwards).

    GX sends one query per expectation over its asset: over the suite's query itself, a 30-day
    backfill recomputed the joins and lookups some twenty times (minutes at 10M messages)."""
    name = f"quality.{suite.name}_{uuid.uuid4().hex[:12]}"
    query = suite.query.format(**window.sql_literals(), **share_limits())
    with connect(warehouse_url, setting="BOTFLOW_WAREHOUSE_URL", autocommit=True) as conn:
        conn.execute("create schema if not exists quality")
        conn.execute(f"create unlogged table {name} as {query}")
        conn.execute(f"analyze {name}")
    try:
        yield name
    finally:
        with connect(warehouse_url, setting="BOTFLOW_WAREHOUSE_URL", autocommit=True) as conn:
            conn.execute(f"drop table if exists {name}")


def _validate(suite: Suite, warehouse_url: str, table: str) -> SuiteResult:
    """Run the suite's expectations over `table` (schema.name). A table asset, not a query asset: GX
    executes a query asset's query to read its columns, and the client buffered every row of the
    window (a 29-day backfill at 10M messages peaked at 1.3 GB; docs/performance.md)."""
    gx = _gx()
    with _GX_LOCK:  # a GX file context is not safe to share between threads
        context = gx_context(warehouse_url)
        source_name = "warehouse"
        # added afresh each time: a data source keeps its engine, and a table asset is checked on
        # that engine when added (it would look for this warehouse's table in the previous one)
        with contextlib.suppress(KeyError, LookupError, ValueError):
            context.data_sources.delete(source_name)
        # the table's schema on the connection's search path (GX 1.14 deprecated a table asset's schema_name)
        schema_name, table_name = table.split(".")
        datasource = context.data_sources.add_postgres(
            source_name, connection_string="${BOTFLOW_GX_WAREHOUSE_URL}",
            kwargs={"connect_args": {"options": f"-c search_path={schema_name}"}})
        batch = datasource.add_table_asset(suite.name, table_name=table_name).add_batch_definition_whole_table("window")
        expectation_suite = gx.ExpectationSuite(name=suite.name)
        for rule in suite.rules:
            expectation = rule.build()
            expectation.meta = {"rule": rule.name}
            expectation_suite.add_expectation(expectation)
        expectation_suite = context.suites.add_or_update(expectation_suite)
        name = suite.name
        with contextlib.suppress(Exception):  # a definition left from an earlier layout of the asset
            context.checkpoints.delete(name)
        with contextlib.suppress(Exception):
            context.validation_definitions.delete(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=expectation_suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[definition], actions=[], result_format="SUMMARY"))
        result = checkpoint.run()
    failures: dict[str, int] = {}
    evaluated = 0
    for validation in result.run_results.values():
        for outcome in validation.results:
            evaluated += 1
            if not outcome.success:
                rule = (outcome.expectation_config.meta or {}).get("rule", outcome.expectation_config.type)
                count = outcome.result.get("unexpected_count") or 0
                examples = [v for v in outcome.result.get("partial_unexpected_list") or [] if v is not None][:5]
                failures[rule] = f"{count} rows" + (f" (e.g. {examples})" if examples else "")
    return SuiteResult(not failures, failures, evaluated)


# A check per partition (its own result per hour or day in the UI, and in alerts) needs a partitioned
# check spec, which Dagster 1.13 still calls a preview and warns about once per check at definition
# time. We use it on purpose: dagster is pinned exactly (pyproject.toml), so no patch release changes
# it under us; a dagster upgrade re-reads this (docs/upgrading.md). Only that one message is ignored.
PARTITIONED_CHECK_PREVIEW = "Specifying a partitions_def on an AssetCheckSpec is currently in preview"


def _make_check(suite: Suite) -> dg.AssetChecksDefinition:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PARTITIONED_CHECK_PREVIEW, category=dg.PreviewWarning)
        return _partitioned_check(suite)


def _partitioned_check(suite: Suite) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(list(suite.asset_key)),
        name=f"gx_{suite.name}",
        blocking=True,
        partitions_def=suite.partitions_def,
        description=f"great-expectations suite '{suite.name}' over the partition's window: "
        + "; ".join(rule.name for rule in suite.rules),
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseDatabase) -> dg.AssetCheckResult:
        window = Window.of(context)
        result = run_suite(suite, warehouse.url, window)
        return dg.AssetCheckResult(
            passed=result.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.description,
            metadata={"window": str(window),
                      "broken_rules": ", ".join(result.failures) or "none",
                      "data_docs": f"{data_docs_index()} (render with `botflow gx-docs`)"},
        )

    return _check


GX_CHECKS = [_make_check(suite) for suite in SUITES]
