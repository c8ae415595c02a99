"""`botflow run`: materialize every partition of a window through Dagster, recorded in the instance.

The window runs as three runs (one per partitions definition, each a single partition-range run,
as a UI backfill with BackfillPolicy.single_run() would launch them): the dbt views, then the
hourly range (ingestion + hourly marts), then the daily range (daily marts).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import dagster as dg
from dagster._core.storage.tags import MAX_RETRIES_TAG

from dagster_project.automation.healing import wait_for_pools
from dagster_project.core.run_process import process_tags
from dagster_project.core.window import Window

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StepResult:
    name: str
    run_id: str
    seconds: float
    success: bool


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, job_name: str, label: str, scope: str, *,
            progress: Callable[[str], None], tags: dict[str, str] | None = None, **kwargs) -> StepResult:
    """Run one job in this process, recorded in the instance, once its pools are free; raise RunFailed.

    The run is tagged with this process (core/run_process.py), so that the next `botflow` fails it and frees its
    pool slots if this process dies."""
    job = defs.resolve_job_def(job_name)
    progress(f"{label} ...")
    wait_for_pools(instance, job, progress)
    began = time.monotonic()
    # the daemon does not retry what this process runs: it reports the failure to whoever ran it
    result = job.execute_in_process(instance=instance, tags={**(tags or {}), **process_tags(), MAX_RETRIES_TAG: "0"},
                                    run_config=kwargs.pop("run_config", QUIET_LOGS), raise_on_error=False, **kwargs)
    seconds = time.monotonic() - began
    progress(f"{label}: {'done' if result.success else 'FAILED'} in {seconds:.1f}s (run {result.run_id[:8]})")
    if not result.success:
        raise RunFailed(f"{job_name} failed for {scope}: {_first_failure(result)}")
    return StepResult(job_name, result.run_id, seconds, result.success)


@dataclass(frozen=True)
class Step:
    """One run of a sequence: a job over the window's partitions of `partitions_def` (None: unpartitioned);
    `unit` ('hourly', 'daily') makes the progress line count them."""

    job_name: str
    label: str
    partitions_def: dg.TimeWindowPartitionsDefinition | None = None
    unit: str | None = None
    options: dict = field(default_factory=dict)  # run_config, asset_selection


def run_steps(defs: dg.Definitions, instance: dg.DagsterInstance, steps: list[Step], window: Window, scope: str,
              progress: Callable[[str], None]) -> list[StepResult]:
    """Run the steps one after another, each one run over its partitions of the window; numbered progress."""
    results = []
    for i, step in enumerate(steps, 1):
        tags, n = window.range_tags(step.partitions_def) if step.partitions_def else ({}, 0)
        label = f"[{i}/{len(steps)}] {step.label}" + (f", {n} {step.unit} partitions" if step.unit else "")
        results.append(execute(defs, instance, step.job_name, label, scope, tags=tags, progress=progress,
                               **step.options))
    return results


def run_window(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    progress: Callable[[str], None] = print,
) -> list[StepResult]:
    from dagster_project.automation.jobs import daily_job, hourly_job, views_job
    from dagster_project.core.partitions import daily_partitions, hourly_partitions

    window = Window.days(start, end)
    first_partition = hourly_partitions.start
    if window.start < first_partition:
        raise ValueError(f"--start {start} is before BOTFLOW_PARTITIONS_START ({first_partition:%Y-%m-%d})")
    steps = [Step(views_job.name, "dbt views and price list"),
             Step(hourly_job.name, "ingest + hourly marts", hourly_partitions, "hourly"),
             Step(daily_job.name, "daily marts", daily_partitions, "daily")]
    return run_steps(defs, instance, steps, window, f"[{start}, {end})", progress)


class RunFailed(Exception):
    """A run failed; the message names the job, the scope, the step and its reason."""


def refresh_marts(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    progress: Callable[[str], None] = print,
) -> list[StepResult]:
    """Rebuild every mart from all of raw with `dbt build --full-refresh` (after a price-list change:
    costs are recomputed for all history). Recorded as one run per partitions definition over
    [start, end), the range that holds data; no ingestion."""
    from dagster_project.automation.jobs import daily_job, hourly_job
    from dagster_project.core.partitions import daily_partitions, hourly_partitions
    from dagster_project.transform.assets import dbt_daily, dbt_hourly

    def full_refresh(assets_def: dg.AssetsDefinition) -> dict:
        return {"run_config": {"ops": {assets_def.op.name: {"config": {"full_refresh": True}}}, **QUIET_LOGS},
                "asset_selection": list(assets_def.keys)}

    steps = [Step(hourly_job.name, "full refresh of the hourly marts", hourly_partitions,
                  options=full_refresh(dbt_hourly)),
             Step(daily_job.name, "full refresh of the daily marts", daily_partitions, options=full_refresh(dbt_daily))]
    return run_steps(defs, instance, steps, Window.days(start, end), "a full refresh", progress)


def reload_prices_and_refresh_marts(defs: dg.Definitions, instance: dg.DagsterInstance, start: date, end: date,
                                    progress: Callable[[str], None] = print) -> None:
    """`botflow refresh`: the price list seed (and the views) reloaded, then every mart rebuilt (refresh_marts)."""
    execute(defs, instance, "dbt_views_job", "[0/2] reload the price list seed and the views", "the views",
            progress=progress)
    refresh_marts(defs, instance, start, end, progress=progress)


def _first_failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:  # the first error, not "exceeded max retries"
        error = getattr(event.event_specific_data, "error", None)
        if error is not None and (event.is_step_failure or event.is_step_up_for_retry):
            return f"step {event.step_key}: {error_reason(error)}"
    return "see the run in the Dagster UI"


# "dagster_project.ingest.loader.SourceError: " before a reason: the reader needs the reason
EXCEPTION_CLASS = re.compile(r"^(?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*: ")


def error_reason(error) -> str:
    """A Dagster error's reason (its cause when it has one) on one line, without the exception's class."""
    message = (error.cause.message if error.cause else error.message).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["unknown error"]
    return EXCEPTION_CLASS.sub("", "; ".join(lines))[:2000]


def run_report(defs: dg.Definitions, instance: dg.DagsterInstance, kind: str, day: date, *,
               deliver: bool = True, progress: Callable[[str], None] = print) -> StepResult:
    """Render (and e-mail) the daily report of `day`, or the weekly report of the ISO week holding it."""
    from dagster_project.serve.reports.periods import Period

    period = Period.containing(kind, day)  # type: ignore[arg-type]
    job = defs.resolve_job_def(f"{kind}_report_job")
    if period.start.isoformat() not in job.partitions_def.get_partition_keys():
        raise ValueError(f"no {kind} report partition {period.start} yet: the {kind} period must be over "
                         f"and start after BOTFLOW_PARTITIONS_START")
    selection = [dg.AssetKey(["reports", f"{kind}_report"])]
    if deliver:
        selection.append(dg.AssetKey(["reports", f"{kind}_report_delivery"]))
    return execute(defs, instance, job.name, f"{kind} report {period.slug}", period.slug, progress=progress,
                   partition_key=period.start.isoformat(), asset_selection=selection)
