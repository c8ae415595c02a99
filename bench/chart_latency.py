"""Superset chart latency: every chart of the three dashboards over the last 30 days, through the real
chart-data API, with an empty cache and with a warm one.

    .venv/bin/python bench/chart_latency.py                      # 30 days x 37,500 conversations (~10M messages)
    .venv/bin/python bench/chart_latency.py --conversations 2000 # the same shape, small (checks the script)

Fresh databases; the simulated days end yesterday (UTC), so Superset's "Last month" covers them; the
window is built with `botflow run`'s own code (in this process), then Superset is started from its
virtualenv and synced as `botflow superset sync` does. Each chart's saved query runs with its time range
set to "Last month", as an admin (no row-level filter) and as one organization's analyst (its RLS filter
applied): `force: true` (Superset's cache bypassed: the SQL runs) `--repeat` times, then from the cache
(on for the bench, 1 hour; off by default in BotFlow).
For each chart the SQL Superset sent is also timed on PostgreSQL alone (EXPLAIN ANALYZE's execution
time, as the warehouse's owner for the admin and as the analyst's login), which splits the database's
share from Superset's.
The seed's three SQL functions are timed over the whole window too, for the busiest bot and organization.
Writes bench/results/chart_latency.json and drops its databases (`--keep` leaves them).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from live_lag import drop_databases, free_port, fresh_stack, write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

DASHBOARDS = ("bot-performance", "usage", "live")
TIME_RANGE = "Last month"


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def dashboard_charts(spec: dict) -> list[str]:
    return [name for slug in DASHBOARDS for row in spec["dashboards"][slug]["rows"] for name in row]


def query_context(name: str, spec: dict, dataset_id: int, *, force: bool) -> dict:
    from dagster_project.serve.superset.bundle import chart_form_and_query

    chart = dict(spec["charts"][name])
    if "time_range" in chart:  # the live charts have none: their tables hold the last refresh only
        chart["time_range"] = TIME_RANGE
    _, context = chart_form_and_query(name, chart, spec["datasets"][chart["dataset"]])
    context["datasource"]["id"] = dataset_id
    context["form_data"]["datasource"] = f"{dataset_id}__table"
    context["force"] = force
    return context


def timed_chart(api, context: dict) -> tuple[float, dict]:
    began = time.perf_counter()
    body = api.post("/api/v1/chart/data", context)
    seconds = time.perf_counter() - began
    [result] = body["result"]
    if result.get("error") or result.get("status") != "success":
        raise RuntimeError(f"chart query failed: {result.get('error') or result.get('status')}")
    return seconds, result


def database_seconds(warehouse_url: str, query: str, login: str | None = None) -> float:
    """EXPLAIN ANALYZE's execution time of the SQL Superset sent, run once to warm the buffers first; as
    `login` (the analyst's warehouse login, under its row-level security) or as the warehouse's owner."""
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        if login:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(login)))
        conn.execute(f"explain analyze {query}")
        [[plan]] = conn.execute(f"explain (analyze, format json) {query}").fetchall()
    return plan[0]["Execution Time"] / 1000


def function_seconds(warehouse_url: str, start: date, end: date, repeat: int) -> dict:
    """The seed's three SQL functions (marts.*) over the whole window, for the bot and the organization with
    the most replies: wall seconds of each call from this client, `repeat` times."""
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        bot, org = conn.execute("select bot_id, organization_id from marts.fct_bot_replies "
                                "group by 1, 2 order by count(*) desc limit 1").fetchone()
        since, until = (datetime.combine(day, datetime.min.time(), UTC) for day in (start, end))
        calls = {
            "calculate_response_time_percentiles": (
                "select * from marts.calculate_response_time_percentiles(%s, %s, %s)", (bot, since, until)),
            "get_bot_performance_summary": ("select * from marts.get_bot_performance_summary(%s, %s, %s)",
                                            (bot, start, end - timedelta(days=1))),
            "get_organization_analytics_summary": (
                "select * from marts.get_organization_analytics_summary(%s, %s, %s)", (org, since, until)),
        }
        timings = {}
        for name, (query, params) in calls.items():
            seconds = []
            for _ in range(repeat):
                began = time.perf_counter()
                conn.execute(query, params).fetchall()
                seconds.append(time.perf_counter() - began)
            timings[name] = spread(seconds)
    return timings


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--conversations", type=int, default=37_500, help="conversations per day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the databases (their names are printed)")
    args = parser.parse_args()

    admin, names, home = fresh_stack("charts", BOTFLOW_PARTITIONS_START="2026-01-01",
                                     BOTFLOW_MAX_REJECTED_SHARE="1", BOTFLOW_MAX_REPAIRED_SHARE="1",
                                     BOTFLOW_SUPERSET_PORT=str(free_port()),
                                     BOTFLOW_SUPERSET_CACHE_SECONDS="3600")  # "cached" from the cache (default: off)
    metadata = names[0].replace("_source_", "_superset_")
    from dagster_project.core.settings import ensure_databases, with_database

    ensure_databases(admin, [metadata])
    os.environ["BOTFLOW_SUPERSET_METADATA_URL"] = with_database(admin, metadata)
    names.append(metadata)
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "days": args.days,
                     "conversations_per_day": args.conversations, "time_range": TIME_RANGE,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    s = None
    try:
        import dagster as dg

        from dagster_project.automation.runner import run_window
        from dagster_project.core.settings import Settings
        from dagster_project.definitions import defs
        from dagster_project.dev.simulate import simulate
        from dagster_project.serve.superset import service
        from dagster_project.serve.superset.api import SupersetApi
        from dagster_project.serve.superset.bundle import load_spec
        from dagster_project.serve.superset.logins import user_login
        from dagster_project.serve.superset.sync import botflow_datasets, grant, sync

        settings = Settings.from_env()
        settings.export()
        settings.prepare_dagster_home()
        end = datetime.now(UTC).date()
        start = end - timedelta(days=args.days)
        say(f"simulating {args.days} days x {args.conversations:,} conversations, {start} to {end} ...")
        with psycopg.connect(settings.source_url) as conn:
            summary = simulate(conn, "public", start, args.days, seed=1, conversations_per_day=args.conversations)
        results["messages"] = summary.messages
        say(f"{summary.messages:,} messages; building the window ...")
        with dg.DagsterInstance.get() as instance:
            began = time.perf_counter()
            run_window(defs, instance, start, end, progress=lambda line: say("  " + line))
            results["build_s"] = round(time.perf_counter() - began, 1)
            from dagster_project.live_definitions import defs as live_defs

            live = live_defs.resolve_job_def("live_job").execute_in_process(instance=instance)
            assert live.success, "the live job failed"
        with psycopg.connect(settings.warehouse_url) as conn:
            results["bot_replies"] = conn.execute("select count(*) from marts.fct_bot_replies").fetchone()[0]
            org_name, = conn.execute("select organization_name from marts.dim_organizations "
                                     "order by organization_name limit 1").fetchone()
        say(f"built in {results['build_s']} s ({results['bot_replies']:,} bot replies); starting Superset ...")
        s = service.up(settings, progress=lambda line: say("  " + line))
        sync(s, settings.warehouse_url, progress=lambda line: say("  " + line),
             other_databases=[settings.dagster_storage_url, settings.source_url])
        grant(s, settings.warehouse_url, org_name, "bench_analyst", "bench-analyst-pw-1", progress=lambda _line: None)
        users = {"admin": SupersetApi(s.url, s.admin_user, s.admin_password),
                 "analyst": SupersetApi(s.url, "bench_analyst", "bench-analyst-pw-1")}
        spec = load_spec()
        datasets = botflow_datasets(users["admin"])
        charts: dict[str, dict] = results.setdefault("charts", {})  # in the JSON even if a later chart fails
        for name in dashboard_charts(spec):
            dataset_id = datasets[spec["charts"][name]["dataset"]]
            row: dict = {"dataset": spec["charts"][name]["dataset"]}
            for who, api in users.items():
                cold = []
                for _ in range(args.repeat):
                    seconds, result = timed_chart(api, query_context(name, spec, dataset_id, force=True))
                    cold.append(seconds)
                warm = [timed_chart(api, query_context(name, spec, dataset_id, force=False))[0]
                        for _ in range(args.repeat)]
                row[who] = {"uncached_s": spread(cold), "cached_s": spread(warm), "rows": result["rowcount"],
                            "sql": result["query"]}
                login = user_login("bench_analyst") if who == "analyst" else None
                row[who]["database_s"] = round(database_seconds(settings.warehouse_url, result["query"], login), 3)
            charts[name] = row
            say(f"{name:<24} uncached {row['admin']['uncached_s']['median']:.2f} s (database "
                f"{row['admin']['database_s']:.2f} s, analyst {row['analyst']['uncached_s']['median']:.2f} s, "
                f"database {row['analyst']['database_s']:.2f} s), "
                f"cached {row['admin']['cached_s']['median']:.2f} s")
        results["seed_functions_s"] = function_seconds(settings.warehouse_url, start, end, args.repeat)
        say(f"the seed's functions over the window: {results['seed_functions_s']}")
        slowest = max(charts, key=lambda n: max(charts[n][w]["uncached_s"]["median"] for w in users))
        results["slowest_uncached"] = {"chart": slowest, "seconds": max(
            charts[slowest][w]["uncached_s"]["median"] for w in users)}
        results["charts_over_1s_uncached"] = sorted(
            n for n, c in charts.items() if max(c[w]["uncached_s"]["median"] for w in users) > 1.0)
        results["slowest_cached_s"] = max(c[w]["cached_s"]["median"] for c in charts.values() for w in users)
    except BaseException as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        if s is not None:
            service.stop(s)
        if args.keep:
            say(f"kept: {', '.join(names)}")
        else:
            drop_databases(admin, names)
        out = write_result("chart_latency", results)
    say(f"slowest uncached: {results['slowest_uncached']}; over 1 s: {results['charts_over_1s_uncached']}; "
        f"slowest cached: {results['slowest_cached_s']} s; written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
