"""Latency of a run the daemon launches: from the run's creation (what a schedule's tick does) to done.

    .venv/bin/python bench/scheduled_run.py [--conversations 37500] [--history-days 1] [--repeat 4]

Fresh databases on the local PostgreSQL (or `BOTFLOW_BENCH_PG_URL`, else the embedded one), `--history-days`
simulated days ending with the measured day (30 at 37,500 conversations a day: ~10M messages, the scale of
the goal), built with `botflow run`; then, for each launcher in turn (a new process per run, as Dagster's default
launcher starts them, `BOTFLOW_WARM_RUNS=0`; and the warm worker, `1`), a real `dagster-daemon` and
`--repeat` hourly partition runs of that day submitted to its queue one after another, as the hourly
schedule's tick submits them. For each run, from the instance's records: created -> started (queue and
launch), started -> finished (the run's process: start-up and steps) and created -> finished. The first
run of the warm launcher starts its worker (and runs the ordinary way): it is reported apart.
Writes bench/results/scheduled_run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from live_lag import drop_databases, fresh_stack, submit, write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

DAY = date(2026, 3, 2)


def wait_done(instance, before: set[str], timeout: float = 300):
    import dagster as dg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in instance.get_run_records(filters=dg.RunsFilter(job_name="hourly_partition_job"))
                   if r.dagster_run.run_id not in before]
        if records and records[0].dagster_run.is_finished:
            return records[0]
        time.sleep(0.2)
    raise SystemExit(f"no finished run after {timeout}s")


def measure(settings, home: Path, warm: bool, repeat: int) -> list[dict]:
    import dagster as dg

    from dagster_project.automation.warm_launcher import WORKER_PID_TAG
    from dagster_project.cli.daemon import start_daemon, stop_daemon

    os.environ["BOTFLOW_WARM_RUNS"] = "1" if warm else "0"
    daemon = start_daemon(settings, home / f"daemon-{'warm' if warm else 'cold'}.log")
    rows = []
    try:
        with dg.DagsterInstance.get() as instance:
            for i in range(repeat):
                before = {r.run_id for r in instance.get_runs()}
                submit("hourly_partition_job", {"dagster/partition": f"{DAY:%Y-%m-%d}-{10 + i:02d}:00"})
                record = wait_done(instance, before)
                run = record.dagster_run
                assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id} {run.status}"
                created = record.create_timestamp.timestamp()
                rows.append({"created_to_started_s": round(record.start_time - created, 2),
                             "started_to_finished_s": round(record.end_time - record.start_time, 2),
                             "created_to_finished_s": round(record.end_time - created, 2),
                             "forked_warm": WORKER_PID_TAG in run.tags})
                print(f"  {'warm' if warm else 'cold'} run {i + 1}: {rows[-1]}", flush=True)
    finally:
        stop_daemon(daemon)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=37_500, help="conversations in the simulated day")
    parser.add_argument("--history-days", type=int, default=1,
                        help="days of history before and including the measured day (30: a month in the warehouse)")
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()

    from dagster_project.core.settings import Settings
    from dagster_project.dev.simulate import simulate

    first = date.fromordinal(DAY.toordinal() - args.history_days + 1)
    admin, names, home = fresh_stack("bench_sched", BOTFLOW_PARTITIONS_START=f"{first:%Y-%m-%d}")
    try:
        began = time.perf_counter()
        with psycopg.connect(os.environ["BOTFLOW_SOURCE_URL"]) as conn:
            summary = simulate(conn, "public", first, args.history_days, seed=7,
                               conversations_per_day=args.conversations)
        print(f"simulated [{first}, {DAY}]: {summary} in {time.perf_counter() - began:.0f}s; "
              "building it with botflow run ...", flush=True)
        began = time.perf_counter()
        subprocess.run([str(Path(sys.executable).with_name("botflow")), "run", "--start", f"{first}",
                        "--end", f"{date.fromordinal(DAY.toordinal() + 1)}"], cwd=REPO, check=True)
        built_s = round(time.perf_counter() - began, 1)
        settings = Settings.from_env()
        cold = measure(settings, home, warm=False, repeat=args.repeat)
        warm = measure(settings, home, warm=True, repeat=args.repeat + 1)

        def median(rows: list[dict], key: str) -> float:
            return round(statistics.median(row[key] for row in rows), 2)

        keys = ("created_to_started_s", "started_to_finished_s", "created_to_finished_s")
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "day": f"{DAY}",
            "conversations": args.conversations, "history_days": args.history_days,
            "messages_in_warehouse": summary.messages, "history_built_s": built_s, "repeat": args.repeat,
            "new_process_per_run": {key: median(cold, key) for key in keys} | {"runs": cold},
            "warm_worker": {key: median(warm[1:], key) for key in keys} | {"first_run": warm[0], "runs": warm[1:]},
        }
        print(json.dumps(result, indent=2))
        write_result("scheduled_run", result)
        return 0
    finally:
        drop_databases(admin, names)


if __name__ == "__main__":
    sys.exit(main())
