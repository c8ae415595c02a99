"""The two engines side by side: the backfill and the full recompute on PostgreSQL and on Spark.

    .venv/bin/python bench/engines.py --scale small                 # ~1M messages; Spark with 1 and 2 workers
    .venv/bin/python bench/engines.py --scale full --workers 2      # ~10M messages
    make bench ENGINE=spark [SCALE=small|full]

One simulated source; one fresh warehouse per engine configuration (PostgreSQL; Spark standalone with each
--workers count), all built in the same run, each by a new process (`--measure`, below) that runs
`botflow run` over the window and then `botflow refresh` through Dagster, as a user does, with
BOTFLOW_ENGINE set; the floor (bench/backfill.py: COPY + one aggregate query per mart) is measured in the
same run. After the builds, the warehouses must hold the same marts (row counts and sums). See
bench/README.md and docs/spark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backfill import SCALES, copy_source, databases, floor_queries, timed  # noqa: E402
from live_lag import admin_url, free_port, write_result  # noqa: E402

START = date(2026, 3, 2)
STAGES = ("session", "land", "dbt", "publish", "publish_replace")  # the last: publish's PostgreSQL transaction
# a mart of each partitioned dbt asset: its materialization carries the Spark stages of the asset's run
STAGE_MARTS = {"hourly": "fct_bot_replies", "daily": "conversation_metrics"}
# what must be equal between the warehouses: rows, and a sum of a column of each mart
CHECKSUMS = {
    "fct_bot_replies": "sum(cost_usd)",
    "usage_analytics": "sum(messages_sent + messages_received)",
    "conversation_metrics": "sum(total_messages)",
    "bot_performance_metrics": "sum(total_messages)",
}


def say(line: str) -> None:
    """Progress, on stderr: a measuring process's stdout carries its result."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# -- one engine configuration, in a process of its own -------------------------------------------------------
def spark_stages(instance) -> dict[str, dict[str, float]]:
    """The seconds of each Spark stage of the latest run of each partitioned dbt asset (its metadata)."""
    import dagster as dg

    stages = {}
    for split, mart in STAGE_MARTS.items():
        event = instance.get_latest_materialization_event(dg.AssetKey(["marts", mart]))
        metadata = event.asset_materialization.metadata if event else {}
        stages[split] = {stage: metadata[f"spark_{stage}_s"].value for stage in STAGES
                         if f"spark_{stage}_s" in metadata}
    return stages


def measure(days: int) -> dict:
    """`botflow run` over the window, then `botflow refresh`, on this process's engine (its environment)."""
    import dagster as dg

    from dagster_project.automation.runner import reload_prices_and_refresh_marts, run_window
    from dagster_project.core.settings import Settings, engine
    from dagster_project.definitions import defs

    settings = Settings.from_env()
    settings.export()
    settings.prepare_dagster_home()
    end = START + timedelta(days=days)
    result: dict = {"engine": engine()}
    cluster = None
    if engine() == "spark":
        from dagster_project.transform.spark.cluster import SparkCluster

        cluster = SparkCluster.from_env(settings.warehouse_url)
        result["workers"] = cluster.workers
        result["cluster_up_s"] = round(timed(lambda: cluster.up(progress=say)), 1)
    try:
        with dg.DagsterInstance.get() as instance:
            say(f"{result['engine']}: backfill [{START}, {end}) through Dagster ...")
            result["backfill_s"] = round(timed(lambda: run_window(defs, instance, START, end, progress=say)), 1)
            if cluster:
                result["backfill_stages_s"] = spark_stages(instance)
            say(f"{result['engine']}: full recompute (botflow refresh) ...")
            result["full_recompute_s"] = round(timed(
                lambda: reload_prices_and_refresh_marts(defs, instance, START, end, progress=say)), 1)
            if cluster:
                result["full_recompute_stages_s"] = spark_stages(instance)
    finally:
        if cluster:
            from dagster_project.transform.spark.session import stop_session

            stop_session()
            cluster.down()
    return result


# -- the run -----------------------------------------------------------------------------------------------
def run_configuration(label: str, env: dict[str, str], days: int) -> dict:
    """`--measure` in a new process with `env` (its progress shown as it goes): its result."""
    say(f"--- {label} ---")
    process = subprocess.run([sys.executable, __file__, "--measure", "--days", str(days)], cwd=REPO,
                             env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise SystemExit(f"{label}: the measuring process failed (exit {process.returncode}); see its output above")
    return json.loads(lines[-1])


def mart_sums(url: str) -> dict[str, tuple]:
    """Rows and a sum per mart (numbers: Spark's costs carry more decimal places, equal as numbers)."""
    with psycopg.connect(url) as conn:
        return {mart: tuple(conn.execute(f"select count(*), {checksum} from marts.{mart}").fetchone())
                for mart, checksum in CHECKSUMS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Spark worker counts to measure")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floor (min/median/max)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.days)))
        return 0

    days, per_day = SCALES[args.scale]
    tag = uuid.uuid4().hex[:6]
    configurations = {"postgres": {"BOTFLOW_ENGINE": "postgres"}}
    for workers in args.workers:
        configurations[f"spark_{workers}w"] = {"BOTFLOW_ENGINE": "spark", "BOTFLOW_SPARK_WORKERS": str(workers),
                                               "BOTFLOW_SPARK_MASTER_PORT": str(free_port())}
    names = {"src": f"bench_src_{tag}", "dagster": f"bench_dagster_{tag}", "floor": f"bench_floor_{tag}",
             **{label: f"bench_wh_{label}_{tag}" for label in configurations},
             **{f"{label}_metastore": f"bench_wh_{label}_{tag}_metastore" for label in configurations
                if label != "postgres"}}
    home = Path(tempfile.mkdtemp(prefix="botflow-bench-engines-"))
    results: dict = {"scale": args.scale, "days": days, "conversations_per_day": per_day,
                     "date": datetime.now(UTC).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    with databases(admin_url(), list(names.values())) as urls:
        url = {key: urls[name] for key, name in names.items()}
        os.environ.update({"BOTFLOW_SOURCE_URL": url["src"], "BOTFLOW_DAGSTER_STORAGE_URL": url["dagster"],
                           "BOTFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
                           "BOTFLOW_PARTITIONS_START": "2026-01-01", "BOTFLOW_MAX_REJECTED_SHARE": "1",
                           "BOTFLOW_MAX_REPAIRED_SHARE": "1", "BOTFLOW_SPARK_DIR": str(home / "spark")})
        from dagster_project.dev.simulate import simulate

        say(f"simulating {days} days x {per_day} conversations into the source ...")
        with psycopg.connect(url["src"]) as conn:
            results["messages"] = simulate(conn, "public", START, days, seed=1, conversations_per_day=per_day).messages
        say(f"{results['messages']:,} messages")

        copies, queries = [], []
        for _ in range(args.repeat):
            copies.append(timed(lambda: copy_source(url["src"], url["floor"])))
            queries.append(floor_queries(url["floor"]))
        results["floor_s"] = round(statistics.median(c + q for c, q in zip(copies, queries, strict=True)), 1)
        results["floor_queries_s"] = round(statistics.median(queries), 1)
        say(f"floor {results['floor_s']} s (queries {results['floor_queries_s']} s)")

        for label, env in configurations.items():
            extra = {"BOTFLOW_SPARK_METASTORE_URL": url[f"{label}_metastore"]} if label != "postgres" else {}
            results[label] = run_configuration(label, {**env, **extra, "BOTFLOW_WAREHOUSE_URL": url[label]}, days)
            say(f"{label}: backfill {results[label]['backfill_s']} s, "
                f"full recompute {results[label]['full_recompute_s']} s")
        sums = {label: mart_sums(url[label]) for label in configurations}
        results["marts_equal"] = all(s == sums["postgres"] for s in sums.values())
        if not results["marts_equal"]:
            raise SystemExit(f"the engines' marts differ: {json.dumps(sums, indent=1, default=str)}")

    pg = results["postgres"]
    results["ratios"] = {}
    for label in configurations:
        if label == "postgres":
            continue
        for measure_name in ("backfill_s", "full_recompute_s"):
            results["ratios"][f"{label} / postgres, {measure_name[:-2]}"] = round(
                results[label][measure_name] / pg[measure_name], 2)
        results["ratios"][f"{label} backfill / floor"] = round(results[label]["backfill_s"] / results["floor_s"], 1)
    results["ratios"]["postgres backfill / floor"] = round(pg["backfill_s"] / results["floor_s"], 1)
    print_table(results, list(configurations))
    out = write_result(f"engines-{args.scale}", results)
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


def print_table(r: dict, labels: list[str]) -> None:
    print(f"\nBotFlow engines: {r['scale']} = {r['messages']:,} messages over {r['days']} days "
          f"({r['machine']}, {r['date']}); marts equal on every engine: {r['marts_equal']}\n")
    print(f"  {'':<24}{'backfill':>12}{'full recompute':>18}")
    print(f"  {'floor (COPY + queries)':<24}{r['floor_s']:>11} s{r['floor_queries_s']:>17} s")
    for label in labels:
        print(f"  {label:<24}{r[label]['backfill_s']:>11} s{r[label]['full_recompute_s']:>17} s")
    for label in labels[1:]:
        for phase in ("backfill", "full_recompute"):
            stages = r[label].get(f"{phase}_stages_s", {})
            print(f"  {label} {phase} stages: " + "; ".join(
                f"{split} " + ", ".join(f"{k} {v:.0f}s" for k, v in s.items()) for split, s in stages.items()))
    print("\n  ratios (same run):")
    for name, value in r["ratios"].items():
        print(f"    {name}: {value}")


if __name__ == "__main__":
    sys.exit(main())
