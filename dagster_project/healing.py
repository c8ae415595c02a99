"""Runs that heal: a run whose process died never blocks the next one.

A run executed by `botflow` (run, refresh, report) carries its process in its tags: host, pid and the
process's start time (so a reused pid is not mistaken for it). Before it starts a job, and while it
waits for a pool, `botflow` fails every run of this host left STARTED by a process that is gone
(`kill -9`, out of memory, a lost database connection) and frees the pool slots it held. Runs the
daemon launched are watched by Dagster's run monitoring instead (dagster_home/dagster.yaml).

A job waits for its pools (one writer per table set) without spinning: it prints which run holds each
pool, every WAIT_REPORT_SECONDS, and stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import dagster as dg
import psutil
from dagster._core.storage.tags import MAX_RETRIES_TAG

from .policies import ACTIVE_RUN_STATUSES

PID_TAG, HOST_TAG, STARTED_TAG = "botflow/pid", "botflow/host", "botflow/process_started"
POLL_SECONDS = 2.0
WAIT_REPORT_SECONDS = 15.0


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes in-process (which the daemon does not retry:
    this process reports their failure)."""
    me = psutil.Process()
    return {PID_TAG: str(me.pid), HOST_TAG: socket.gethostname(), STARTED_TAG: f"{me.create_time():.2f}",
            MAX_RETRIES_TAG: "0"}


def process_gone(tags: dict[str, str]) -> bool:
    """True when the tags name a process of this host that no longer runs (False: alive, or unknowable)."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(tags[PID_TAG]))
        return abs(process.create_time() - float(tags.get(STARTED_TAG, "0"))) > 1  # the pid was reused
    except (psutil.NoSuchProcess, ValueError):
        return True


def fail_dead_runs(instance: dg.DagsterInstance, progress: Callable[[str], None]) -> list[str]:
    """Fail the unfinished runs whose process is gone and free their pool slots; their ids."""
    statuses = [*ACTIVE_RUN_STATUSES, dg.DagsterRunStatus.CANCELING]
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses), limit=500):
        if process_gone(run.tags):
            instance.report_run_failed(run, f"its process (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
                                            "gone; failed by the next botflow run, its pool slots freed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
            progress(f"run {run.run_id[:8]} ({run.job_name}) was left unfinished by a process that died: "
                     "marked failed, its pool slots freed")
    return failed


def job_pools(job: dg.JobDefinition) -> list[str]:
    return sorted({node.definition.pool for node in job.graph.nodes if getattr(node.definition, "pool", None)})


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
