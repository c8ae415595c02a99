"""Which process executes a run: its tags, so that a run whose process died can be found and failed.

The tags name the host, the pid and the process's start time (so a reused pid is not mistaken for
it). `botflow` tags the runs it executes; a run the daemon launched is tagged by its first step.
automation/healing.py reads them.
"""

from __future__ import annotations

import socket

import dagster as dg
import psutil

PID_TAG, HOST_TAG, STARTED_TAG = "botflow/pid", "botflow/host", "botflow/process_started"
TAGGED_RUN_TAG = "botflow/process_of_run"  # the run the process tags were written for


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes."""
    me = psutil.Process()
    return {PID_TAG: str(me.pid), HOST_TAG: socket.gethostname(), STARTED_TAG: f"{me.create_time():.2f}"}


def record_run_process(context: dg.AssetExecutionContext) -> None:
    """Tag a run the daemon launched with the process that executes it, at its steps' start.

    Only under the in-process executor, where that process is the run worker itself: a step process of
    another executor ends before its run does. A run `botflow` executes is tagged already."""
    if context.job_def.executor_def.name != dg.in_process_executor.name:
        return
    mine = process_tags()
    if all(context.run.tags.get(tag) == value for tag, value in mine.items()):
        return  # tagged by `botflow`, or by an earlier step of this run
    # a retry inherits its parent's tags: TAGGED_RUN_TAG says which run they were written for
    context.instance.add_run_tags(context.run.run_id, {**mine, TAGGED_RUN_TAG: context.run.run_id})
