"""A backfill of a date range launched as the Dagster UI launches it, against `botflow run` on the same range.

    .venv/bin/python bench/ui_backfill.py [--days 3] [--conversations 37500] [--warm-up]

Two fresh stacks on the local PostgreSQL (or `BOTFLOW_BENCH_PG_URL`, else the embedded one), each with its
own warehouse and Dagster storage, reading one source: `--days` simulated days from DAY (`--conversations`
a day), written once into the first stack's source database; the second stack reads that same database
(the runs only read the source), so both build from the same rows into an empty warehouse.

1. `botflow run --start DAY --end DAY+days`, as a user runs it (a subprocess): its wall time, and its runs
   (the views, the hourly range, the daily range) from the instance's records.
2. On the second stack, a real `dagster-daemon` (`start_daemon`, as `botflow live` starts it) and a real
   `dagster-webserver -w workspace.yaml` (what `botflow ui` runs under `dagster dev`, beside the daemon).
   Once the webserver has loaded the code location and the daemon beats, the backfill is submitted as the
   UI's *Materialize…* → *Launch backfill* submits it: the `launchPartitionBackfill` mutation over
   POST /graphql with `assetSelection` = the assets of the jobs `botflow run` runs (read from the
   webserver's `assetNodes`: the views and price list, ingestion, hourly and daily marts) and
   `partitionNames` = the range's hourly keys, plus the UI's `dagster/from_ui` tag. That is the UI's
   "pure asset backfill with an anchor asset" (the selection spans three partitionings; its partitioned
   roots, raw/*, are hourly): the daemon maps the hours onto the daily marts and orders the runs itself.
   Timed from the POST to the end of the backfill's last run (polling `get_backfill` and the run records).
   `--warm-up` first launches `dbt_views_job` through the daemon, so the warm run worker is up when the
   backfill starts (as on a daemon that has been running a while; by default the backfill's first run
   starts it). Runs launched by schedules and sensors meanwhile are counted apart.
3. Both warehouses must hold the same marts (row counts of raw.messages and the four partitioned marts).

Prints and writes bench/results/ui_backfill.json: both wall times, their ratio (goal: <= 1.10), the runs of
each path with their queue and run times relative to the start, and the time no backfill run was running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from live_lag import drop_databases, free_port, fresh_stack, submit, write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

DAY = date(2026, 3, 2)
SEED = 7
# what `botflow run` runs (dagster_project/automation/runner.py, run_window): the UI backfill selects their assets
BUILD_JOBS = ("dbt_views_job", "hourly_partition_job", "daily_partition_job")
COUNTED = ("raw.messages", "marts.fct_bot_replies", "marts.usage_analytics", "marts.conversation_metrics",
           "marts.bot_performance_metrics")
FROM_UI_TAG = {"key": "dagster/from_ui", "value": "true"}  # what the UI adds to every launch (uiExecutionTags.tsx)

ASSET_NODES = """
query { assetNodes { assetKey { path } groupName isExecutable isPartitioned jobNames
  partitionDefinition { description } repository { name location { name } } } }
"""
WORKSPACE = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
# the UI's mutation (ui-core/src/instance/backfill/BackfillUtils.tsx), with the error types it reads
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}
"""


# the warehouse


def counts(warehouse_url: str) -> dict[str, int]:
    with psycopg.connect(warehouse_url) as conn:
        return {table: conn.execute(f"select count(*) from {table}").fetchone()[0] for table in COUNTED}


# run records


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def run_rows(instance: Any, records: list[Any], origin: float) -> list[dict[str, Any]]:
    """One row per run, oldest first: what it built, its queue and run times, relative to `origin` (epoch s)."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    from dagster_project.automation.warm_launcher import WORKER_PID_TAG

    rows = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        tags = run.tags
        events = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.ENGINE_EVENT,
                                                         dg.DagsterEventType.STEP_START,
                                                         dg.DagsterEventType.ASSET_CHECK_EVALUATION})
        executor = next((("multiprocess" if "multiprocess" in e.message else "in_process") for e in events
                         if e.dagster_event and e.dagster_event.is_engine_event and "Executing steps" in e.message),
                        None)
        if ASSET_PARTITION_RANGE_START_TAG in tags:
            partitions = f"{tags[ASSET_PARTITION_RANGE_START_TAG]}...{tags[ASSET_PARTITION_RANGE_END_TAG]}"
        else:
            partitions = tags.get(PARTITION_NAME_TAG)
        created = record.create_timestamp.timestamp()
        rows.append({
            "run_id": run.run_id[:8], "job": run.job_name, "status": run.status.value,
            # None: the whole job (botflow run's jobs); else the backfill's subset of the asset job
            "assets": None if run.asset_selection is None else len(run.asset_selection), "partitions": partitions,
            "steps": sum(1 for e in events if e.dagster_event and e.dagster_event.is_step_start),
            "check_evaluations": sum(1 for e in events if e.dagster_event
                                     and e.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION),
            "executor": executor, "forked_warm": WORKER_PID_TAG in tags,
            "retry_of": tags.get("dagster/parent_run_id", "")[:8] or None,
            "created_s": round(created - origin, 2),
            "started_s": round(record.start_time - origin, 2) if record.start_time else None,
            "finished_s": round(record.end_time - origin, 2) if record.end_time else None,
            "queued_s": round(record.start_time - created, 2) if record.start_time else None,
            "run_s": round(record.end_time - record.start_time, 2) if record.end_time and record.start_time else None,
        })
    return rows


# path 1: botflow run


def measure_cli(start: date, end: date) -> dict[str, Any]:
    import dagster as dg

    began_epoch, began = time.time(), time.monotonic()
    subprocess.run([str(Path(sys.executable).with_name("botflow")), "run", "--start", f"{start}", "--end", f"{end}"],
                   cwd=REPO, check=True)
    seconds = time.monotonic() - began
    with dg.DagsterInstance.get() as instance:
        records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= began_epoch - 1]
        runs = run_rows(instance, records, began_epoch)
    spans = [(r["started_s"], r["finished_s"]) for r in runs if r["started_s"] is not None and r["finished_s"]]
    return {"seconds": round(seconds, 2), "runs": runs,
            "outside_runs_s": round(seconds - busy_seconds(spans), 2)}  # process start-up, dbt parse, waits


# path 2: the UI


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 120) -> dict[str, Any]:
    """POST /graphql as the UI's Apollo client does; the `data`, or SystemExit with the errors."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise SystemExit(f"GraphQL errors: {json.dumps(answer['errors'])[:2000]}")
    return answer["data"]


def start_webserver(log_path: Path, port: int) -> subprocess.Popen:
    """`dagster-webserver -w workspace.yaml` with this process's (exported) settings, as `botflow ui` has them."""
    from dagster_project.core.settings import process_environment

    log = log_path.open("w")
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(REPO / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=process_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_webserver(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 300) -> None:
    """Until the webserver answers and has loaded the `botflow` location (as the UI shows it loaded)."""
    deadline = time.monotonic() + timeout
    state = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"dagster-webserver exited ({process.returncode}); see {log_path}")
        try:
            workspace = graphql(url, WORKSPACE, timeout=10)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(1)
            continue
        entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
        entry = entries.get("botflow")
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise SystemExit(f"the botflow location failed to load: {loaded.get('message', '')[:2000]}")
            return
        state = entry["loadStatus"] if entry else "no botflow location yet"
        time.sleep(1)
    raise SystemExit(f"the webserver did not load the botflow location in {timeout}s ({state}); see {log_path}")


def wait_daemon(instance: Any, timeout: float = 300) -> None:
    """Until every daemon the instance needs has beaten and the sensor daemon has ticked (its code servers are
    up): a daemon that was already running when the user clicked."""
    deadline = time.monotonic() + timeout
    required = set(instance.get_required_daemon_types())
    beating: set[str] = set()
    ticked = False
    while time.monotonic() < deadline:
        beating = set(instance.get_daemon_heartbeats())
        ticked = any(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
                     for state in instance.all_instigator_state())
        if required <= beating and ticked:
            return
        time.sleep(1)
    raise SystemExit(f"the daemon was not ready in {timeout}s (beating: {sorted(beating)} of {sorted(required)}, "
                     f"a sensor ticked: {ticked})")


def ui_selection(url: str) -> list[dict[str, list[str]]]:
    """The asset keys (GraphQL input) of the jobs `botflow run` runs, from the webserver's asset nodes."""
    nodes = [n for n in graphql(url, ASSET_NODES)["assetNodes"]
             if n["repository"]["location"]["name"] == "botflow" and set(n["jobNames"]) & set(BUILD_JOBS)]
    if not nodes or not all(n["isExecutable"] for n in nodes):
        raise SystemExit(f"unexpected asset selection: {nodes}")
    return [{"path": n["assetKey"]["path"]} for n in sorted(nodes, key=lambda n: n["assetKey"]["path"])]


def launch_backfill(url: str, selection: list[dict[str, list[str]]], partition_names: list[str]) -> str:
    """The UI's backfill of a selection spanning several partitionings (LaunchAssetChoosePartitionsDialog.tsx,
    target `pureWithAnchorAsset`): assetSelection + the anchor's (hourly) partition keys."""
    params = {"tags": [FROM_UI_TAG], "assetSelection": selection, "partitionNames": partition_names,
              "fromFailure": False}
    result = graphql(url, LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"launchPartitionBackfill: {result['__typename']}: {result.get('message', '')[:2000]}")
    return result["backfillId"]


def wait_backfill(instance: Any, backfill_id: str, timeout: float) -> tuple[Any, float]:
    """Until the backfill is in a terminal status and none of its runs is in progress; (it, when seen so)."""
    import dagster as dg
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status in BULK_ACTION_TERMINAL_STATUSES:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            if all(run.is_finished for run in runs):
                return backfill, time.time()
        time.sleep(1)
    raise SystemExit(f"backfill {backfill_id} not done after {timeout:.0f}s (status {backfill.status.value})")


def warm_up(instance: Any) -> None:
    """Launch dbt_views_job through the daemon's queue and wait for it: the launcher starts its warm worker."""
    import dagster as dg

    before = {r.run_id for r in instance.get_runs()}
    submit("dbt_views_job")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = [r for r in instance.get_runs(filters=dg.RunsFilter(job_name="dbt_views_job")) if r.run_id not in before]
        if runs and runs[0].is_finished:
            if runs[0].status != dg.DagsterRunStatus.SUCCESS:
                raise SystemExit(f"warm-up run {runs[0].run_id} {runs[0].status.value}")
            time.sleep(5)  # the worker warms after the launch that started it
            return
        time.sleep(0.5)
    raise SystemExit("warm-up run not done after 300s")


def measure_ui(home: Path, start: date, end: date, timeout: float, warm: bool) -> dict[str, Any]:
    import dagster as dg

    from dagster_project.cli.daemon import start_daemon, stop_daemon
    from dagster_project.core.partitions import hourly_partitions
    from dagster_project.core.settings import Settings
    from dagster_project.core.window import Window

    settings = Settings.from_env()
    daemon = start_daemon(settings, home / "daemon.log")  # exports the settings, prepares DAGSTER_HOME
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webserver = start_webserver(home / "webserver.log", port)
    print(f"daemon (log {home / 'daemon.log'}) and webserver on {url} (log {home / 'webserver.log'}) starting ...",
          flush=True)
    try:
        with dg.DagsterInstance.get() as instance:
            wait_webserver(url, webserver, home / "webserver.log")
            wait_daemon(instance)
            if warm:
                warm_up(instance)
            selection = ui_selection(url)
            partition_names = Window.days(start, end).partition_keys(hourly_partitions)
            before = {r.run_id for r in instance.get_runs()}
            print(f"launching the backfill: {len(selection)} assets x {len(partition_names)} hourly keys "
                  f"({partition_names[0]} ... {partition_names[-1]})", flush=True)
            submitted = time.time()
            backfill_id = launch_backfill(url, selection, partition_names)
            backfill, seen_done = wait_backfill(instance, backfill_id, timeout)
            records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            ours = {r.dagster_run.run_id for r in records}
            others = [r for r in instance.get_run_records() if r.dagster_run.run_id not in before | ours]
            runs = run_rows(instance, records, submitted)
            other_runs = run_rows(instance, others, submitted)
    finally:
        stop_daemon(webserver)
        stop_daemon(daemon)
    print(f"backfill {backfill_id}: {backfill.status.value}, {len(runs)} runs", flush=True)
    for row in runs:
        print(f"  {row}", flush=True)
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    retried = {r["retry_of"] for r in runs if r["retry_of"]}
    if backfill.status.value not in ("COMPLETED", "COMPLETED_SUCCESS") or [r for r in failed
                                                                            if r["run_id"] not in retried]:
        raise SystemExit(f"backfill {backfill_id} ended {backfill.status.value}; failed runs: {failed}; "
                         f"see {home / 'daemon.log'}")
    if not runs:
        raise SystemExit(f"backfill {backfill_id} launched no run")
    last_end = max(r["finished_s"] for r in runs)
    spans = [(r["started_s"], r["finished_s"]) for r in runs]
    return {"seconds": round(last_end, 2), "backfill_id": backfill_id, "status": backfill.status.value,
            "seen_done_s": round(seen_done - submitted, 2), "assets_selected": len(selection),
            "partition_names": len(partition_names), "warm_up": warm,
            "outside_runs_s": round(last_end - busy_seconds(spans), 2),  # no backfill run running: daemon ticks, queue
            "failed_attempts": len(failed), "runs": runs, "other_runs": other_runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=3, help="simulated days, the range of both builds")
    parser.add_argument("--conversations", type=int, default=37_500, help="conversations per simulated day")
    parser.add_argument("--warm-up", action="store_true", help="launch one run through the daemon first (warm worker)")
    args = parser.parse_args()

    from dagster_project.core.settings import Settings
    from dagster_project.dev.simulate import simulate

    start, end = DAY, DAY + timedelta(days=args.days)
    names: list[str] = []
    admin, cli_names, cli_home = fresh_stack("bench_uibf", BOTFLOW_PARTITIONS_START=f"{DAY}")
    names += cli_names
    try:
        Settings.from_env().export()  # as `botflow` publishes them: this process reads the same instance
        source_url = os.environ["BOTFLOW_SOURCE_URL"]
        with psycopg.connect(source_url) as conn:
            summary = simulate(conn, "public", DAY, args.days, seed=SEED, conversations_per_day=args.conversations)
        print(f"simulated [{start}, {end}): {summary.messages} messages; botflow run ...", flush=True)
        cli = measure_cli(start, end)
        cli_counts = counts(os.environ["BOTFLOW_WAREHOUSE_URL"])
        print(f"botflow run: {cli['seconds']}s; {cli_counts}", flush=True)

        # the second stack: its own warehouse and Dagster storage, the first one's source
        _, ui_names, ui_home = fresh_stack("bench_uibf", BOTFLOW_PARTITIONS_START=f"{DAY}",
                                           BOTFLOW_SOURCE_URL=source_url)
        names += ui_names
        ui = measure_ui(ui_home, start, end, timeout=max(900.0, 20 * cli["seconds"]), warm=args.warm_up)
        ui_counts = counts(os.environ["BOTFLOW_WAREHOUSE_URL"])
        print(f"UI backfill: {ui['seconds']}s; {ui_counts}", flush=True)
        if ui_counts != cli_counts:
            raise SystemExit(f"the two paths built different marts: botflow run {cli_counts}, UI {ui_counts}")

        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "first_day": f"{start}", "days": args.days,
            "conversations_per_day": args.conversations, "messages": summary.messages,
            "botflow_run_s": cli["seconds"], "ui_backfill_s": ui["seconds"],
            "ratio": round(ui["seconds"] / cli["seconds"], 3), "goal_ratio": 1.10,
            "runs_launched": len(ui["runs"]), "row_counts": cli_counts,
            "botflow_run": cli, "ui_backfill": ui,
        }
        print(json.dumps(result, indent=2))
        write_result("ui_backfill", result)
        return 0
    finally:
        drop_databases(admin, names)


if __name__ == "__main__":
    sys.exit(main())
