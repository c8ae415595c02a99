"""Real `botflow` and `dagster-daemon` processes on a stack of their own: a source with a simulated day, a
warehouse and a Dagster storage, and the environment the commands run with."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import oracle
import psycopg
from conftest import ADMIN_URL, RUN_TAG, create_database, drop_database
from marts_contract import assert_equal_to_oracle, mart_rows

from dagster_project.core.settings import DAGSTER_YAML, scoped_environment, sqlalchemy_url, with_database
from dagster_project.dev.simulate import simulate

BOTFLOW = str(Path(sys.executable).with_name("botflow"))
REPO_ROOT = Path(__file__).resolve().parent.parent
DAY = date(2026, 6, 1)
WINDOW = ["--start", "2026-06-01", "--end", "2026-06-02"]
MARTS = ("marts.conversation_metrics", "marts.bot_performance_metrics", "marts.usage_analytics",
         "marts.response_time_histogram", "marts.metric_anomalies", "marts.bot_performance_metrics_local")


def a_backend_waits_on(conn: psycopg.Connection, table: str) -> bool:
    """Whether a session of `conn`'s database waits for a lock on `table` (held by a test, to keep a run inside
    its step until the test acts on it)."""
    return conn.execute("select 1 from pg_locks l join pg_database d on d.oid = l.database and d.datname = "
                        "current_database() where relation = %s::regclass and not granted", (table,)).fetchone() \
        is not None


@dataclass
class Stack:
    """A source, a warehouse and a Dagster storage, and the environment `botflow` runs with."""

    source_url: str
    warehouse_url: str
    storage_url: str
    env: dict[str, str]

    def source(self) -> psycopg.Connection:
        return psycopg.connect(self.source_url, options="-c timezone=UTC")

    def warehouse(self) -> psycopg.Connection:
        return psycopg.connect(self.warehouse_url, options="-c timezone=UTC")

    def instance(self) -> dg.DagsterInstance:
        from dagster._core.instance.ref import InstanceRef

        with scoped_environment({"BOTFLOW_DAGSTER_STORAGE_URL": sqlalchemy_url(self.storage_url)}):
            return dg.DagsterInstance.from_ref(InstanceRef.from_dir(self.env["DAGSTER_HOME"]))

    def unfinished_runs(self) -> list[dg.DagsterRun]:
        with self.instance() as instance:
            return list(instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])))


class Process:
    """`botflow` (or another command) in a process group of its own; its output read line by line."""

    def __init__(self, env: dict[str, str], *args: str, command: list[str] | None = None, cwd: str | None = None,
                 sigint_ignored: bool = False):
        """`sigint_ignored`: started as a script's background job is, with SIGINT ignored (inherited)."""
        self.proc = subprocess.Popen([*(command or [BOTFLOW]), *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=cwd,
                                     preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                                     if sigint_ignored else None)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {needle!r} after {timeout}s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"exited before {needle!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.kill()
            raise AssertionError(f"still running after {timeout}s:\n" + self.output) from None
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def dump_stacks(self) -> None:
        """Ask a hung `botflow` for every thread's stack (faulthandler on SIGUSR1), into its output."""
        try:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(2)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    @property
    def output(self) -> str:
        """Everything printed so far."""
        try:
            while (line := self._queue.get_nowait()) is not None:
                self.lines.append(line)
            self._queue.put(None)  # keep the end for finish()
        except queue.Empty:
            pass
        return "\n".join(self.lines)


def make_stack(tmp_path: Path, name: str, server_url: str = ADMIN_URL, days: int = 1) -> Stack:
    """Fresh databases (the warehouse and storage on `server_url`), simulated days, an environment."""
    source = create_database(f"bf_test_{name}_src_{RUN_TAG}")
    warehouse, storage = (with_database(server_url, f"bf_test_{name}_{part}_{RUN_TAG}") for part in ("wh", "dg"))
    with psycopg.connect(server_url, autocommit=True) as conn:
        for url in (warehouse, storage):
            db = url.rsplit("/", 1)[1]
            conn.execute(f'drop database if exists "{db}" with (force)')
            conn.execute(f'create database "{db}"')
            conn.execute(f"alter database \"{db}\" set timezone to 'UTC'")
    with psycopg.connect(source) as conn:
        simulate(conn, "public", DAY, days, seed=5, conversations_per_day=40)
    home = tmp_path / name
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BOTFLOW_", "DAGSTER_"))}
    # the storage URL as `botflow` exports it for Dagster's processes (dagster.yaml reads it): psycopg2 named
    env |= {"BOTFLOW_SOURCE_URL": source, "BOTFLOW_WAREHOUSE_URL": warehouse,
            "BOTFLOW_DAGSTER_STORAGE_URL": sqlalchemy_url(storage), "BOTFLOW_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster_home"),
            "BOTFLOW_PARTITIONS_START": "2026-01-01", "BOTFLOW_PHONE_HASH_KEY": os.environ["BOTFLOW_PHONE_HASH_KEY"],
            "BOTFLOW_MAX_REJECTED_SHARE": "1", "BOTFLOW_MAX_REPAIRED_SHARE": "1"}
    return Stack(source, warehouse, storage, env)


def drop_stack(stack: Stack, server_url: str = ADMIN_URL) -> None:
    drop_database(stack.source_url.rsplit("/", 1)[1])
    with psycopg.connect(server_url, autocommit=True) as conn:
        for url in (stack.warehouse_url, stack.storage_url):
            conn.execute(f'drop database if exists "{url.rsplit("/", 1)[1]}" with (force)')


def assert_marts_are_exact(stack: Stack, days: int = 1) -> None:
    """Every mart row of the first `days` days equals the pandas oracle over the source as it is now."""
    src = oracle.read_source(stack.source_url)
    valid = oracle.validate(src, datetime.now(UTC))
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    window = oracle.Window(start, start + timedelta(days=days))
    expected = {"marts.conversation_metrics": oracle.conversation_metrics(valid, window),
                "marts.bot_performance_metrics": oracle.bot_performance_metrics(valid, window),
                "marts.usage_analytics": oracle.usage_analytics(valid, window, oracle.phone_map(src)),
                "marts.response_time_histogram": oracle.response_time_histogram(valid, window),
                "marts.metric_anomalies": oracle.metric_anomalies(oracle.bot_performance_metrics(valid, window)),
                "marts.bot_performance_metrics_local": oracle.bot_performance_metrics_local(valid, window)}
    for table in MARTS:
        assert_equal_to_oracle(table, mart_rows(stack.warehouse_url, table), expected[table])


# Python prints a warning as `file:line: Category: message`. Ours: raised from our files, or one of
# Dagster's API warnings (preview, beta, superseded), which our use of Dagster's API triggers even where
# Dagster attributes them to its own files.
OUR_WARNING = re.compile(r"dagster_project/\S+\.py:\d+: \w*Warning|: (Preview|Beta|Supersession)Warning: ")


def warnings_of_our_code(output: str) -> list[str]:
    """The warnings a process printed that come from our code or our use of Dagster's API."""
    return [line for line in output.splitlines() if OUR_WARNING.search(line)]
