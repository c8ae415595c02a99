"""Change capture: rebuild exactly the partitions whose source rows changed, old ones too.

A sensor reads the source by `updated_at` (index scans) since its cursor, minus an overlap window
for rows committed late with an older `updated_at`. Rows already seen inside the overlap are
remembered (id and updated_at, hashed) in the cursor, so the same change is never requested twice.

For the changed rows it requests:
  - the hourly partitions (ingestion + fct_bot_replies + usage_analytics) of each changed message's
    created_at hour, and of each changed conversation's started_at, ended_at and handoff_at hours;
  - then, once those hourly runs have finished, the daily partitions (conversation_metrics,
    bot_performance_metrics) of the same days and of the started_at day of each changed message's
    conversation (a late message changes its conversation's row, whatever day it started).
Requests are coalesced per partition and carry their reason in the `botflow/reason` tag.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from psycopg import sql

from .jobs import daily_job, hourly_job
from .partitions import daily_partitions, hourly_partitions
from .policies import ACTIVE_RUN_STATUSES
from .resources import SourceDatabase

OVERLAP = timedelta(minutes=10)
TRIGGER_TAG = "botflow/trigger"
REASON_TAG = "botflow/reason"

CHANGED_MESSAGES = """
select m.id::text, m.updated_at, date_trunc('hour', m.created_at, 'UTC'),
  (c.started_at at time zone 'UTC')::date
from {s}.messages m left join {s}.conversations c on c.id = m.conversation_id
where m.updated_at > %(since)s and m.updated_at <= %(until)s and m.created_at is not null
"""
CHANGED_CONVERSATIONS = """
select id::text, updated_at, date_trunc('hour', started_at, 'UTC'), date_trunc('hour', ended_at, 'UTC'),
  date_trunc('hour', handoff_at, 'UTC')
from {s}.conversations
where updated_at > %(since)s and updated_at <= %(until)s
"""


@dataclass
class Cursor:
    until: datetime | None = None  # changes up to here have been handled
    seen: dict[str, str] = field(default_factory=dict)  # row hash -> updated_at, inside the overlap
    pending_days: dict[str, str] = field(default_factory=dict)  # daily partition -> reason

    @classmethod
    def load(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(datetime.fromisoformat(raw["until"]), raw.get("seen", {}), raw.get("pending_days", {}))

    def dump(self) -> str:
        return json.dumps({"until": self.until.isoformat() if self.until else None, "seen": self.seen,
                           "pending_days": self.pending_days}, sort_keys=True)


@dataclass
class Changes:
    hours: dict[datetime, list[str]] = field(default_factory=dict)  # hour -> reasons
    days: dict[date, list[str]] = field(default_factory=dict)

    def add_hour(self, hour: datetime | None, reason: str) -> None:
        if hour is not None:
            self.hours.setdefault(hour, []).append(reason)
            self.days.setdefault(hour.date(), []).append(reason)

    def add_day(self, day: date | None, reason: str) -> None:
        if day is not None:
            self.days.setdefault(day, []).append(reason)


def _row_key(table: str, row_id: str, updated_at: datetime) -> str:
    return hashlib.sha1(f"{table}:{row_id}:{updated_at.isoformat()}".encode()).hexdigest()[:16]


def _summary(reasons: list[str]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def find_changes(source: SourceDatabase, cursor: Cursor, now: datetime) -> tuple[Changes, dict[str, str]]:
    """The partitions touched by rows changed since the cursor, and the rows seen in the overlap."""
    since = cursor.until - OVERLAP
    params = {"since": since, "until": now}
    changes = Changes()
    seen: dict[str, str] = {}
    s = sql.Identifier(source.schema_name)
    with source.connect() as conn:
        for row_id, updated, hour, conv_day in conn.execute(sql.SQL(CHANGED_MESSAGES).format(s=s), params):
            key = _row_key("messages", row_id, updated)
            if updated > now - OVERLAP:
                seen[key] = updated.isoformat()
            if key in cursor.seen:
                continue
            changes.add_hour(hour, "message changed")
            changes.add_day(conv_day, "message of a conversation started that day")
        for row_id, updated, started, ended, handoff in conn.execute(
                sql.SQL(CHANGED_CONVERSATIONS).format(s=s), params):
            key = _row_key("conversations", row_id, updated)
            if updated > now - OVERLAP:
                seen[key] = updated.isoformat()
            if key in cursor.seen:
                continue
            for hour in {started, ended, handoff} - {None}:
                changes.add_hour(hour, "conversation changed")
    return changes, seen


def _valid_hour(hour: datetime, now: datetime) -> bool:
    return hourly_partitions.start <= hour and hour + timedelta(hours=1) <= now


def _valid_day(day: date, now: datetime) -> bool:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return daily_partitions.start <= start and start + timedelta(days=1) <= now


@dg.sensor(
    name="change_capture_sensor",
    jobs=[hourly_job, daily_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the source by updated_at and rebuilds exactly the hourly and daily partitions whose "
    "rows changed (late messages, CSAT given later, status changes), old partitions too.",
)
def change_capture_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase):
    now = datetime.now(UTC)
    cursor = Cursor.load(context.cursor)
    if cursor.until is None:  # first tick: start from now; history is the schedules' and backfills' job
        context.update_cursor(Cursor(until=now).dump())
        return dg.SkipReason("change capture starts from now")
    changes, seen = find_changes(source, cursor, now)
    requests = []
    for hour, reasons in sorted(changes.hours.items()):
        if _valid_hour(hour, now):  # the current hour is not a partition yet: its schedule will build it
            key = hour.strftime("%Y-%m-%d-%H:%M")
            requests.append(dg.RunRequest(
                job_name=hourly_job.name, partition_key=key, run_key=f"cc:{key}:{now.isoformat()}",
                tags={TRIGGER_TAG: "change_capture", REASON_TAG: _summary(reasons)[:200]}))
    pending = dict(cursor.pending_days)
    for day, reasons in changes.days.items():
        if _valid_day(day, now):
            pending[day.isoformat()] = _summary(reasons)[:200]
    hourly_in_flight = bool(requests) or bool(context.instance.get_runs(
        filters=dg.RunsFilter(job_name=hourly_job.name, statuses=ACTIVE_RUN_STATUSES,
                              tags={TRIGGER_TAG: "change_capture"}), limit=1))
    if not hourly_in_flight:  # the daily marts read the raw hours: build them once those are loaded
        for day, reason in sorted(pending.items()):
            requests.append(dg.RunRequest(
                job_name=daily_job.name, partition_key=day, run_key=f"cc:{day}:{now.isoformat()}",
                tags={TRIGGER_TAG: "change_capture", REASON_TAG: reason}))
        pending = {}
    context.update_cursor(Cursor(until=now, seen=seen, pending_days=pending).dump())
    if not requests:
        waiting = f"; {len(pending)} daily partitions wait for hourly runs" if pending else ""
        return dg.SkipReason(f"no source change since {cursor.until.isoformat()}{waiting}")
    return requests
