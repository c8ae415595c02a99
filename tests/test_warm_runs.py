"""Runs that start warm (issue #17): the daemon's runs fork from a warm worker of their code location.

With a real `dagster-daemon` on a stack of its own: the first run after the daemon starts is launched the
ordinary way while the worker warms up; the next is forked from it, succeeds and builds marts equal to
the oracle; a forked run is canceled by the launcher's terminate(); after the project's code changes the
worker is replaced (that run goes the ordinary way) and runs fork from the new one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest
from processes import (
    REPO_ROOT,
    WINDOW,
    Process,
    Stack,
    a_backend_waits_on,
    assert_marts_are_exact,
    drop_stack,
    make_stack,
    warnings_of_our_code,
)

from dagster_project.automation.warm_launcher import WORKER_PID_TAG

DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    made = make_stack(tmp_path, "warm")
    yield made
    drop_stack(made)


def launch(stack: Stack, hour: str) -> str:
    """Queue an hourly run as a schedule's tick does; its run id."""
    with stack.instance() as instance:
        before = {run.run_id for run in instance.get_runs()}
    subprocess.run([DAGSTER, "job", "launch", "-w", str(REPO_ROOT / "workspace.yaml"), "--location", "botflow",
                    "-j", "hourly_partition_job", "--tags", json.dumps({"dagster/partition": hour})],
                   cwd=REPO_ROOT, env=stack.env, check=True, capture_output=True, text=True)
    with stack.instance() as instance:
        (new,) = [run.run_id for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": hour}))
                  if run.run_id not in before and run.job_name == "hourly_partition_job"]
    return new


def wait(stack: Stack, run_id: str, until, timeout: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    with stack.instance() as instance:
        while not until(run := instance.get_run_by_id(run_id)):
            assert time.monotonic() < deadline, f"run {run_id} is {run.status.value} after {timeout}s"
            time.sleep(0.1)
    return run


def finished(stack: Stack, run_id: str) -> dg.DagsterRun:
    return wait(stack, run_id, lambda run: run.is_finished)


def warm_worker(daemon: Process, timeout: float = 180) -> psutil.Process:
    """The daemon's warm worker of the botflow location, once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(daemon.proc.pid).children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "dagster_project.automation.warm_worker" in command and command[-2].endswith("botflow.sock") \
                    and Path(command[-2]).exists():
                return child
        time.sleep(0.2)
    tree = [child.cmdline()[:4] for child in psutil.Process(daemon.proc.pid).children(recursive=True)]
    out = daemon.output
    raise AssertionError(f"no warm worker listened within {timeout}s: {tree}\n" + out[out.find("Traceback"):][:5000])


def test_daemon_runs_fork_from_a_warm_worker_are_exact_cancel_and_follow_code_changes(stack):
    built = Process(stack.env, "run", *WINDOW)
    assert built.finish() == 0, built.output
    daemon = Process(stack.env, "run", "-w", str(REPO_ROOT / "workspace.yaml"),
                     command=[str(Path(sys.executable).with_name("dagster-daemon"))], cwd=REPO_ROOT)
    try:
        first = finished(stack, launch(stack, "2026-06-01-10:00"))
        assert first.status == dg.DagsterRunStatus.SUCCESS and WORKER_PID_TAG not in first.tags
        worker = warm_worker(daemon)

        warm = finished(stack, launch(stack, "2026-06-01-11:00"))
        assert warm.status == dg.DagsterRunStatus.SUCCESS, daemon.output[-3000:]
        child_pid = int(warm.tags[WORKER_PID_TAG].split("@")[0])
        assert child_pid != worker.pid and warm.tags["botflow/pid"] == str(child_pid)  # its steps ran in the fork
        assert_marts_are_exact(stack)

        # the run's ingestion waits on raw.messages until it is terminated (else a short run can end first)
        with stack.warehouse() as blocker:
            blocker.execute("lock table raw.messages in share mode")
            doomed = launch(stack, "2026-06-01-12:00")
            wait(stack, doomed, lambda run: run.status == dg.DagsterRunStatus.STARTED and WORKER_PID_TAG in run.tags)
            deadline = time.monotonic() + 120
            while not a_backend_waits_on(blocker, "raw.messages"):
                assert time.monotonic() < deadline, "the run never waited on raw.messages\n" + daemon.output[-3000:]
                time.sleep(0.2)
            with stack.instance() as instance:  # as the UI's Terminate does, from another process than the daemon
                assert instance.run_launcher.terminate(doomed)
        assert finished(stack, doomed).status == dg.DagsterRunStatus.CANCELED, [
            line for line in daemon.output.splitlines() if doomed in line or "nterrupt" in line][-40:]

        os.utime(REPO_ROOT / "dagster_project" / "automation" / "warm_worker.py")  # the code changed
        stale = finished(stack, launch(stack, "2026-06-01-13:00"))
        assert stale.status == dg.DagsterRunStatus.SUCCESS and WORKER_PID_TAG not in stale.tags
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        renewed = warm_worker(daemon)
        assert renewed.pid != worker.pid
        again = finished(stack, launch(stack, "2026-06-01-14:00"))
        assert again.status == dg.DagsterRunStatus.SUCCESS and WORKER_PID_TAG in again.tags
        assert warnings_of_our_code(daemon.output) == []
    finally:
        os.killpg(daemon.proc.pid, signal.SIGTERM)
        daemon.finish(timeout=60)
        Path(os.environ.get("BOTFLOW_TEST_DAEMON_LOG", "/dev/null")).write_text(daemon.output)
