"""The run launcher of the instance (dagster_home/dagster.yaml): runs start warm.

Dagster's default launcher asks the code server to start every run in a new Python process, which
imports Dagster, dbt and great-expectations and loads the code location again before its first step:
~9 s of a scheduled hourly run's ~13 s here. This launcher keeps one warm worker per code location
(`automation/warm_worker.py`, a child of the daemon that loaded the location once) and has it fork a
child per run; the child executes the run exactly as `dagster api execute_run` would.

It falls back to the default launch (the code server, a new process) whenever the warm path cannot
serve a run: `BOTFLOW_WARM_RUNS=0`, a run whose code is not on this machine, a worker still warming up
(the first run after the daemon starts), or the project's files changed since the warm-up (the worker
is replaced). Termination sends the child SIGINT, as Dagster's own run workers are interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
from dagster import DagsterRun
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext

from dagster_project.core.settings import setting

WORKER_PID_TAG = "botflow/warm_worker_child"  # "pid@start time" of the forked run worker, for termination
ANSWER_SECONDS = 10.0


class WarmRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose runs fork from a warm worker per code location, when one is ready."""

    def __init__(self, inst_data=None):
        super().__init__(inst_data=inst_data)
        self._workers: dict[str, subprocess.Popen] = {}
        self._folder: Path | None = None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if setting("BOTFLOW_WARM_RUNS") == "1" and self._launch_warm(run):
            return
        super().launch_run(context)

    # the warm path

    def _socket(self, location: str) -> Path:
        if self._folder is None:  # a short private path: a Unix socket's path has at most 107 bytes
            self._folder = Path(tempfile.mkdtemp(prefix="botflow-warm-"))
        return self._folder / f"{location}.sock"

    def _ready_worker(self, run: DagsterRun) -> Path | None:
        """The socket of the run's location's warm worker, or None (then it is started for the next run)."""
        origin = run.job_code_origin
        if origin is None or not Path(origin.executable_path).exists():
            return None
        repository = origin.repository_origin
        location = run.remote_job_origin.location_name if run.remote_job_origin else repository.code_pointer.describe()
        path = self._socket(location)
        worker = self._workers.get(location)
        if worker is not None and worker.poll() is None:
            return path if path.exists() else None  # the socket appears once the worker is warm
        from dagster._serdes import serialize_value

        working_directory = getattr(repository.code_pointer, "working_directory", None) or os.getcwd()
        self._workers[location] = subprocess.Popen(
            [origin.executable_path, "-m", "dagster_project.automation.warm_worker", str(path),
             serialize_value(repository)], cwd=working_directory)
        return None

    def _launch_warm(self, run: DagsterRun) -> bool:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        path = self._ready_worker(run)
        if path is None:
            return False
        request = serialize_value(ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id,
                                                 instance_ref=self._instance.get_ref()))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(ANSWER_SECONDS)
                conn.connect(str(path))
                with conn.makefile("rw") as stream:
                    stream.write(request + "\n")
                    stream.flush()
                    answer = json.loads(stream.readline() or "{}")
        except (OSError, ValueError):
            answer = {}
        if "pid" not in answer:  # stale, dead or unanswering: this run starts the ordinary way, the next warm
            self._stop_worker(path.stem)
            self._ready_worker(run)
            return False
        try:  # the child's start time beside its pid: terminate() never signals a process that reused the pid
            started = psutil.Process(answer["pid"]).create_time()
        except psutil.NoSuchProcess:
            started = 0.0  # it has ended already
        self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: f"{answer['pid']}@{started:.2f}"})
        self._instance.report_engine_event(
            f"Started the run in process {answer['pid']}, forked from the warm worker of this code location.",
            run, cls=self.__class__)
        self._run_ids.add(run.run_id)
        return True

    def _stop_worker(self, location: str) -> None:
        worker = self._workers.pop(location, None)
        if worker is not None and worker.poll() is None:
            worker.terminate()  # its forked runs go on; they were never its to stop
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    # termination and shutdown

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or WORKER_PID_TAG not in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid, _, started = run.tags[WORKER_PID_TAG].partition("@")
        try:
            child = psutil.Process(int(pid))
            if abs(child.create_time() - float(started)) > 1:
                return False  # the run's process has ended and its pid was reused
            child.send_signal(signal.SIGINT)  # as Dagster interrupts its run workers: the run is canceled
        except (psutil.NoSuchProcess, ValueError):
            return False
        return True

    def dispose(self) -> None:
        for location in list(self._workers):
            self._stop_worker(location)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        super().dispose()
