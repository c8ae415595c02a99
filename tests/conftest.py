"""Fixtures: real PostgreSQL databases per scenario, and a real Dagster instance on PostgreSQL.

Tests need a PostgreSQL server: BOTFLOW_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
Every scenario creates its own source and warehouse databases and drops them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest

RUN_TAG = uuid.uuid4().hex[:8]
# read when the code location is imported: a failed e-mail delivery is retried after 1 s, not 30 s
os.environ.setdefault("BOTFLOW_DELIVERY_RETRY_SECONDS", "1")


def _admin_url() -> str:
    """BOTFLOW_TEST_PG_URL, else the local server on 127.0.0.1:5432, else an embedded one (pgserver)."""
    if os.environ.get("BOTFLOW_TEST_PG_URL"):
        return os.environ["BOTFLOW_TEST_PG_URL"]
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(local, connect_timeout=3).close()
        return local
    except psycopg.OperationalError:
        import pgserver

        home = Path(__file__).resolve().parent.parent / ".botflow"
        home.mkdir(exist_ok=True)
        return pgserver.get_server(home / "test-pgdata", cleanup_mode=None).get_uri()


ADMIN_URL = _admin_url()

# `make test` runs two pytest-xdist workers, each taking a whole file at a time (--dist loadfile), in the
# collected order: the longest files go first, so that no worker is left alone with one at the end. The
# order of the other files, and of the tests within every file, stays random (--random-order).
LONGEST_FILES = ("test_healing.py", "test_spark_engine.py", "test_idempotency.py", "test_reconciliation.py",
                 "test_superset.py")  # measured 2026-12-06: 573, 527, 258, 236 and 196 s


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller schedules files in this order
        rank = {name: i for i, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the random order stays

# Dagster's partitions are defined at import time: set their start before anything imports them.
os.environ.setdefault("BOTFLOW_PARTITIONS_START", "2026-01-01")
os.environ["BOTFLOW_PHONE_HASH_KEY"] = "test-phone-key"


def database_url(name: str) -> str:
    from dagster_project.core.settings import with_database

    return with_database(ADMIN_URL, name)


def create_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
        conn.execute(f"alter database \"{name}\" set timezone to 'UTC'")
    return database_url(name)


def drop_keys(conn: psycopg.Connection) -> None:
    """A source as production may run it: no primary keys (so no foreign keys either)."""
    for table in ("organizations", "bots", "conversations", "messages", "api_events"):
        conn.execute(f"alter table {table} drop constraint {table}_pkey cascade")


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def dagster_instance(tmp_path_factory) -> Iterator:
    """A Dagster instance whose storage is a PostgreSQL database (as in production)."""
    import dagster as dg

    from dagster_project.core.settings import DAGSTER_YAML, sqlalchemy_url

    name = f"bf_test_dagster_{RUN_TAG}"
    url = create_database(name)
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["BOTFLOW_DAGSTER_STORAGE_URL"] = sqlalchemy_url(url)
    instance = dg.DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()
        drop_database(name)


@dataclass
class Scenario:
    """A source and a warehouse database, published in the environment like `botflow` does."""

    name: str
    source_url: str
    warehouse_url: str

    def source(self) -> psycopg.Connection:
        return psycopg.connect(self.source_url, options="-c timezone=UTC")

    def warehouse(self) -> psycopg.Connection:
        return psycopg.connect(self.warehouse_url, options="-c timezone=UTC")

    def activate(self) -> None:
        from dagster_project.core.settings import dbt_env

        os.environ["BOTFLOW_SOURCE_URL"] = self.source_url
        os.environ["BOTFLOW_WAREHOUSE_URL"] = self.warehouse_url
        os.environ["BOTFLOW_SOURCE_SCHEMA"] = "public"
        os.environ["PGTZ"] = "UTC"
        os.environ.update(dbt_env(self.warehouse_url))


@contextmanager
def module_scenario(name: str, extra_warehouses: int = 0) -> Iterator[list[Scenario]]:
    """Fresh databases for a test module: one source, one warehouse per scenario, all dropped after.

    The first scenario is activated; the others share its source and have warehouses of their own.
    """
    names = [f"bf_test_{name}_src_{RUN_TAG}"] + [
        f"bf_test_{name}_wh{i or ''}_{RUN_TAG}" for i in range(extra_warehouses + 1)]
    for db in names:
        create_database(db)
    scenarios = [Scenario(f"{name}{i}", database_url(names[0]), database_url(wh)) for i, wh in enumerate(names[1:])]
    scenarios[0].activate()
    try:
        yield scenarios
    finally:
        for db in names:
            drop_database(db)


@pytest.fixture
def make_scenario() -> Iterator:
    created: list[str] = []

    def make(name: str, *, warehouse_only_suffix: str = "") -> Scenario:
        src = f"bf_test_{name}_src_{RUN_TAG}"
        wh = f"bf_test_{name}_wh{warehouse_only_suffix}_{RUN_TAG}"
        if src not in created:
            create_database(src)
            created.append(src)
        create_database(wh)
        created.append(wh)
        scenario = Scenario(name, database_url(src), database_url(wh))
        scenario.activate()
        return scenario

    yield make
    for name in created:
        drop_database(name)


def run_job(instance, job_name: str, *, start: str | None = None, end: str | None = None,
            partition_key: str | None = None, asset_selection=None, defs=None, tags: dict | None = None):
    """Run a job of the code location in-process, recorded in the instance; raise on failure."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from dagster_project.automation.runner import QUIET_LOGS

    if defs is None:
        from dagster_project.definitions import defs

    tags = dict(tags or {})
    if start is not None:
        tags |= {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end or start}
    job = defs.resolve_job_def(job_name)
    result = job.execute_in_process(instance=instance, tags=tags, partition_key=partition_key,
                                    asset_selection=asset_selection, run_config=QUIET_LOGS,
                                    raise_on_error=True)
    assert result.success
    return result


def build_window(instance, start: date, end: date) -> None:
    """`botflow run --start --end` through the same code path."""
    from dagster_project.automation.runner import run_window
    from dagster_project.definitions import defs

    run_window(defs, instance, start, end, progress=lambda _line: None)


def fetch_table(url: str, table: str, order_by: str) -> list[dict]:
    with psycopg.connect(url, options="-c timezone=UTC") as conn, conn.cursor(
        row_factory=psycopg.rows.dict_row
    ) as cur:
        cur.execute(f"select * from {table} order by {order_by}")
        return cur.fetchall()


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


REPO = Path(__file__).resolve().parent.parent


def lenient_quality_limits() -> AbstractContextManager[None]:
    """For scenarios with a bad row of every kind among few rows: the share limits of gx_raw_quality
    (tested in test_quality.py) would rightly fail them."""
    from dagster_project.core.settings import scoped_environment

    return scoped_environment({"BOTFLOW_MAX_REJECTED_SHARE": "1", "BOTFLOW_MAX_REPAIRED_SHARE": "1"})


@contextmanager
def simulated_and_built(instance, name: str, start: date, days: int, seed: int,
                        extra_warehouses: int = 0) -> Iterator[list[Scenario]]:
    """Databases of their own (module_scenario) with `days` simulated from `start` (60 conversations a day,
    lenient share limits for the whole block) and the first warehouse built through Dagster up to the day
    after them."""
    from datetime import timedelta

    from dagster_project.dev.simulate import simulate

    with lenient_quality_limits(), module_scenario(name, extra_warehouses) as scenarios:
        with scenarios[0].source() as conn:
            simulate(conn, "public", start, days, seed=seed, conversations_per_day=60)
        build_window(instance, start, start + timedelta(days=days + 1))
        yield scenarios


# change capture, as the daemon would evaluate it and launch what it asks for


def tick(instance, scenario, cursor):
    """One evaluation of change_capture_sensor on a scenario: (its result, the new cursor)."""
    return tick_source(instance, scenario.source_url, cursor, warehouse_url=scenario.warehouse_url)


def tick_source(instance, source_url, cursor, *, warehouse_url=None):
    """One evaluation of the sensor (a warehouse without a raw layer lists no stale hours)."""
    import dagster as dg

    from dagster_project.core.resources import SourceDatabase, WarehouseDatabase
    from dagster_project.definitions import defs

    sensor = defs.resolve_sensor_def("change_capture_sensor")
    source = SourceDatabase(url=source_url, schema_name="public", phone_hash_key="k")
    warehouse = WarehouseDatabase(url=warehouse_url or source_url)
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"source": source, "warehouse": warehouse},
                                 definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    return result, result.cursor


def requested(request) -> tuple[str, str]:
    """The (first, last) partition a request asks for: its range's ends, or its one key twice."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    if request.partition_key:
        return request.partition_key, request.partition_key
    return request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]


def run_request(instance, request) -> None:
    """Run what a sensor's request asks for, in-process, as the daemon would launch it."""
    first, last = requested(request)
    if request.partition_key:
        run_job(instance, request.job_name, partition_key=first)
    else:
        run_job(instance, request.job_name, start=first, end=last)


def settle(instance, scenario, cursor, rounds: int = 8) -> tuple[str, list]:
    """Tick change capture and run what it requests until it requests nothing; the cursor and the requests."""
    done = []
    for _ in range(rounds):
        result, cursor = tick(instance, scenario, cursor)
        if not result.run_requests:
            return cursor, done
        for request in result.run_requests:
            run_request(instance, request)
            done.append(request)
    raise AssertionError(f"change capture still requests runs after {rounds} rounds")


# e-mail: a real SMTP server (aiosmtpd) on loopback
class Inbox:
    """An aiosmtpd handler that refuses the first `refuse` messages (a transient 451), keeps the rest."""

    def __init__(self, refuse: int = 0):
        self.refuse = refuse
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 mailbox busy, try again later"
        self.messages.append(envelope)
        return "250 OK"


# the Spark engine (docs/spark.md): one standalone cluster (a master and two workers, separate processes) per
# test session, started on first use, with its metastore in a database of its own


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory) -> Iterator:
    """The cluster BOTFLOW_ENGINE=spark runs on, for the rest of the session (its settings stay in the
    environment: they concern only the Spark engine)."""
    from dagster_project.core.settings import scoped_environment
    from dagster_project.transform.spark.cluster import SparkCluster
    from dagster_project.transform.spark.session import stop_session

    metastore = create_database(f"bf_test_metastore_{RUN_TAG}")
    with scoped_environment({"BOTFLOW_SPARK_DIR": str(tmp_path_factory.mktemp("spark")),
                             "BOTFLOW_SPARK_MASTER_PORT": str(free_port()), "BOTFLOW_SPARK_METASTORE_URL": metastore}):
        cluster = SparkCluster.from_env(metastore)
        try:
            cluster.up(progress=lambda _line: None)
            yield cluster
        finally:
            stop_session()
            cluster.down()
            drop_database(f"bf_test_metastore_{RUN_TAG}")


def engine_environment(engine: str) -> AbstractContextManager[None]:
    """BOTFLOW_ENGINE for a block: where the runs it starts compute the partitioned marts."""
    from dagster_project.core.settings import scoped_environment

    return scoped_environment({"BOTFLOW_ENGINE": engine})
