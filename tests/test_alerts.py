"""Alerts arrive once per incident, by e-mail (a real SMTP server) and webhook (a local HTTP receiver).

The incidents are real: a run that fails in a Dagster instance of its own (PostgreSQL storage), a
blocking check's failed evaluation, a mart left unbuilt past its freshness window, a reconciliation
that found drift, and a bot's metric anomalous in the last 2 days. An alert no channel accepted (the
SMTP server down, the webhook refusing) is sent on a later tick, once.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import psycopg
import pytest
from conftest import ADMIN_URL, RUN_TAG, Inbox, create_database, drop_database, free_port

from dagster_project.automation.alerts import AlertCursor, alerts_sensor, find_incidents
from dagster_project.core.resources import WarehouseDatabase
from dagster_project.core.settings import DAGSTER_YAML, scoped_environment, sqlalchemy_url

PARTITION = "2026-06-01-10:00"


class Receiver(BaseHTTPRequestHandler):
    bodies: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.status == 200:
            Receiver.bodies.append(body)
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def channels(tmp_path) -> Iterator[tuple[Inbox, type[Receiver], int]]:
    from aiosmtpd.controller import Controller

    inbox, smtp_port, http_port = Inbox(), free_port(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    server = HTTPServer(("127.0.0.1", http_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.bodies, Receiver.status = [], 200
    settings = {"BOTFLOW_SMTP_HOST": "127.0.0.1", "BOTFLOW_SMTP_PORT": str(smtp_port),
                "BOTFLOW_SMTP_SECURITY": "none", "BOTFLOW_ALERT_EMAILS": "oncall@botflow.example",
                "BOTFLOW_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{http_port}/hook",
                "BOTFLOW_DAGSTER_URL": "http://dagster.example:3000"}
    with scoped_environment(settings):
        yield inbox, Receiver, smtp_port
    controller.stop()
    server.shutdown()


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of this test's own (PostgreSQL storage): no other test's runs in it."""
    from dagster._core.instance.ref import InstanceRef

    name = f"bf_test_alerts_dagster_{RUN_TAG}"
    url = create_database(name)
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    with scoped_environment({"BOTFLOW_DAGSTER_STORAGE_URL": sqlalchemy_url(url)}):
        inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path)))
    try:
        yield inst
    finally:
        inst.dispose()
        drop_database(name)


def tick(instance: dg.DagsterInstance, cursor: str | None, warehouse_url: str = ADMIN_URL) -> tuple[str, str]:
    """One evaluation of the sensor (a warehouse without marts by default: no anomaly to read)."""
    resources = {"warehouse": WarehouseDatabase(url=warehouse_url)}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = alerts_sensor.evaluate_tick(context)
    return result.skip_message or "", result.cursor


def mails(inbox: Inbox) -> list:
    return [message_from_bytes(m.original_content, policy=policy.default) for m in inbox.messages]


def fail_a_run(instance: dg.DagsterInstance, *, retried_by_the_daemon: bool = False) -> str:
    """An hourly partition run against a source schema that does not exist: it fails, without step retries.
    As `botflow run` runs it, the daemon does not re-execute it; else the instance's run retries apply."""
    from dagster_project.definitions import defs

    tags = {} if retried_by_the_daemon else {"dagster/max_retries": "0"}
    with scoped_environment({"BOTFLOW_SOURCE_URL": ADMIN_URL, "BOTFLOW_WAREHOUSE_URL": ADMIN_URL,
                             "BOTFLOW_SOURCE_SCHEMA": "no_such_schema"}):
        result = defs.resolve_job_def("hourly_partition_job").execute_in_process(
            instance=instance, partition_key=PARTITION, raise_on_error=False, tags=tags)
    assert not result.success
    return result.run_id


def evaluate_check(instance: dg.DagsterInstance, passed: bool, description: str | None = None) -> None:
    """An evaluation of the blocking check gx_raw_quality for PARTITION, recorded as a run would record it."""
    from dagster._core.events import DagsterEvent, DagsterEventType

    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(["raw", "messages"]), check_name="gx_raw_quality", passed=passed, partition=PARTITION,
        description=description, severity=dg.AssetCheckSeverity.ERROR)
    event = DagsterEvent(event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                         job_name="hourly_partition_job", event_specific_data=evaluation)
    instance.report_dagster_event(event, run_id=str(uuid.uuid4()))


def test_each_incident_is_alerted_once_by_mail_and_webhook(instance, channels):
    inbox, receiver, _ = channels
    message, cursor = tick(instance, None)
    assert message == "no new incident"  # the first tick only starts the cursors

    run_id = fail_a_run(instance)
    evaluate_check(instance, False, "message_direction_unknown: 40% of the partition's messages (limit 10%)")
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=["raw", "source_reconciliation"],
        metadata={"range": "[2026-05-02T10:00:00+00:00, 2026-06-01T10:00:00+00:00)", "hours_marked_stale": 3}))
    message, cursor = tick(instance, cursor)
    assert "3 alerts sent, 0 to retry" in message

    subjects = sorted(str(m["Subject"]).strip() for m in mails(inbox))
    assert subjects == [
        f"[BotFlow alert] check failed: raw/messages:gx_raw_quality [{PARTITION}]",
        f"[BotFlow alert] run failed: hourly_partition_job [{PARTITION}]",
        "[BotFlow alert] source drift found by reconciliation [[2026-05-02T10:00:00+00:00, "
        "2026-06-01T10:00:00+00:00)]",
    ]
    run_mail = next(m for m in mails(inbox) if "run failed" in m["Subject"])
    body = run_mail.get_content()
    # the reason, naming the setting, without the exception's class
    assert "step raw_ingestion: source tables missing in schema 'no_such_schema'" in body
    assert "BOTFLOW_SOURCE_SCHEMA" in body
    assert f"http://dagster.example:3000/runs/{run_id}" in body
    assert [m.rcpt_tos for m in inbox.messages] == [["oncall@botflow.example"]] * 3
    texts = sorted(b["text"] for b in receiver.bodies)
    assert len(texts) == 3 and all(t.startswith("BotFlow alert: ") for t in texts)
    assert {b["botflow"]["partition"] for b in receiver.bodies} >= {PARTITION}

    message, cursor = tick(instance, cursor)  # nothing new: nothing sent again
    assert message == "no new incident" and len(inbox.messages) == 3 and len(receiver.bodies) == 3

    # the same check failing again for the same partition is the same incident, until it passes
    evaluate_check(instance, False, "again")
    message, cursor = tick(instance, cursor)
    assert message == "no new incident"
    evaluate_check(instance, True)
    evaluate_check(instance, False, "broken anew")
    message, cursor = tick(instance, cursor)
    assert "1 alerts sent" in message and len(inbox.messages) == 4


def test_an_alert_no_channel_accepted_is_sent_later_once(instance, channels):
    inbox, receiver, smtp_port = channels
    _, cursor = tick(instance, None)
    fail_a_run(instance)
    receiver.status = 503
    with scoped_environment({"BOTFLOW_SMTP_PORT": str(free_port())}):  # nothing listens there
        message, cursor = tick(instance, cursor)
    assert "0 alerts sent, 1 to retry" in message and not inbox.messages and not receiver.bodies
    receiver.status = 200
    message, cursor = tick(instance, cursor)
    assert "1 alerts sent, 0 to retry" in message
    assert len(inbox.messages) == 1 and len(receiver.bodies) == 1
    message, cursor = tick(instance, cursor)
    assert message == "no new incident" and len(inbox.messages) == 1


def test_an_overdue_mart_is_alerted_once_until_it_is_fresh(instance, channels):
    mart = dg.AssetKey(["marts", "usage_analytics"])
    cursor = AlertCursor()
    now = datetime.now(UTC)
    assert find_incidents(instance, cursor, now) == []  # never built: not overdue
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=mart))
    assert find_incidents(instance, cursor, now) == []
    [incident] = find_incidents(instance, cursor, now + timedelta(hours=3))
    assert incident.key == "overdue:marts/usage_analytics" and "3.0 hours ago" in incident.reason
    cursor.open.append(incident.key)  # alerted
    assert find_incidents(instance, cursor, now + timedelta(hours=4)) == []  # still the same incident
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=mart))
    assert find_incidents(instance, cursor, now) == [] and cursor.open == []  # fresh again: closed


def test_a_run_the_daemon_will_retry_is_alerted_only_if_no_retry_comes(instance, channels):
    cursor = AlertCursor()
    now = datetime.now(UTC)
    assert find_incidents(instance, cursor, now) == []
    run_id = fail_a_run(instance, retried_by_the_daemon=True)
    assert instance.get_run_by_id(run_id).tags.get("dagster/will_retry") == "true"
    assert find_incidents(instance, cursor, now) == []  # its retry is the daemon's to launch
    [incident] = find_incidents(instance, cursor, now + timedelta(minutes=11))  # none came
    assert incident.key == f"run:{run_id}" and "no retry was launched" in incident.reason


def test_an_anomaly_of_the_last_two_days_is_alerted_once(instance, channels):
    """marts.metric_anomalies as dbt builds it (its contract's columns), with the bot's name from dim_bots."""
    inbox, receiver, _ = channels
    name = f"bf_test_alerts_wh_{RUN_TAG}"
    url = create_database(name)
    today = datetime.now(UTC).date()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create schema marts")
            conn.execute("create table marts.dim_bots (bot_id uuid, bot_name text)")
            conn.execute("create table marts.metric_anomalies (bot_id uuid, organization_id uuid, date date, "
                         "metric text, value numeric, baseline_median float8, threshold float8, direction text)")
            bot = uuid.uuid4()
            conn.execute("insert into marts.dim_bots values (%s, 'Support bot')", (bot,))
            for day, metric, value in ((today - timedelta(days=1), "p95_response_time_ms", 5000),
                                       (today - timedelta(days=9), "error_rate", 40)):  # history: not alerted
                conn.execute("insert into marts.metric_anomalies values (%s, %s, %s, %s, %s, 1000, 150, 'high')",
                             (bot, uuid.uuid4(), day, metric, value))
            _, cursor = tick(instance, None, url)
            assert len(inbox.messages) == 1
            [mail] = mails(inbox)
            assert str(mail["Subject"]).strip() == (f"[BotFlow alert] anomaly: p95_response_time_ms high for bot "
                                                    f"Support bot [{today - timedelta(days=1)}]")
            assert "p95_response_time_ms = 5000 against a median of 1000" in mail.get_content()
            message, cursor = tick(instance, cursor, url)
            assert message == "no new incident" and len(inbox.messages) == 1  # once
            conn.execute("insert into marts.metric_anomalies values (%s, %s, %s, 'total_messages', 3, 40, 6, 'low')",
                         (bot, uuid.uuid4(), today))
            message, cursor = tick(instance, cursor, url)
            assert "1 alerts sent" in message and len(receiver.bodies) == 2
            assert "total_messages low" in receiver.bodies[-1]["text"]
    finally:
        drop_database(name)
