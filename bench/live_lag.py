"""Lag of the live feed: from a message written to the source to it being counted in live tables.

Starts the Dagster daemon against fresh databases (the local PostgreSQL, or the embedded one),
trickles messages into the source at a steady rate, and polls live.organization_metrics: a message
with created_at t is counted once a refresh reports newest_message_at >= t. Prints p50 / p95 / max
lag, and the live runs' own durations (queued -> started -> finished, from the Dagster instance).

    .venv/bin/python bench/live_lag.py [--minutes 3] [--rate 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def admin_url() -> str:
    url = os.environ.get("BOTFLOW_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url
    except psycopg.OperationalError:
        import pgserver

        return pgserver.get_server(REPO / ".botflow" / "pgdata", cleanup_mode=None).get_uri()


def fresh_stack(prefix: str, **settings: str) -> tuple[str, list[str], Path]:
    """Fresh source, warehouse and Dagster databases and a home folder, set in this process's environment
    with `settings`; (the admin URL, the databases' names to drop afterwards, the home)."""
    from dagster_project.core.settings import ensure_databases, with_database

    admin = admin_url()
    tag = uuid.uuid4().hex[:6]
    names = {role: f"{prefix}_{role}_{tag}" for role in ("source", "warehouse", "dagster")}
    ensure_databases(admin, names.values())
    home = Path(tempfile.mkdtemp(prefix=f"botflow-{prefix}-"))
    os.environ.update({
        "BOTFLOW_SOURCE_URL": with_database(admin, names["source"]),
        "BOTFLOW_WAREHOUSE_URL": with_database(admin, names["warehouse"]),
        "BOTFLOW_DAGSTER_STORAGE_URL": with_database(admin, names["dagster"]),
        "BOTFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
        **settings,
    })
    return admin, list(names.values()), home


def write_result(name: str, result: dict) -> Path:
    """bench/results/<name>.json (dates and the like as text); returns its path."""
    out = REPO / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def submit(job: str, tags: dict[str, str] | None = None) -> None:
    """Queue a run as a schedule's tick does (`dagster job launch` through the instance's run coordinator)."""
    subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", str(REPO / "workspace.yaml"),
                    "--location", "botflow", "-j", job, *(["--tags", json.dumps(tags)] if tags else [])],
                   cwd=REPO, check=True, capture_output=True, text=True)


def drop_databases(admin: str, names: list[str]) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second")
    parser.add_argument("--interval", type=int, default=2, help="sensor interval in seconds")
    args = parser.parse_args()

    from dagster_project.cli.daemon import start_daemon, stop_daemon
    from dagster_project.core.settings import Settings
    from dagster_project.dev.simulate import Trickle

    admin, names, home = fresh_stack("bench_live", BOTFLOW_LIVE_INTERVAL_SECONDS=str(args.interval))
    settings = Settings.from_env()
    written: list[datetime] = []
    seen: dict[int, float] = {}
    stop = threading.Event()

    def trickle() -> None:
        with psycopg.connect(settings.source_url) as conn:
            sim = Trickle(conn, "public", seed=1)
            period = 1.0 / args.rate
            next_at = time.monotonic()
            while not stop.is_set():
                _, created = sim.step()
                written.append(created)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))

    daemon = start_daemon(settings, home / "daemon.log")
    print(f"daemon started (log {home / 'daemon.log'}); trickling {args.rate}/s for {args.minutes} min")
    writer = threading.Thread(target=trickle, daemon=True)
    try:
        writer.start()
        deadline = time.monotonic() + args.minutes * 60
        with psycopg.connect(settings.warehouse_url, autocommit=True) as wh:
            while time.monotonic() < deadline + 30 and (time.monotonic() < deadline or len(seen) < len(written)):
                if time.monotonic() >= deadline:
                    stop.set()
                try:
                    newest = wh.execute("select max(newest_message_at) from live.organization_metrics").fetchone()[0]
                except psycopg.errors.UndefinedTable:
                    newest = None
                now = time.time()
                if newest:
                    for i, created in enumerate(list(written)):
                        if i not in seen and created <= newest:
                            seen[i] = now - created.timestamp()
                time.sleep(0.25)
    finally:
        stop.set()
        stop_daemon(daemon)

    lags = list(seen.values())
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name="live_job"))
        durations = [r.end_time - r.start_time for r in records if r.end_time and r.start_time]
        queue_waits = [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rate_per_s": args.rate, "minutes": args.minutes, "sensor_interval_s": args.interval,
        "messages": len(written), "counted": len(lags),
        "lag_p50_s": round(statistics.median(lags), 2) if lags else None,
        "lag_p95_s": round(quantile(lags, 0.95), 2) if lags else None,
        "lag_max_s": round(max(lags), 2) if lags else None,
        "live_runs": len(records),
        "run_duration_p50_s": round(statistics.median(durations), 2) if durations else None,
        "run_duration_max_s": round(max(durations), 2) if durations else None,
        "request_to_start_p50_s": round(statistics.median(queue_waits), 2) if queue_waits else None,
    }
    print(json.dumps(result, indent=2))
    write_result("live_lag", result)
    drop_databases(admin, names)
    return 0 if lags and len(lags) == len(written) else 1


if __name__ == "__main__":
    sys.exit(main())
