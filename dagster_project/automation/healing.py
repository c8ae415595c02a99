"""Runs that heal: a run whose process died never blocks the next one.

A run carries the process that executes it in its tags: host, pid and the process's start time (so a
reused pid is not mistaken for it); `botflow` (run, refresh, report) tags its runs, and a run the
daemon launched is tagged by its first step (the partition jobs run in one process). Before `botflow`
starts a job, and while it waits for a pool, and every 30 s in the daemon (`dead_runs_sensor`), every
unfinished run of this host whose process is gone (`kill -9`, out of memory, a lost database
connection) is failed and the pool slots it held are freed. (Dagster's run monitoring cannot see a
dead run worker under the default run launcher: it has no health check.)

A job waits for its pools (one writer per table set) without spinning: it prints which run holds each
pool, every WAIT_REPORT_SECONDS, and stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import dagster as dg
import psutil

from dagster_project.core.policies import ACTIVE_RUN_STATUSES
from dagster_project.core.run_process import HOST_TAG, PID_TAG, STARTED_TAG, TAGGED_RUN_TAG

POLL_SECONDS = 2.0
WAIT_REPORT_SECONDS = 15.0


@dg.sensor(
    name="dead_runs_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: fails the unfinished runs of this host whose process died (kill -9, out of memory) and "
    "frees their pool slots, so that the next run of the pool starts; the daemon then retries them (run_retries).",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext):
    failed = fail_dead_runs(context.instance, context.log.warning)
    return dg.SkipReason(f"failed {len(failed)} runs whose process died" if failed else "no dead run")


def process_gone(run: dg.DagsterRun) -> bool:
    """True when the run's tags name a process of this host that no longer runs (False: alive, unknowable,
    or tags a retry inherited from its parent, not yet replaced by its own process's)."""
    tags = run.tags
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return False
    if tags.get(TAGGED_RUN_TAG, run.run_id) != run.run_id:
        return False
    try:
        process = psutil.Process(int(tags[PID_TAG]))
        if process.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by its parent (a code server)
            return True
        return abs(process.create_time() - float(tags.get(STARTED_TAG, "0"))) > 1  # the pid was reused
    except (psutil.NoSuchProcess, ValueError):
        return True


def fail_dead_runs(instance: dg.DagsterInstance, progress: Callable[[str], None]) -> list[str]:
    """Fail the unfinished runs whose process is gone and free their pool slots; their ids."""
    statuses = [*ACTIVE_RUN_STATUSES, dg.DagsterRunStatus.CANCELING]
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses), limit=500):
        if process_gone(run):
            instance.report_run_failed(run, f"its process (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
                                            "gone; failed by the next botflow run, its pool slots freed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
            progress(f"run {run.run_id[:8]} ({run.job_name}) was left unfinished by a process that died: "
                     "marked failed, its pool slots freed")
    return failed


def job_pools(job: dg.JobDefinition) -> list[str]:
    return sorted({node.definition.pool for node in job.graph.nodes if getattr(node.definition, "pool", None)})


def ensure_pool_limits(instance: dg.DagsterInstance, pools: list[str], attempts: int = 5) -> None:
    """Create the pools' limits before a step claims a slot. Dagster creates a pool's limit at its first
    claim, and two processes doing so at once on PostgreSQL fail one run (its insert's IntegrityError
    aborts the transaction in which it then tries an update); here the loser simply tries again."""
    storage = instance.event_log_storage
    for pool in pools:
        for attempt in range(attempts):
            try:
                if pool not in storage.get_concurrency_keys():  # on an existing limit the call fails likewise
                    storage.initialize_concurrency_limit_to_default(pool)
                break
            except Exception:  # noqa: BLE001  (the concurrent insert won: the limit exists now)
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))


def _holders(instance: dg.DagsterInstance, pool: str) -> list[str] | None:
    """The runs holding every slot of `pool`, or None when a slot is free."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    limit = info.limit if info.limit is not None else info.slot_count
    if not limit or len(info.claimed_slots) < limit:
        return None
    return sorted(info.active_run_ids)


def _describe(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return run_id[:8]
    who = f"botflow, pid {run.tags[PID_TAG]}" if PID_TAG in run.tags else "launched by the daemon"
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags['dagster/asset_partition_range_start']}...{run.tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in run.tags else "")
    return f"run {run_id[:8]} {run.job_name} {partition} ({who}, {run.status.value.lower()})".replace("  ", " ")


def wait_for_pools(instance: dg.DagsterInstance, job: dg.JobDefinition, progress: Callable[[str], None],
                   *, poll: float = POLL_SECONDS, report_every: float = WAIT_REPORT_SECONDS) -> float:
    """Block until every pool of `job` has a free slot, healing dead holders; the seconds waited.

    Sleeps between looks (no busy loop); Ctrl-C (KeyboardInterrupt) stops it."""
    began = time.monotonic()
    reported = -report_every
    ensure_pool_limits(instance, job_pools(job))
    while True:
        fail_dead_runs(instance, progress)
        busy = {pool: holders for pool in job_pools(job) if (holders := _holders(instance, pool))}
        if not busy:
            return time.monotonic() - began
        waited = time.monotonic() - began
        if waited - reported >= report_every:
            reported = waited
            progress(f"waiting {waited:.0f}s for " + "; ".join(
                f"pool {pool} (held by {', '.join(_describe(instance, r) for r in holders)})"
                for pool, holders in sorted(busy.items())) + " (Ctrl-C stops)")
        time.sleep(poll)
