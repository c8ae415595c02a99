"""Runs that heal, with real processes (issue #14): `botflow run` killed at each step, overlapping runs, a
warehouse gone read-only, and a PostgreSQL restart and a longer outage on a cluster this test starts.

Each fault ends in success or a one-line failure, and the next `botflow run`, with nobody touching the
Dagster instance, fails what the dead process left STARTED, frees its pool slots and builds marts
equal to the pandas oracle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest
from conftest import ADMIN_URL, RUN_TAG, free_port
from processes import (
    WINDOW,
    Process,
    Stack,
    a_backend_waits_on,
    assert_marts_are_exact,
    drop_stack,
    make_stack,
    warnings_of_our_code,
)


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    made = make_stack(tmp_path, "heal")
    yield made
    drop_stack(made)


def wait_for_a_claimed_slot(stack: Stack, job_name: str, timeout: float = 120) -> str:
    """Poll until a STARTED run of `job_name` holds a pool slot; that run's id."""
    deadline = time.monotonic() + timeout
    with stack.instance() as instance:
        storage = instance.event_log_storage
        while time.monotonic() < deadline:
            runs = {run.run_id for run in stack.unfinished_runs() if run.job_name == job_name}
            for pool in storage.get_concurrency_keys():
                holders = {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}
                if runs & holders:
                    return (runs & holders).pop()
            time.sleep(0.02)
    raise AssertionError(f"no {job_name} run held a pool slot within {timeout}s")


def slots_held_by(stack: Stack, run_id: str) -> list[str]:
    with stack.instance() as instance:
        storage = instance.event_log_storage
        return [pool for pool in storage.get_concurrency_keys()
                if run_id in {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}]


def test_a_run_killed_at_each_step_heals_on_the_next_run(stack):
    """`botflow run` killed inside each of its three steps in turn, while the step holds its pool's one slot:
    each next run fails what the dead one left STARTED and frees its slot (else every later run of that pool
    would wait forever), and the last one builds marts equal to the oracle."""
    dead = None
    for step, job_name in (("[1/3]", "dbt_views_job"), ("[2/3]", "hourly_partition_job"),
                           ("[3/3]", "daily_partition_job")):
        killed = Process(stack.env, "run", *WINDOW)
        killed.wait_for(f"{step} ")
        if dead is not None:  # this run got past the previous dead run's step: it healed it first
            assert f"run {dead.run_id[:8]} ({dead.job_name}) was left unfinished by a process that died" \
                in killed.output, killed.output
        holder = wait_for_a_claimed_slot(stack, job_name)
        killed.kill()  # inside a step that holds its pool's one slot
        left = stack.unfinished_runs()
        assert [run.run_id for run in left] == [holder], step
        assert slots_held_by(stack, holder), step  # what used to block every later run of its pool, forever
        dead = left[0]

    rerun = Process(stack.env, "run", *WINDOW)
    assert rerun.finish(timeout=300) == 0, rerun.output
    assert f"run {dead.run_id[:8]} ({dead.job_name}) was left unfinished by a process that died" in rerun.output
    assert stack.unfinished_runs() == []
    with stack.instance() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert_marts_are_exact(stack)


def test_overlapping_runs_both_succeed(stack):
    first = Process(stack.env, "run", *WINDOW)
    second = Process(stack.env, "run", *WINDOW)
    assert first.finish() == 0, first.output
    assert second.finish() == 0, second.output
    assert_marts_are_exact(stack)


@contextmanager
def pool_held_by_a_live_process(stack: Stack, pool: str = "botflow_raw") -> Iterator[str]:
    """A run of this (live) test process holding `pool`'s one slot, as another `botflow run` would."""
    from dagster_project.core.run_process import process_tags

    with stack.instance() as instance:
        run = instance.create_run_for_job(defs_job("hourly_partition_job"), tags=process_tags())
        instance.report_dagster_event(dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value,
                                                      job_name=run.job_name), run.run_id)
        instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
        assert instance.event_log_storage.claim_concurrency_slot(pool, run.run_id, "raw_ingestion").is_claimed
        try:
            yield run.run_id
        finally:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            instance.report_run_failed(run, "the test's holder is done")


def defs_job(name: str) -> dg.JobDefinition:
    from dagster_project.definitions import defs

    return defs.resolve_job_def(name)


def test_a_run_waits_for_a_held_pool_visibly_without_spinning_and_stops_on_ctrl_c(stack):
    with pool_held_by_a_live_process(stack) as holder:
        # started with SIGINT ignored, as a script's background job (and CI under `nohup ... &`) is: Ctrl-C
        # still stops it (the command sets its own handler; Python keeps an inherited SIG_IGN otherwise)
        waiter = Process(stack.env, "run", *WINDOW, sigint_ignored=True)
        waiter.wait_for("waiting", timeout=120)
        assert f"held by run {holder[:8]} hourly_partition_job" in waiter.output, waiter.output
        cpu = psutil.Process(waiter.proc.pid)
        before = sum(cpu.cpu_times()[:2])
        time.sleep(5)
        assert sum(cpu.cpu_times()[:2]) - before < 1.0  # asleep between looks, not a busy loop
        began = time.monotonic()
        os.killpg(waiter.proc.pid, signal.SIGINT)
        assert waiter.finish(timeout=30) == 130
        assert time.monotonic() - began < 10
        assert "botflow: interrupted" in waiter.output
        stopped = Process(stack.env, "run", *WINDOW)  # SIGTERM stops it the same way
        stopped.wait_for("waiting", timeout=120)
        os.killpg(stopped.proc.pid, signal.SIGTERM)
        assert stopped.finish(timeout=30) == 130 and "botflow: interrupted" in stopped.output
        # waiting again, then the holder lets go: the run goes on and succeeds
        again = Process(stack.env, "run", *WINDOW)
        again.wait_for("waiting", timeout=120)
    assert again.finish() == 0, again.output
    assert_marts_are_exact(stack)


def test_a_read_only_warehouse_fails_in_one_line_then_the_next_run_succeeds(stack):
    db = stack.warehouse_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'alter database "{db}" set default_transaction_read_only = on')
    failed = Process(stack.env, "run", *WINDOW)
    assert failed.finish() == 2
    errors = [line for line in failed.lines if line.startswith("botflow: error:")]
    assert len(errors) == 1 and "read-only transaction" in errors[0], failed.output
    # the reason, not Dagster's error blocks and stacks (they are in the log file)
    assert "Traceback" not in failed.output and "Stack Trace" not in failed.output, failed.output
    assert not [line for line in failed.lines if " - dagster - ERROR - " in line], failed.output
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'alter database "{db}" reset default_transaction_read_only')
    again = Process(stack.env, "run", *WINDOW)
    assert again.finish() == 0, again.output
    assert_marts_are_exact(stack)


# -- a PostgreSQL cluster of this test's own, to restart and stop ---------------------------------
PG_BIN = Path("/usr/lib/postgresql") / (sorted(os.listdir("/usr/lib/postgresql"))[-1]
                                         if os.path.isdir("/usr/lib/postgresql") else "15") / "bin"


def as_postgres(*command: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)


@pytest.fixture
def private_cluster(tmp_path) -> Iterator[tuple[str, Path, str]]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    data = Path(f"/tmp/botflow-test-pg-{RUN_TAG}")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(data / "log"), "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data, options
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"] if os.geteuid() == 0 else
                       [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def pg_ctl(data: Path, *args: str) -> None:
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", *args)


def test_a_postgresql_restart_mid_run_is_retried_and_a_long_outage_heals(private_cluster, tmp_path):
    server, data, options = private_cluster
    stack = make_stack(tmp_path, "pgout", server_url=server)
    try:
        # a restart: the steps' retries (10 s, then 20 s) and Dagster's storage reconnect
        run = Process(stack.env, "run", *WINDOW)
        run.wait_for("[2/3] ")
        time.sleep(1)
        pg_ctl(data, "-m", "fast", "-l", str(data / "log"), "restart")
        assert run.finish() == 0, run.output
        assert_marts_are_exact(stack)

        # an outage longer than the retries: a one-line failure, then the next run heals
        run = Process(stack.env, "run", *WINDOW)
        run.wait_for("[2/3] ")
        pg_ctl(data, "-m", "fast", "stop")
        code = run.finish(timeout=240)
        assert code != 0
        errors = [line for line in run.lines if line.startswith("botflow: error:")]
        assert len(errors) == 1, run.output
        assert "Traceback" not in run.output, run.output
        pg_ctl(data, "-o", options, "-l", str(data / "log"), "start")
        again = Process(stack.env, "run", *WINDOW)
        assert again.finish() == 0, again.output
        assert stack.unfinished_runs() == []
        assert_marts_are_exact(stack)
    finally:
        drop_stack(stack, server_url=server)


def test_a_daemon_run_whose_worker_is_killed_is_failed_freed_and_retried(stack):
    """The daemon launches a run (change capture found a late message); its worker is SIGKILLed while it
    holds a pool slot. dead_runs_sensor fails it and frees the slot, and the daemon's run retries build
    the partition: the marts equal the oracle with nobody touching anything."""
    import sys

    from processes import REPO_ROOT
    from test_reconciliation import sensor_has_ticked

    from dagster_project.core.run_process import PID_TAG

    built = Process(stack.env, "run", *WINDOW)
    assert built.finish() == 0, built.output
    daemon = Process(stack.env, "run", "-w", str(REPO_ROOT / "workspace.yaml"),
                     command=[str(Path(sys.executable).with_name("dagster-daemon"))], cwd=str(REPO_ROOT))
    try:
        with stack.instance() as instance:
            deadline = time.monotonic() + 180
            while not sensor_has_ticked(instance, "change_capture_sensor"):
                assert time.monotonic() < deadline, "change_capture_sensor never ticked:\n" + daemon.output
                time.sleep(2)
        # the run's ingestion step waits on raw.messages while it holds its pool slot, until it is killed
        # (else a short step can end, and free its slot, before the kill)
        with stack.warehouse() as blocker:
            blocker.execute("lock table raw.messages in share mode")
            with stack.source() as conn:  # a late message: change capture launches an hourly run for its hour
                conn.execute("insert into messages (id, conversation_id, direction, created_at, updated_at) "
                             "select gen_random_uuid(), id, 'inbound', started_at + interval '1 minute', now() "
                             "from conversations where started_at::date = '2026-06-01' order by id limit 1")
            victim = wait_for_a_claimed_slot(stack, "hourly_partition_job", timeout=240)
            with stack.instance() as instance:
                deadline = time.monotonic() + 120
                while PID_TAG not in (run := instance.get_run_by_id(victim)).tags or not a_backend_waits_on(
                        blocker, "raw.messages"):
                    assert time.monotonic() < deadline, (
                        f"the daemon's run never waited on raw.messages (tags {run.tags})\n" + daemon.output[-3000:])
                    time.sleep(0.2)
            os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
            assert slots_held_by(stack, victim)
        deadline = time.monotonic() + 300
        with stack.instance() as instance:
            while True:
                status = instance.get_run_by_id(victim).status
                retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": victim}))
                assert time.monotonic() < deadline, (
                    f"not healed in 5 minutes: the run is {status.value}, its retries "
                    f"{[r.status.value for r in retries]}\n" + daemon.output[-3000:])
                if status == dg.DagsterRunStatus.FAILURE and any(
                        r.status == dg.DagsterRunStatus.SUCCESS for r in retries):
                    break
                time.sleep(3)
        assert not slots_held_by(stack, victim)
        deadline, last = time.monotonic() + 240, "no comparison yet"  # then change capture's daily run
        while True:
            assert time.monotonic() < deadline, f"the marts did not converge: {last}"
            time.sleep(5)
            if stack.unfinished_runs():
                continue
            try:
                assert_marts_are_exact(stack)
                break
            except AssertionError as exc:
                last = str(exc)[:1000]
        assert warnings_of_our_code(daemon.output) == []
    finally:
        os.killpg(daemon.proc.pid, signal.SIGTERM)
        daemon.finish(timeout=60)
        Path(os.environ.get("BOTFLOW_TEST_DAEMON_LOG", "/dev/null")).write_text(daemon.output)

