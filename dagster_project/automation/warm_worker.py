"""A warm run worker: a process that has imported a code location once, and forks a child per run.

A run the daemon launches normally starts a new Python process that imports Dagster, dbt and
great-expectations and loads the code location before its first step (~9 s here). This process pays
that once: it loads the location (the same `ReconstructableRepository` a run worker builds, every job
resolved), then waits on a Unix socket. For each run it forks a child that executes the run exactly as
`dagster api execute_run` does, in the state the parent warmed. `automation/warm_launcher.py` starts it
and sends it runs.

Protocol: one connection per run; the launcher sends the serialized `ExecuteRunArgs` and a newline, the
worker answers one JSON line: {"pid": N}, or {"stale": true} (the project's files changed since the
warm-up: the worker exits, the launcher starts the run the ordinary way and a fresh worker), or
{"error": "..."}. It exits when its parent (the daemon) is gone.

Run as `python -m dagster_project.automation.warm_worker SOCKET ORIGIN_JSON`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
from pathlib import Path

ACCEPT_SECONDS = 0.5  # how often the worker reaps children and looks for its parent while idle
# what a run's code is made of: a change to any of these files makes the worker stale
WATCHED = ("dagster_project", "models", "dbt", "superset", "workspace.yaml", "pyproject.toml")
NOT_WATCHED = {"target", "logs", "__pycache__", "dbt_packages"}  # what dbt and Python write while runs execute


def code_fingerprint(root: Path) -> tuple[int, int]:
    """(number of files, newest modification in ns) of the project's code under `root`."""
    count, newest = 0, 0
    stack = [root / name for name in WATCHED]
    while stack:
        path = stack.pop()
        try:
            if path.is_dir():
                stack.extend(child for child in path.iterdir() if child.name not in NOT_WATCHED)
                continue
            count, newest = count + 1, max(newest, path.stat().st_mtime_ns)
        except FileNotFoundError:
            continue
    return count, newest


def warm_up(origin_json: str) -> None:
    """Load the code location as a run worker would: the repository and every job in it."""
    from dagster._core.origin import RepositoryPythonOrigin
    from dagster._serdes import deserialize_value
    from dagster._utils.hosted_user_process import recon_repository_from_origin

    origin = deserialize_value(origin_json, RepositoryPythonOrigin)
    repository = recon_repository_from_origin(origin).get_definition()
    for job in repository.get_all_jobs():
        job.get_job_snapshot_id()  # resolves the job's graph, as the run's plan will
    import dagster._cli.api  # noqa: F401  (what executes a run)

    # what the location's steps open once per process, where it uses them: dbt's parsed project, GX's context.
    # Each only saves its runs time: one that fails (a run writing the same files meanwhile) is left to them.
    if "dagster_project.transform.dbt_runner" in sys.modules:
        from dagster_project.core.settings import DBT_PROJECT_DIR
        from dagster_project.transform.dbt_runner import parsed_manifest

        _optional(lambda: parsed_manifest(DBT_PROJECT_DIR), "dbt's parse")
    if "dagster_project.quality.checks" in sys.modules:
        from dagster_project.quality.checks import gx_context

        _optional(gx_context, "the great-expectations context")


def _optional(step, what: str) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001  (the runs open it themselves, as in a new process)
        print(f"warm run worker: {what} was not warmed ({type(exc).__name__}: {exc}); its runs open it",
              file=sys.stderr, flush=True)


def execute_run(request: str) -> int:
    """In the forked child: execute the run as `dagster api execute_run` does; its exit code."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    args = deserialize_value(request, ExecuteRunArgs)
    with capture_interrupts(), get_instance_for_cli(instance_ref=args.instance_ref) as instance:
        return _execute_run_command_body(args.run_id, instance, lambda event: None,
                                         set_exit_code_on_failure=bool(args.set_exit_code_on_failure))


def _fork_run(request: str, server: socket.socket) -> int:
    pid = os.fork()
    if pid:
        return pid
    # the child: a run worker of its own
    server.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    random.seed()
    code = 1
    try:
        code = execute_run(request)
    except BaseException as exc:  # noqa: BLE001  (the run's own events say what failed; this is the last word)
        print(f"warm run worker {os.getpid()}: {exc!r}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(socket_path: str, origin_json: str) -> None:
    root = Path.cwd()
    parent = os.getppid()
    fingerprint = code_fingerprint(root)  # before the warm-up: a file changed while it loads makes it stale
    try:
        warm_up(origin_json)
    except Exception as exc:  # noqa: BLE001  (one line; the launcher starts runs the ordinary way, and a new worker)
        sys.exit(f"warm run worker: the code location did not load ({type(exc).__name__}: {exc}); "
                 "its runs start in new processes")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    Path(socket_path).unlink(missing_ok=True)
    server.bind(socket_path + ".tmp")
    os.chmod(socket_path + ".tmp", 0o600)
    server.listen(16)
    os.replace(socket_path + ".tmp", socket_path)  # the socket appears once the worker is warm
    server.settimeout(ACCEPT_SECONDS)
    try:
        while os.getppid() == parent:
            _reap()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("rw") as stream:
                request = stream.readline()
                if code_fingerprint(root) != fingerprint:
                    stream.write(json.dumps({"stale": True}) + "\n")
                    return
                try:
                    answer = {"pid": _fork_run(request, server)}
                except OSError as exc:
                    answer = {"error": f"could not fork a run worker: {exc}"}
                stream.write(json.dumps(answer) + "\n")
    finally:
        server.close()
        Path(socket_path).unlink(missing_ok=True)
        while True:  # children finish their runs; a worker that exits does not orphan them as zombies
            try:
                os.wait()
            except ChildProcessError:
                break


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
