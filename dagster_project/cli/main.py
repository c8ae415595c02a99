"""`botflow`: demo, simulate, run and ui."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from datetime import UTC, date, datetime, timedelta

from dagster_project.core.settings import ConfigError, Settings, redact, scrub, setting


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botflow", description="BotFlow analytics warehouse")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate 3 days into the source, build everything, print the marts")
    demo.add_argument("--days", type=positive_int, default=3)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--conversations-per-day", type=positive_int, default=400)

    sim = sub.add_parser("simulate", help="write deterministic chat traffic into the source database")
    sim.add_argument("--start", type=parse_date, required=True, help="first UTC day, YYYY-MM-DD")
    sim.add_argument("--days", type=positive_int, required=True)
    sim.add_argument("--seed", type=int, required=True)
    sim.add_argument("--conversations-per-day", type=positive_int, default=400)

    run = sub.add_parser("run", help="materialize every partition of [start, end) through Dagster")
    run.add_argument("--start", type=parse_date, required=True, help="first UTC day, YYYY-MM-DD")
    run.add_argument("--end", type=parse_date, required=True, help="day after the last, YYYY-MM-DD (exclusive)")

    refresh = sub.add_parser("refresh", help="reload the price list and rebuild every mart from all of raw")
    refresh.add_argument("--start", type=parse_date, required=True, help="first UTC day with data, YYYY-MM-DD")
    refresh.add_argument("--end", type=parse_date, required=True, help="day after the last, YYYY-MM-DD")

    export = sub.add_parser("export", help="stream a mart as CSV (no row cap), with filters")
    export.add_argument("kind", choices=["conversations", "bot-performance", "usage"])
    export.add_argument("--start", type=parse_date, required=True, help="first UTC day, YYYY-MM-DD")
    export.add_argument("--end", type=parse_date, required=True, help="day after the last, YYYY-MM-DD")
    export.add_argument("--org", help="organization name or id")
    export.add_argument("--bot", help="bot name or id")
    export.add_argument("--status", help="active, resolved or escalated (conversations)")
    export.add_argument("--search", help="text in the bot name, or the phone's last 4 digits")
    export.add_argument("--output", default="-", help="file to write (default: stdout)")

    report = sub.add_parser("report", help="render the daily or weekly stakeholder report (HTML + PDF) and e-mail it")
    report.add_argument("kind", choices=["daily", "weekly"])
    report.add_argument("--date", type=parse_date, required=True,
                        help="the day (daily: the platform's UTC day, each organization's own day), or any day of "
                        "the ISO week (weekly), YYYY-MM-DD")
    report.add_argument("--no-deliver", action="store_true", help="render only; do not e-mail")

    superset = sub.add_parser("superset", help="run Superset locally and provision the BotFlow dashboards")
    superset_sub = superset.add_subparsers(dest="superset_command", required=True)
    superset_sub.add_parser("up", help="install (once), initialize and start Superset on 127.0.0.1:8088")
    superset_sub.add_parser("down", help="stop the Superset started by `up`")
    superset_sub.add_parser("serve", help="initialize, then run Superset in the foreground (containers)")
    superset_sub.add_parser("sync", help="create the read-only role and import the datasets, charts, dashboards")
    grant = superset_sub.add_parser("grant", help="let a user see one organization's rows on every dashboard")
    grant.add_argument("--org", required=True, help="organization name or id")
    grant.add_argument("--user", required=True, help="Superset username (created if new)")
    grant.epilog = ("A new user's password comes from $BOTFLOW_SUPERSET_USER_PASSWORD, else is asked for "
                    "(never on the command line, where `ps` shows it).")

    spark = sub.add_parser("spark", help="the Spark engine: a standalone cluster, marts built on it (docs/spark.md)")
    spark_sub = spark.add_subparsers(dest="spark_command", required=True)
    spark_sub.add_parser("up", help="start a Spark master and its workers, and the metastore in PostgreSQL")
    spark_sub.add_parser("down", help="stop the Spark master and workers started by `up`")
    spark_build = spark_sub.add_parser(
        "build", help="build the marts of [start, end) on Spark from the loaded raw layer and publish them")
    spark_build.add_argument("--start", type=parse_date, required=True)
    spark_build.add_argument("--end", type=parse_date, required=True, help="exclusive")

    live = sub.add_parser("live", help="trickle messages into the source in real time and watch the live tables")
    live.add_argument("--rate", type=float, default=2.0, help="messages per second (default 2)")
    live.add_argument("--minutes", type=float, default=0, help="stop after this long (default: until Ctrl-C)")

    sub.add_parser("gx-docs", help="render the great-expectations Data Docs of every stored validation")
    ui = sub.add_parser("ui", help="start the Dagster UI (dagster dev) with this environment")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM stops a command as Ctrl-C does: a waiting run stops waiting, a running one is left for
    # the next command to fail and free (dagster_project/automation/healing.py). Ctrl-C is set too: a process
    # started with SIGINT ignored (a background job of a script, whose shell ignores it for its children)
    # keeps it ignored, and Python then raises no KeyboardInterrupt.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (what a hung command is doing) and goes on
    # (on the process's own stderr: a caller may have replaced sys.stderr with a stream that has no file)
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError) as exc:
        print(f"botflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("botflow: interrupted (a run it left unfinished is marked failed, and its pool slots freed, by the "
              "next botflow command)", file=sys.stderr)
        return 130
    except Exception as exc:
        runner = sys.modules.get("dagster_project.automation.runner")  # loaded if a run was started
        if runner is not None and isinstance(exc, runner.RunFailed):  # its step and reason on one line
            print(f"botflow: error: {exc}", file=sys.stderr)
            return 2
        reason = storage_failure(exc)
        if reason is None or setting("BOTFLOW_DETAILS"):
            raise
        print(f"botflow: error: {reason}", file=sys.stderr)
        return 2


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def storage_failure(exc: BaseException) -> str | None:
    """One line for an error that came from losing Dagster's storage database, else None."""
    import sqlalchemy.exc

    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            url = setting("BOTFLOW_DAGSTER_STORAGE_URL")
            text = str(chain.orig if getattr(chain, "orig", None) else chain).strip().splitlines()
            reason = scrub(text[0] if text else type(chain).__name__, url)
            return (f"lost Dagster's storage (BOTFLOW_DAGSTER_STORAGE_URL={redact(url)}): {reason}; run the same "
                    "command again once it is back (the interrupted run is then marked failed and its slots freed; "
                    "BOTFLOW_DETAILS=1 shows the traceback)")
        chain = chain.__cause__ or chain.__context__
    return None


def _settings(demo_start: date | None = None) -> Settings:
    """The settings, published to the environment; `demo_start`: the demo's first day (partitions start)."""
    settings = Settings.from_env()
    if demo_start is not None:  # before export() sets BOTFLOW_PARTITIONS_START
        settings = settings.starting_partitions_at(demo_start)
    settings.export()
    settings.prepare_dagster_home()
    return settings


def cmd_simulate(args) -> int:
    settings = _settings()
    summary = _simulate(settings, args.start, args.days, args.seed, args.conversations_per_day)
    bad = sum(summary.bad_rows.values())
    print(f"simulated {summary.days} days: {summary.conversations} conversations, {summary.messages} messages, "
          f"{summary.api_events} api events, {bad} rows that break the contract")
    return 0


def _simulate(settings: Settings, start: date, days: int, seed: int, per_day: int):
    from dagster_project.core.db import connect
    from dagster_project.dev.simulate import simulate

    with connect(settings.source_url, setting="BOTFLOW_SOURCE_URL") as conn:
        return simulate(conn, settings.source_schema, start, days, seed, per_day, progress=print)


def cmd_run(args) -> int:
    if args.end <= args.start:
        raise ValueError(f"--end {args.end} must be after --start {args.start} (end is exclusive)")
    settings = _settings()
    _check_databases(settings)
    _run(settings, args.start, args.end)
    return 0


def _check_databases(settings: Settings) -> None:
    from dagster_project.core.db import connect

    with connect(settings.source_url, setting="BOTFLOW_SOURCE_URL"):
        pass
    with connect(settings.warehouse_url, setting="BOTFLOW_WAREHOUSE_URL"):
        pass


def _run(settings: Settings, start: date, end: date) -> None:
    """Build the window through Dagster; progress lines here, dbt's and Dagster's logs to a file."""
    import contextlib

    import dagster as dg

    from dagster_project.automation.runner import RunFailed, run_window
    from dagster_project.definitions import defs

    log_dir = settings.botflow_home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    console = sys.stdout
    print(f"building [{start}, {end}) through Dagster (instance: {settings.dagster_home})")
    print(f"dbt and Dagster logs: {log_path}", flush=True)
    with dg.DagsterInstance.get() as instance, log_path.open("w") as log, contextlib.redirect_stdout(log), \
            _quiet_stderr(log):
        try:
            run_window(defs, instance, start, end, progress=lambda line: print(line, file=console, flush=True))
        except RunFailed as exc:
            raise RunFailed(f"{exc} (full log: {log_path})") from exc


def _quiet_stderr(log):
    """Dagster's own error blocks (step failures with their stacks) go to the log file; the command prints
    its one-line reason. BOTFLOW_DETAILS=1 keeps them on the terminal."""
    import contextlib

    return contextlib.nullcontext() if setting("BOTFLOW_DETAILS") else contextlib.redirect_stderr(log)


def cmd_refresh(args) -> int:
    """After editing dbt/seeds/llm_prices.csv: reload it, then recompute every mart (costs of all history)."""
    if args.end <= args.start:
        raise ValueError(f"--end {args.end} must be after --start {args.start} (end is exclusive)")
    settings = _settings()
    _check_databases(settings)
    import dagster as dg

    from dagster_project.automation.runner import reload_prices_and_refresh_marts
    from dagster_project.definitions import defs

    with dg.DagsterInstance.get() as instance:
        reload_prices_and_refresh_marts(defs, instance, args.start, args.end, progress=_progress)
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)


def cmd_export(args) -> int:
    from dagster_project.core.db import connect
    from dagster_project.serve.export import ExportFilters, export_csv

    filters = ExportFilters(args.start, args.end, args.org, args.bot, args.status, args.search)
    filters.validate(args.kind)
    settings = Settings.from_env()
    with connect(settings.warehouse_url, setting="BOTFLOW_WAREHOUSE_URL") as conn:
        if args.output == "-":
            rows = export_csv(conn, args.kind, filters, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "wb") as out:
                rows = export_csv(conn, args.kind, filters, out)
    print(f"exported {rows} rows of {args.kind}" + ("" if args.output == "-" else f" to {args.output}"),
          file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    settings = _settings()
    _check_databases(settings)
    _report(settings, args.kind, args.date, deliver=not args.no_deliver)
    return 0


def _report(settings: Settings, kind: str, day: date, *, deliver: bool) -> None:
    import dagster as dg

    from dagster_project.automation.runner import run_report
    from dagster_project.definitions import defs
    from dagster_project.serve.reports.build import period_folder
    from dagster_project.serve.reports.periods import Period

    period = Period.containing(kind, day)  # type: ignore[arg-type]
    with dg.DagsterInstance.get() as instance:
        run_report(defs, instance, kind, day, deliver=deliver)
        records = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["reports", f"{kind}_report"]), asset_partitions=[period.start.isoformat()]),
            limit=1).records
    folder = period_folder(period)
    materialization = records[0].asset_materialization if records else None
    pending = materialization.metadata.get("pending") if materialization else None
    print(f"reports: {folder}/ (platform.html, platform.pdf, one pair per organization, each on its own days)")
    if pending is not None and pending.value != "none":
        print(f"  pending until their own {kind} period's UTC days are built (the schedule's catch-up renders "
              f"them): {pending.value}")


def cmd_superset(args) -> int:
    import psycopg

    from dagster_project.serve.superset import service
    from dagster_project.serve.superset.api import SupersetError
    from dagster_project.serve.superset.sync import grant, sync

    settings = _settings()
    s = service.SupersetSettings.from_env(settings)
    try:
        if args.superset_command == "up":
            service.up(settings)
            print(f"log in at {s.url} as {s.admin_user} (password: $BOTFLOW_SUPERSET_ADMIN_PASSWORD, "
                  f"else {s.home / 'secrets.json'})")
        elif args.superset_command == "serve":
            service.serve(settings)
        elif args.superset_command == "down":
            print("Superset stopped" if service.stop(s) else "Superset was not running (no pid file)")
        elif args.superset_command == "sync":
            # tenant logins must not reach BotFlow's other databases (the source too, when embedded)
            others = [settings.dagster_storage_url, *([settings.source_url] if settings.embedded else [])]
            try:
                sync(s, settings.warehouse_url, other_databases=others)
            except psycopg.errors.UndefinedTable as exc:
                raise ConfigError(f"the marts are not built yet ({str(exc).splitlines()[0]}): build a day first "
                                  "(botflow run, or the partition jobs in the UI), then sync") from None
            print(f"dashboards: {s.url}/dashboard/bot-performance/, /dashboard/usage/, /dashboard/live/")
        else:
            grant(s, settings.warehouse_url, args.org, args.user, _new_user_password())
    except SupersetError as exc:
        raise ConfigError(str(exc)) from exc
    return 0


def cmd_spark(args) -> int:
    from dagster_project.core.window import Window, utc_midnight
    from dagster_project.transform.spark.build import build_window
    from dagster_project.transform.spark.cluster import SparkCluster

    settings = _settings()
    cluster = SparkCluster.from_env(settings.warehouse_url)
    if args.spark_command == "up":
        cluster.up()
    elif args.spark_command == "down":
        print("Spark stopped" if cluster.down() else "Spark was not running (no pid file)")
    else:
        window = Window(utc_midnight(args.start), utc_midnight(args.end))
        seconds = build_window(settings.warehouse_url, cluster, window, progress=_progress)["seconds"]
        print(f"built {window} on Spark: " + ", ".join(f"{stage} {s:.1f}s" for stage, s in seconds.items()))
    return 0


def _new_user_password() -> str | None:
    """$BOTFLOW_SUPERSET_USER_PASSWORD, else asked for on a terminal; None keeps an existing user's."""
    password = setting("BOTFLOW_SUPERSET_USER_PASSWORD")
    if password or not sys.stdin.isatty():
        return password or None
    import getpass

    return getpass.getpass("password for the user (empty: keep an existing user's): ") or None


def cmd_demo(args) -> int:
    today = datetime.now(UTC).date()
    start = today - timedelta(days=args.days)
    settings = _settings(demo_start=start)
    print(f"source:    {redact(settings.source_url)}")
    print(f"warehouse: {redact(settings.warehouse_url)}")
    _simulate(settings, start, args.days, args.seed, args.conversations_per_day)
    _run(settings, start, today)
    print_marts(settings, start, today)
    _report(settings, "daily", today - timedelta(days=1), deliver=True)
    return 0


def print_marts(settings: Settings, start: date, end: date) -> None:
    from dagster_project.core.db import connect

    with connect(settings.warehouse_url, setting="BOTFLOW_WAREHOUSE_URL") as conn:
        counts = conn.execute(
            "select (select count(*) from marts.conversation_metrics), "
            "(select count(*) from marts.bot_performance_metrics), (select count(*) from marts.usage_analytics), "
            "(select count(*) from marts.fct_bot_replies), (select count(*) from raw.quarantine), "
            "(select count(*) from marts.bot_performance_metrics_local), (select count(*) from marts.metric_anomalies)"
        ).fetchone()
        rows = conn.execute(
            """
            select b.bot_name, sum(p.total_conversations), sum(p.total_messages),
              (select p95_response_time_ms from marts.get_bot_performance_summary(p.bot_id, %s, %s)),
              (select success_rate from marts.get_bot_performance_summary(p.bot_id, %s, %s)),
              sum(p.total_cost_usd)
            from marts.bot_performance_metrics p join staging.stg_botflow__bots b using (bot_id)
            where p.date >= %s and p.date < %s
            group by b.bot_name, p.bot_id order by 2 desc
            """,
            (start, end - timedelta(days=1), start, end - timedelta(days=1), start, end),
        ).fetchall()
    print()
    print(f"marts: {counts[0]} conversation_metrics rows, {counts[1]} bot_performance_metrics rows, "
          f"{counts[2]} usage_analytics rows, {counts[3]} bot replies; {counts[4]} rows in raw.quarantine")
    hint = "" if counts[6] else " (a verdict needs 7 earlier days: `botflow demo --days 10` has some)"
    print(f"       {counts[5]} bot days in each organization's zone (bot_performance_metrics_local); {counts[6]} "
          f"rows in metric_anomalies{hint}")
    print()
    header = f"{'bot':<20} {'conversations':>13} {'messages':>9} {'p95 ms':>7} {'success %':>9} {'cost $':>8}"
    print(header)
    print("-" * len(header))
    for name, convs, msgs, p95, success, cost in rows:
        print(f"{name:<20} {convs:>13} {msgs:>9} {p95 or '-':>7} {success or '-':>9} {cost:>8}")
    print()
    print("next: `botflow ui` opens Dagster at http://127.0.0.1:3000 (asset graph, runs, backfills);")
    print(f"      query the marts with: psql '{redact(settings.warehouse_url)}' -c 'table marts.usage_analytics'")


def cmd_live(args) -> int:
    """The simulator in trickle mode plus the Dagster daemon; prints the live table every 5 s."""
    import threading
    import time

    from dagster_project.cli.daemon import start_daemon, stop_daemon
    from dagster_project.core.db import connect
    from dagster_project.dev.simulate import Trickle

    if args.rate <= 0:
        raise ValueError("--rate must be above 0 messages per second")
    settings = _settings()
    log_path = settings.botflow_home / "logs" / f"daemon-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    stop = threading.Event()

    def trickle() -> None:
        with connect(settings.source_url, setting="BOTFLOW_SOURCE_URL") as conn:
            sim = Trickle(conn, settings.source_schema, seed=int(time.time()))
            while not stop.wait(1.0 / args.rate):
                sim.step()

    daemon = start_daemon(settings, log_path)
    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    print(f"trickling {args.rate} messages/s into the source; Dagster daemon log: {log_path}")
    print("live.organization_metrics every 5 s (Ctrl-C to stop); `botflow ui` shows the runs")
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    try:
        with connect(settings.warehouse_url, setting="BOTFLOW_WAREHOUSE_URL", autocommit=True) as wh:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(5)
                print_live(wh)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        stop_daemon(daemon)
    return 0


def print_live(wh) -> None:
    import psycopg

    try:
        rows = wh.execute(
            "select o.name, m.active_conversations, m.messages_last_hour, m.avg_response_time_ms, m.success_rate, "
            "m.refreshed_at, extract(epoch from now() - m.newest_message_at)::numeric(8,1) "
            "from live.organization_metrics m join raw.organizations o on o.id = m.organization_id order by 1"
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        print("(waiting for the first live run)")
        return
    for name, active, msgs, avg_rt, success, refreshed, age in rows:
        print(f"{refreshed:%H:%M:%S} {name:<16} active={active:<3} msgs/h={msgs:<5} avg_rt={avg_rt or '-':>5}ms "
              f"success={success or '-':>6}% newest message {age}s ago")


def cmd_gx_docs(args) -> int:
    _settings()
    from dagster_project.quality.checks import build_data_docs

    print(f"GX Data Docs: {build_data_docs()}")
    return 0


def cmd_ui(args) -> int:
    settings = _settings()
    from dagster_project.core.settings import REPO_ROOT

    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"), "dev",
        "-w", str(REPO_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port),
    ]
    print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={settings.dagster_home})")
    os.chdir(REPO_ROOT)
    os.execv(command[0], command)
    return 0


COMMANDS = {"demo": cmd_demo, "simulate": cmd_simulate, "run": cmd_run, "refresh": cmd_refresh, "export": cmd_export,
            "report": cmd_report, "superset": cmd_superset, "live": cmd_live, "gx-docs": cmd_gx_docs,
            "ui": cmd_ui, "spark": cmd_spark}

if __name__ == "__main__":
    sys.exit(main())
