"""Alerts: an e-mail and an optional Slack-compatible webhook, once per incident.

`alerts_sensor` (every 60 s) opens an incident, and alerts once, when:
  - a run fails after its retries                     key run:<run id>
    (a run the daemon will re-execute is alerted only if no retry is launched within 10 minutes)
  - a blocking check fails for a partition            key check:<asset>:<check>:<partition>
    (closed by a later pass of the same check and partition; failing again then is a new incident)
  - a mart is overdue: an hourly mart not materialized for 2 hours, a daily mart without yesterday's
    partition at 03:00 UTC (the marts' freshness policies)       key overdue:<mart> (closed when fresh)
  - reconciliation marks hours stale (source drift)   key drift:<materialization>
  - a bot's metric is anomalous on one of the last 2 UTC dates (marts.metric_anomalies: a sudden slowdown,
    more errors or fallbacks, a drop or surge of traffic)   key anomaly:<bot>:<date>:<metric>
    (older dates are history, e.g. a backfill: not alerted)
Each alert is one line (what, the partition, the rule or step) and a link to the run in the UI.

Settings: BOTFLOW_ALERT_EMAILS (comma-separated; default: the `platform` recipients of the reports'
recipients file), sent over the reports' SMTP settings (BOTFLOW_SMTP_*); BOTFLOW_ALERT_WEBHOOK_URL
(optional, receives `{"text": ..., "botflow": {...}}`); BOTFLOW_DAGSTER_URL for links (default
http://127.0.0.1:3000). An alert no channel accepted is tried again on the next tick; with no channel
configured, incidents are only written to the sensor's log.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, WILL_RETRY_TAG

from dagster_project.automation.runner import error_reason
from dagster_project.core.resources import WarehouseDatabase
from dagster_project.core.settings import setting
from dagster_project.quality.checks import GX_CHECKS
from dagster_project.serve.reports.delivery import DeliveryError, Recipients, SmtpSettings
from dagster_project.transform.freshness import DAILY_MARTS, HOURLY_MARTS

HOURLY_OVERDUE = timedelta(hours=2)
RETRY_GRACE = timedelta(minutes=10)  # a failed run marked for retry and not retried by then is alerted
DAILY_DEADLINE = time(3, 0)  # yesterday's daily partition is due by 03:00 UTC
RECONCILIATION = dg.AssetKey(["raw", "source_reconciliation"])
ANOMALY_HORIZON = timedelta(days=2)  # anomalies dated in the last 2 UTC dates are news; older ones are history
LASTING = ("check:", "overdue:")  # incidents that stay open until the check passes or the mart is fresh


@dataclass(frozen=True)
class Incident:
    key: str
    title: str  # one line: what happened, where
    partition: str | None
    reason: str  # the rule, step or check, and why
    link: str

    def text(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{self.title}{where}: {self.reason} ({self.link})"


@dataclass
class AlertCursor:
    runs_after: float | None = None  # run records updated after this timestamp are not seen yet
    check_ids: dict[str, int] = field(default_factory=dict)  # check -> the largest execution id seen
    drift_after: int | None = None  # reconciliation materializations after this storage id
    retrying: dict[str, float] = field(default_factory=dict)  # failed runs the daemon will retry -> failed at
    anomalies: list[str] = field(default_factory=list)  # anomaly incidents seen, within ANOMALY_HORIZON
    open: list[str] = field(default_factory=list)  # incidents alerted and not closed
    pending: list[dict] = field(default_factory=list)  # incidents no channel accepted yet

    @classmethod
    def load(cls, text: str | None) -> AlertCursor:
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def dagster_url() -> str:
    return setting("BOTFLOW_DAGSTER_URL").rstrip("/")


def _partition_of(tags: dict[str, str]) -> str | None:
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    if "dagster/asset_partition_range_start" in tags:
        return f"{tags['dagster/asset_partition_range_start']}...{tags['dagster/asset_partition_range_end']}"
    return None


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first step failure's message (its cause if it has one), else the run's failure message."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        error = record.event_log_entry.dagster_event.step_failure_data.error
        if error is not None:
            return f"step {record.event_log_entry.step_key}: {error_reason(error)[:300]}"
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records:
        return (record.event_log_entry.message or "the run failed").splitlines()[0][:300]
    return "the run failed"


def failed_runs(instance: dg.DagsterInstance, cursor: AlertCursor, now: datetime) -> list[Incident]:
    if cursor.runs_after is None:  # first tick: failures from before alerting began are not news
        cursor.runs_after = now.timestamp()
        return []
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                              updated_after=datetime.fromtimestamp(cursor.runs_after, UTC)),
        limit=100, order_by="update_timestamp", ascending=True)
    incidents = []
    for record in records:
        run = record.dagster_run
        cursor.runs_after = max(cursor.runs_after, record.update_timestamp.timestamp())
        if run.tags.get(WILL_RETRY_TAG) == "true":  # the daemon re-executes it: wait for the retry
            cursor.retrying[run.run_id] = record.update_timestamp.timestamp()
        else:
            incidents.append(_run_incident(instance, run))
    for run_id, failed_at in list(cursor.retrying.items()):
        if instance.get_runs(filters=dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run_id}), limit=1):
            del cursor.retrying[run_id]  # retried: the retry's failure, if it fails, is the incident
        elif now.timestamp() - failed_at > RETRY_GRACE.total_seconds():
            del cursor.retrying[run_id]
            run = instance.get_run_by_id(run_id)
            if run is not None:
                incidents.append(_run_incident(instance, run, "; no retry was launched: is the daemon running?"))
    return incidents


def _run_incident(instance: dg.DagsterInstance, run: dg.DagsterRun, note: str = "") -> Incident:
    return Incident(f"run:{run.run_id}", f"run failed: {run.job_name}", _partition_of(run.tags),
                    _failure_reason(instance, run.run_id) + note, f"{dagster_url()}/runs/{run.run_id}")


def blocking_checks() -> list[dg.AssetCheckKey]:
    return [spec.key for checks_def in GX_CHECKS for spec in checks_def.check_specs if spec.blocking]


def failed_checks(instance: dg.DagsterInstance, cursor: AlertCursor, keys: Iterable[dg.AssetCheckKey]
                  ) -> tuple[list[Incident], set[str]]:
    """The (check, partition) pairs whose newest evaluation since the cursor failed, and the incidents to
    close: those whose check passed since (a failure after that pass is a new incident)."""
    storage = instance.event_log_storage
    incidents, closed = [], set()
    for key in keys:
        name = key.to_user_string()
        history = storage.get_asset_check_execution_history(key, limit=500)
        if name not in cursor.check_ids:  # first look at this check: evaluations from before are not news
            cursor.check_ids[name] = max((r.id for r in history), default=0)
            continue
        newest: dict[str | None, object] = {}
        for record in sorted((r for r in history if r.id > cursor.check_ids[name]), key=lambda r: r.id):
            cursor.check_ids[name] = record.id
            if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
                closed.add(f"check:{name}:{record.partition or ''}")
            if record.status in (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED):
                newest[record.partition] = record
        for partition, record in newest.items():
            if record.status != AssetCheckExecutionRecordStatus.FAILED:
                continue
            evaluation = record.event.asset_check_evaluation if record.event else None
            why = evaluation.description if evaluation and evaluation.description else "the check failed"
            link = (f"{dagster_url()}/runs/{record.run_id}" if record.run_id
                    else f"{dagster_url()}/assets/{key.asset_key.to_user_string()}")
            incidents.append(Incident(f"check:{name}:{partition or ''}", f"check failed: {name}", partition,
                                      why.splitlines()[0][:300], link))
    return incidents, closed


def overdue_marts(instance: dg.DagsterInstance, now: datetime) -> tuple[list[Incident], set[str]]:
    """The marts overdue now, and the overdue incidents of marts that are fresh again."""
    incidents, fresh = [], set()
    for key in HOURLY_MARTS:
        event = instance.get_latest_materialization_event(key)
        incident_key = f"overdue:{key.to_user_string()}"
        if event is None:
            continue  # never built: nothing is overdue yet
        age = now - datetime.fromtimestamp(event.timestamp, UTC)
        if age > HOURLY_OVERDUE:
            incidents.append(Incident(incident_key, f"mart overdue: {key.to_user_string()}", None,
                                      f"last materialized {age.total_seconds() / 3600:.1f} hours ago (due every 2 "
                                      "hours: is the daemon running? see the hourly_at_05 schedule)",
                                      f"{dagster_url()}/assets/{key.to_user_string()}"))
        else:
            fresh.add(incident_key)
    yesterday = (now - timedelta(days=1)).date().isoformat()
    for key in DAILY_MARTS:
        incident_key = f"overdue:{key.to_user_string()}"
        if instance.get_latest_materialization_event(key) is None:
            continue
        if now.time() >= DAILY_DEADLINE and yesterday not in instance.get_materialized_partitions(key):
            incidents.append(Incident(incident_key, f"mart overdue: {key.to_user_string()}", yesterday,
                                      "yesterday's partition is not built at 03:00 UTC (see the daily_at_0100 "
                                      "schedule)", f"{dagster_url()}/assets/{key.to_user_string()}"))
        else:
            fresh.add(incident_key)
    return incidents, fresh


def source_drift(instance: dg.DagsterInstance, cursor: AlertCursor) -> list[Incident]:
    records = instance.fetch_materializations(RECONCILIATION, limit=20, ascending=False).records
    if cursor.drift_after is None:
        cursor.drift_after = records[0].storage_id if records else 0
        return []
    incidents = []
    for record in sorted((r for r in records if r.storage_id > cursor.drift_after), key=lambda r: r.storage_id):
        cursor.drift_after = record.storage_id
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        stale = metadata.get("hours_marked_stale")
        if stale is not None and stale.value:
            incidents.append(Incident(
                f"drift:{record.storage_id}", "source drift found by reconciliation", metadata["range"].value,
                f"{stale.value} hours differ from the source (deleted or late rows); change capture rebuilds them",
                f"{dagster_url()}/runs/{record.run_id}"))
    return incidents


ANOMALIES = """
select a.bot_id, coalesce(b.bot_name, a.bot_id::text), a.date, a.metric, a.value, a.baseline_median, a.threshold,
  a.direction
from marts.metric_anomalies a left join marts.dim_bots b using (bot_id)
where a.date >= %s order by a.date, a.bot_id, a.metric
"""


def new_anomalies(warehouse: WarehouseDatabase | None, cursor: AlertCursor, now: datetime) -> list[Incident]:
    """The rows of marts.metric_anomalies dated within ANOMALY_HORIZON not seen before (each alerted once)."""
    if warehouse is None:
        return []
    since = (now - ANOMALY_HORIZON).date()
    with warehouse.connect() as conn:
        if conn.execute("select to_regclass('marts.metric_anomalies')").fetchone()[0] is None:
            return []  # not built yet
        rows = conn.execute(ANOMALIES, (since,)).fetchall()
    cursor.anomalies = [key for key in cursor.anomalies if date.fromisoformat(key.split(":")[2]) >= since]
    incidents = []
    for bot_id, bot_name, day, metric, value, median, threshold, direction in rows:
        key = f"anomaly:{bot_id}:{day.isoformat()}:{metric}"
        if key in cursor.anomalies:
            continue
        cursor.anomalies.append(key)
        incidents.append(Incident(
            key, f"anomaly: {metric} {direction} for bot {bot_name}", day.isoformat(),
            f"{metric} = {value:g} against a median of {median:g} over the bot's 14 dates before (an anomaly "
            f"beyond {median:g} ± {threshold:g}; docs/service-metrics.md)",
            f"{dagster_url()}/assets/marts/metric_anomalies"))
    return incidents


def find_incidents(instance: dg.DagsterInstance, cursor: AlertCursor, now: datetime,
                   warehouse: WarehouseDatabase | None = None) -> list[Incident]:
    """The incidents to alert now (new ones, and those no channel accepted before); updates the cursor."""
    checks, closed = failed_checks(instance, cursor, blocking_checks())
    overdue, fresh = overdue_marts(instance, now)
    candidates = [*failed_runs(instance, cursor, now), *checks, *overdue, *source_drift(instance, cursor),
                  *new_anomalies(warehouse, cursor, now)]
    cursor.open = [key for key in cursor.open if key not in closed | fresh]
    pending = [Incident(**p) for p in cursor.pending]
    known = set(cursor.open) | {p.key for p in pending}
    new = []
    for incident in candidates:
        if incident.key not in known:
            known.add(incident.key)
            new.append(incident)
    return pending + new


def alert_emails() -> list[str]:
    text = setting("BOTFLOW_ALERT_EMAILS")
    if text.strip():
        return [address.strip() for address in text.split(",") if address.strip()]
    return Recipients.load().platform


def send(incidents: list[Incident]) -> list[str]:
    """Send every incident to every configured channel; the keys of those no channel accepted."""
    smtp, emails, webhook = SmtpSettings.from_env(), alert_emails(), setting("BOTFLOW_ALERT_WEBHOOK_URL")
    failed = []
    for incident in incidents:
        delivered, errors = False, []
        if smtp and emails:
            message = EmailMessage()
            message["Subject"] = f"[BotFlow alert] {incident.title}" + (
                f" [{incident.partition}]" if incident.partition else "")
            message["From"], message["To"] = smtp.sender, ", ".join(emails)
            message.set_content(f"{incident.text()}\n\nIncident: {incident.key}\n")
            try:
                smtp.send(message)
                delivered = True
            except DeliveryError as exc:
                errors.append(str(exc))
        if webhook:
            body = json.dumps({"text": f"BotFlow alert: {incident.text()}", "botflow": incident.__dict__}).encode()
            request = urllib.request.Request(webhook, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    delivered = delivered or 200 <= response.status < 300
            except OSError as exc:
                errors.append(f"webhook BOTFLOW_ALERT_WEBHOOK_URL failed: {exc}")
        if not (smtp and emails) and not webhook:
            delivered = True  # no channel: the sensor's log is the record
        if not delivered:
            failed.append(incident.key)
        for error in errors:
            print(f"alert {incident.key}: {error}")
    return failed


@dg.sensor(
    name="alerts_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails (BOTFLOW_ALERT_EMAILS over BOTFLOW_SMTP_*) and posts to BOTFLOW_ALERT_WEBHOOK_URL once per "
    "incident: a failed run, a failed blocking check, an overdue mart, source drift found by reconciliation, a "
    "bot's metric anomalous in the last 2 days (marts.metric_anomalies).",
)
def alerts_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseDatabase):
    cursor = AlertCursor.load(context.cursor)
    incidents = find_incidents(context.instance, cursor, datetime.now(UTC), warehouse)
    failed = set(send(incidents)) if incidents else set()
    for incident in incidents:
        context.log.warning(f"alert: {incident.text()}" + (" (not delivered; retried next tick)"
                                                             if incident.key in failed else ""))
    cursor.pending = [i.__dict__ for i in incidents if i.key in failed]
    # runs and drift are events, seen once by the cursor; checks and overdue marts stay open until they clear
    lasting = {i.key for i in incidents if i.key not in failed and i.key.startswith(LASTING)}
    cursor.open = sorted(set(cursor.open) | lasting)
    context.update_cursor(cursor.dump())
    if not incidents:
        return dg.SkipReason("no new incident")
    return dg.SkipReason(f"{len(incidents) - len(failed)} alerts sent, {len(failed)} to retry: "
                         + "; ".join(i.text() for i in incidents)[:1000])
