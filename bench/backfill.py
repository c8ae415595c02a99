"""Backfill benchmark: the warehouse side by side with a bare-SQL floor and with the alternatives.

    .venv/bin/python bench/backfill.py --scale small     # ~1M messages (3 days), a few minutes
    .venv/bin/python bench/backfill.py --scale full      # ~10M messages (30 days)

All figures are measured in one run, on fresh databases of the same PostgreSQL, and every comparison
is printed as a ratio of two figures of that run. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from live_lag import admin_url, write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

SCALES = {  # days x conversations per day (~8.8 messages per conversation: ~330k messages per day)
    "small": (3, 37_500),
    "full": (30, 37_500),
    "tiny": (2, 2_000),  # for checking the script itself
}
TABLES = ("organizations", "bots", "conversations", "messages", "api_events")

# The least any implementation must do per mart: one plain aggregate query over the bare copied rows.
FLOOR_QUERIES = {
    "conversation_metrics": """
        create table floor_conversation_metrics as
        select m.conversation_id, count(*) as total_messages,
          count(*) filter (where m.direction = 'inbound') as user_messages,
          count(*) filter (where m.direction = 'outbound') as bot_messages,
          avg(m.response_time_ms) as avg_rt,
          percentile_cont(0.5) within group (order by m.response_time_ms) as p50,
          percentile_cont(0.95) within group (order by m.response_time_ms) as p95,
          percentile_cont(0.99) within group (order by m.response_time_ms) as p99,
          count(*) filter (where m.outcome = 'success') as successes,
          sum(coalesce(m.prompt_tokens, 0) + coalesce(m.completion_tokens, 0)) as tokens
        from messages m group by m.conversation_id""",
    "bot_performance_metrics": """
        create table floor_bot_performance as
        select c.bot_id, (m.created_at at time zone 'UTC')::date as date, count(*) as total_messages,
          count(distinct m.conversation_id) as active_conversations, avg(m.response_time_ms) as avg_rt,
          percentile_cont(0.5) within group (order by m.response_time_ms) as p50,
          percentile_cont(0.95) within group (order by m.response_time_ms) as p95,
          percentile_cont(0.99) within group (order by m.response_time_ms) as p99,
          count(*) filter (where m.outcome = 'success') as successes, count(m.outcome) as with_outcome
        from messages m join conversations c on c.id = m.conversation_id group by 1, 2""",
    "usage_analytics": """
        create table floor_usage as
        select c.organization_id, date_trunc('hour', m.created_at) as hour,
          count(*) filter (where m.direction = 'outbound') as sent,
          count(*) filter (where m.direction = 'inbound') as received,
          count(distinct c.customer_phone) filter (where m.direction = 'inbound') as active_users,
          count(distinct c.bot_id) as bots_active
        from messages m join conversations c on c.id = m.conversation_id group by 1, 2""",
}

# The seed system's design: a per-message trigger that recomputes the conversation's metrics.
TRIGGER_DDL = """
create table trig_conversation_metrics (
  conversation_id uuid primary key, total_messages int, user_messages int, bot_messages int,
  avg_rt numeric, p50 double precision, p95 double precision, p99 double precision, tokens bigint);
create or replace function trig_update_conversation_metrics() returns trigger language plpgsql as $$
begin
  insert into trig_conversation_metrics
  select m.conversation_id, count(*), count(*) filter (where m.direction = 'inbound'),
    count(*) filter (where m.direction = 'outbound'), avg(m.response_time_ms),
    percentile_cont(0.5) within group (order by m.response_time_ms),
    percentile_cont(0.95) within group (order by m.response_time_ms),
    percentile_cont(0.99) within group (order by m.response_time_ms),
    sum(coalesce(m.prompt_tokens, 0) + coalesce(m.completion_tokens, 0))
  from trig_messages m where m.conversation_id = new.conversation_id group by m.conversation_id
  on conflict (conversation_id) do update set total_messages = excluded.total_messages,
    user_messages = excluded.user_messages, bot_messages = excluded.bot_messages, avg_rt = excluded.avg_rt,
    p50 = excluded.p50, p95 = excluded.p95, p99 = excluded.p99, tokens = excluded.tokens;
  return new;
end $$;
create table trig_messages (like messages including all);
create index on trig_messages (conversation_id);
create trigger trig_messages_metrics after insert on trig_messages
  for each row execute function trig_update_conversation_metrics();
"""


def database_url(admin: str, name: str) -> str:
    from dagster_project.core.settings import with_database

    return with_database(admin, name)


@contextmanager
def databases(admin: str, names: list[str]):
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f'create database "{name}"')
    try:
        yield {name: database_url(admin, name) for name in names}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'drop database if exists "{name}" with (force)')


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": len(values)}


def peak_rss_mb() -> dict:
    """The bench process's peak: the pipeline runs in it. (RUSAGE_CHILDREN is no measure of the
    fresh-process runs: for a forked child it reports the RSS shared with this process before exec.)"""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"pipeline_process_mb": round(own, 1)}


# -- the floor ---------------------------------------------------------------------------------------
def copy_source(src_url: str, dst_url: str) -> None:
    """COPY every source table into bare tables of dst (streamed between the two connections)."""
    with psycopg.connect(src_url) as src, psycopg.connect(dst_url) as dst:
        for table in TABLES:
            columns = src.execute(
                "select string_agg(format('%%I %%s', column_name, data_type), ', ' order by ordinal_position) "
                "from information_schema.columns where table_schema = 'public' and table_name = %s",
                (table,)).fetchone()[0]
            dst.execute(f"drop table if exists {table}; create unlogged table {table} ({columns})")
            with src.cursor().copy(f"copy {table} to stdout") as out, \
                    dst.cursor().copy(f"copy {table} from stdin") as into:
                for chunk in out:
                    into.write(chunk)
        dst.commit()


def floor_queries(dst_url: str) -> float:
    with psycopg.connect(dst_url) as conn:
        conn.execute("drop table if exists floor_conversation_metrics, floor_bot_performance, floor_usage")
        began = time.perf_counter()
        for query in FLOOR_QUERIES.values():
            conn.execute(query)
        conn.commit()
        return time.perf_counter() - began


# -- peers -------------------------------------------------------------------------------------------
def trigger_peer(floor_url: str, day: date) -> tuple[float, int]:
    """Insert one day's messages into a table with the seed's per-message trigger."""
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with psycopg.connect(floor_url) as conn:
        conn.execute("drop table if exists trig_messages, trig_conversation_metrics cascade")
        conn.execute(TRIGGER_DDL)
        conn.commit()
        began = time.perf_counter()
        rows = conn.execute("insert into trig_messages select * from messages where created_at >= %s "
                            "and created_at < %s", (lo, lo + timedelta(days=1))).rowcount
        conn.commit()
        return time.perf_counter() - began, rows


def pandas_peer(floor_url: str, lo: datetime, hi: datetime) -> tuple[float, int]:
    """pandas computing the three marts' aggregates from the same rows (read with COPY, then groupby)."""
    import pandas as pd

    began = time.perf_counter()
    with psycopg.connect(floor_url) as conn:
        frames = {}
        for table, query in {
            "messages": "select conversation_id, direction, created_at, response_time_ms, outcome, prompt_tokens, "
                        f"completion_tokens from messages where created_at >= '{lo.isoformat()}' "
                        f"and created_at < '{hi.isoformat()}'",
            "conversations": "select id as conversation_id, bot_id, organization_id, customer_phone from conversations",
        }.items():
            buffer = io.BytesIO()
            with conn.cursor().copy(f"copy ({query}) to stdout with (format csv, header)") as copy:
                for chunk in copy:
                    buffer.write(chunk)
            buffer.seek(0)
            frames[table] = pd.read_csv(buffer)
    m = frames["messages"].merge(frames["conversations"], on="conversation_id")
    m["created_at"] = pd.to_datetime(m["created_at"], utc=True, format="ISO8601")
    m["tokens"] = m["prompt_tokens"].fillna(0) + m["completion_tokens"].fillna(0)
    m["inbound"] = m["direction"] == "inbound"
    m["success"] = m["outcome"] == "success"
    rt = m.groupby("conversation_id")["response_time_ms"]
    conv = m.groupby("conversation_id").agg(total=("direction", "size"), inbound=("inbound", "sum"),
                                            avg_rt=("response_time_ms", "mean"), tokens=("tokens", "sum"))
    conv["p50"], conv["p95"], conv["p99"] = rt.quantile(0.5), rt.quantile(0.95), rt.quantile(0.99)
    m["date"] = m["created_at"].dt.date
    bot_rt = m.groupby(["bot_id", "date"])["response_time_ms"]
    bots = m.groupby(["bot_id", "date"]).agg(total=("direction", "size"), active=("conversation_id", "nunique"),
                                             successes=("success", "sum"), with_outcome=("outcome", "count"))
    bots["p50"], bots["p95"], bots["p99"] = bot_rt.quantile(0.5), bot_rt.quantile(0.95), bot_rt.quantile(0.99)
    m["hour"] = m["created_at"].dt.floor("h")
    usage = m.groupby(["organization_id", "hour"]).agg(total=("direction", "size"), received=("inbound", "sum"),
                                                       bots_active=("bot_id", "nunique"))
    usage["active_users"] = m[m["inbound"]].groupby(["organization_id", "hour"])["customer_phone"].nunique()
    assert len(conv) and len(bots) and len(usage)
    return time.perf_counter() - began, len(m)


# -- the warehouse -----------------------------------------------------------------------------------
def run_job(defs, instance, job_name: str, partition_key: str) -> float:
    from dagster_project.automation.runner import QUIET_LOGS

    job = defs.resolve_job_def(job_name)
    began = time.perf_counter()
    result = job.execute_in_process(instance=instance, partition_key=partition_key, run_config=QUIET_LOGS,
                                    raise_on_error=True)
    assert result.success
    return time.perf_counter() - began


FRESH_PROCESS_RUN = """
import sys, time
began = time.perf_counter()
import dagster as dg
from dagster_project.definitions import defs
from dagster_project.automation.runner import QUIET_LOGS
with dg.DagsterInstance.get() as instance:
    result = defs.resolve_job_def(sys.argv[1]).execute_in_process(
        instance=instance, partition_key=sys.argv[2], run_config=QUIET_LOGS)
assert result.success
print(time.perf_counter() - began)
"""


def run_job_fresh_process(job_name: str, partition_key: str) -> float:
    """One partition run in a new Python process, as the daemon's run launcher starts every run:
    the imports, the code location, the dbt parse and the GX context are paid again."""
    import subprocess

    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH_PROCESS_RUN, job_name, partition_key], check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def warehouse_size_mb(url: str) -> float:
    with psycopg.connect(url) as conn:
        return round(conn.execute("select pg_database_size(current_database())").fetchone()[0] / 2**20, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cheap measurement (min/median/max)")
    args = parser.parse_args()
    days, per_day = SCALES[args.scale]
    start = date(2026, 3, 2)
    end = start + timedelta(days=days)
    tag = uuid.uuid4().hex[:6]
    admin = admin_url()
    names = [f"bench_{n}_{tag}" for n in ("src", "wh", "dagster", "floor")]
    results: dict = {"scale": args.scale, "days": days, "conversations_per_day": per_day,
                     "date": datetime.now(UTC).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    home = Path(tempfile.mkdtemp(prefix="botflow-bench-"))

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    with databases(admin, names) as urls:
        src, wh, dag, floor = (urls[n] for n in names)
        os.environ.update({"BOTFLOW_SOURCE_URL": src, "BOTFLOW_WAREHOUSE_URL": wh, "BOTFLOW_DAGSTER_STORAGE_URL": dag,
                           "BOTFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
                           "BOTFLOW_PARTITIONS_START": "2026-01-01", "BOTFLOW_MAX_REJECTED_SHARE": "1",
                           "BOTFLOW_MAX_REPAIRED_SHARE": "1"})
        from dagster_project.core.settings import Settings

        settings = Settings.from_env()
        settings.export()
        settings.prepare_dagster_home()
        import dagster as dg

        from dagster_project.automation.runner import refresh_marts, run_window
        from dagster_project.definitions import defs
        from dagster_project.dev.simulate import simulate

        say(f"simulating {days} days x {per_day} conversations into the source ...")
        with psycopg.connect(src) as conn:
            began = time.perf_counter()
            summary = simulate(conn, "public", start, days, seed=1, conversations_per_day=per_day)
            results["simulate_s"] = round(time.perf_counter() - began, 1)
        results["messages"] = summary.messages
        say(f"{summary.messages:,} messages, {summary.conversations:,} conversations in {results['simulate_s']} s")

        say("floor: COPY into bare tables + one aggregate query per mart ...")
        copies, queries = [], []
        for _ in range(args.repeat):
            copies.append(timed(lambda: copy_source(src, floor)))
            queries.append(floor_queries(floor))
        floor_total = [c + q for c, q in zip(copies, queries, strict=True)]
        results["floor_s"] = spread(floor_total)
        results["floor_queries_s"] = spread(queries)
        say(f"floor {statistics.median(floor_total):.1f} s (queries {statistics.median(queries):.1f} s)")

        progress = lambda line: say("  " + line)  # noqa: E731
        with dg.DagsterInstance.get() as instance:
            say("backfill, first day, through Dagster ...")
            first = timed(lambda: run_window(defs, instance, start, start + timedelta(days=1), progress=progress))
            hour_key = f"{start.isoformat()}-12:00"
            say(f"hourly partition {hour_key} end to end at 1 day of history ...")
            hourly_1 = [run_job(defs, instance, "hourly_partition_job", hour_key) for _ in range(args.repeat)]
            daily_1 = [run_job(defs, instance, "daily_partition_job", start.isoformat()) for _ in range(args.repeat)]
            rest = 0.0
            if days > 1:
                say(f"backfill, the other {days - 1} days ...")
                rest = timed(lambda: run_window(defs, instance, start + timedelta(days=1), end, progress=progress))
            results["backfill_s"] = round(first + rest, 1)
            say(f"backfill {results['backfill_s']} s")
            say(f"hourly partition {hour_key} again at {days} days of history ...")
            hourly_n = [run_job(defs, instance, "hourly_partition_job", hour_key) for _ in range(args.repeat)]
            hourly_fresh = [run_job_fresh_process("hourly_partition_job", hour_key) for _ in range(args.repeat)]
            daily_n = [run_job(defs, instance, "daily_partition_job", start.isoformat()) for _ in range(args.repeat)]
            results.update({"hourly_partition_1d_s": spread(hourly_1), "hourly_partition_nd_s": spread(hourly_n),
                            "hourly_partition_fresh_process_s": spread(hourly_fresh),
                            "daily_partition_1d_s": spread(daily_1), "daily_partition_nd_s": spread(daily_n)})
            say("full recompute of every mart (dbt --full-refresh) ...")
            results["full_recompute_s"] = round(timed(
                lambda: refresh_marts(defs, instance, start, end, progress=progress)), 1)
        results["warehouse_mb"] = warehouse_size_mb(wh)
        results["peak_rss"] = peak_rss_mb()

        say("peers: the seed's per-message trigger for one day; pandas for one day and for the window ...")
        trigger_s, trigger_rows = trigger_peer(floor, start)
        results["trigger_one_day_s"] = round(trigger_s, 1)
        results["trigger_rows"] = trigger_rows
        lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["pandas_one_day_s"] = round(pandas_peer(floor, lo, lo + timedelta(days=1))[0], 1)
        results["pandas_window_s"] = round(pandas_peer(floor, lo, lo + timedelta(days=days))[0], 1)
        results["pandas_peak_rss_mb"] = round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                                  rss_before), 1)

    floor_med = results["floor_s"]["median"]
    per_day_warehouse = results["backfill_s"] / days
    results["ratios"] = {
        "backfill / floor": round(results["backfill_s"] / floor_med, 2),
        "hourly partition at N days / at 1 day": round(
            results["hourly_partition_nd_s"]["median"] / results["hourly_partition_1d_s"]["median"], 2),
        "full recompute / floor queries": round(results["full_recompute_s"] / results["floor_queries_s"]["median"], 2),
        "seed trigger (1 day) / warehouse backfill per day": round(results["trigger_one_day_s"] / per_day_warehouse, 2),
        "pandas (window) / floor": round(results["pandas_window_s"] / floor_med, 2),
    }
    print_table(results)
    out = write_result(f"backfill-{args.scale}", results)
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


def print_table(r: dict) -> None:
    def fmt(v) -> str:
        if isinstance(v, dict) and "median" in v:
            return f"{v['median']:.2f} s (min {v['min']:.2f}, max {v['max']:.2f}, {v['runs']} runs)"
        return f"{v} s" if isinstance(v, float | int) else str(v)

    print(f"\nBotFlow backfill benchmark: {r['scale']} = {r['messages']:,} messages over {r['days']} days "
          f"({r['machine']}, {r['date']})\n")
    rows = [
        ("floor: COPY + one aggregate per mart", r["floor_s"]),
        ("floor: aggregate queries only", r["floor_queries_s"]),
        ("backfill through Dagster (ingest + all marts + checks)", r["backfill_s"]),
        ("hourly partition end to end, 1 day of history", r["hourly_partition_1d_s"]),
        (f"hourly partition end to end, {r['days']} days of history", r["hourly_partition_nd_s"]),
        ("  the same in a new process (as the daemon launches runs)", r["hourly_partition_fresh_process_s"]),
        ("daily partition end to end, 1 day of history", r["daily_partition_1d_s"]),
        (f"daily partition end to end, {r['days']} days of history", r["daily_partition_nd_s"]),
        ("full recompute of all marts (dbt --full-refresh)", r["full_recompute_s"]),
        (f"peer: seed's per-message trigger, one day ({r['trigger_rows']:,} messages)", r["trigger_one_day_s"]),
        ("peer: pandas, one day", r["pandas_one_day_s"]),
        ("peer: pandas, whole window", r["pandas_window_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {fmt(value)}")
    print(f"\n  warehouse on disk: {r['warehouse_mb']} MB; peak RSS: pipeline process "
          f"{r['peak_rss']['pipeline_process_mb']} MB; "
          f"pandas peer {r['pandas_peak_rss_mb']} MB")
    print("\n  ratios (same run):")
    for name, value in r["ratios"].items():
        print(f"    {name:<52} {value}")


if __name__ == "__main__":
    sys.exit(main())
