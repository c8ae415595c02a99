"""Change capture: rebuild exactly the partitions whose source rows changed, old ones too.

The cursor is the source's own high-water mark, never the Dagster host's clock: the largest
`updated_at` read so far (capped at the source database's `now()`, so one row stamped by a clock
running ahead cannot hide the rows after it), and the rows seen near it. Each tick reads the rows
with `updated_at` above the mark minus an overlap (`BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES`, default
10) for rows committed late with an older `updated_at`; rows already seen in the overlap are
remembered (id and updated_at, hashed) in the cursor, so the same change is never requested twice.
Rows stamped further behind the mark than the overlap are reconciliation's to find.

For the changed rows it requests:
  - the hourly partitions (ingestion + fct_bot_replies + usage_analytics) of each changed message's
    created_at hour, and of each changed conversation's started_at, ended_at and handoff_at hours;
  - then, once those hourly runs have finished, the daily partitions (conversation_metrics,
    bot_performance_metrics) of the same days and of the started_at day of each changed message's
    conversation (a late message changes its conversation's row, whatever day it started).
Partitions are coalesced into range runs, one per partitions definition, split only where changed
partitions lie more than RANGE_GAP apart (rebuilding the partitions in between would cost more than
another run's start). Each request carries its reason in the `botflow/reason` tag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from psycopg import sql

from dagster_project.automation.jobs import daily_job, hourly_job
from dagster_project.core.partitions import daily_partitions, hourly_partitions
from dagster_project.core.policies import ACTIVE_RUN_STATUSES
from dagster_project.core.resources import SourceDatabase, WarehouseDatabase
from dagster_project.core.settings import setting_number
from dagster_project.core.window import partition_key, range_run_tags, utc_midnight
from dagster_project.ingest.high_water import source_high_water

OVERLAP_SETTING = "BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES"
# changed partitions closer than this share one range run (the ones in between are rebuilt too: an
# hour of 10M-scale data costs ~1 s to rebuild in a range, a run's start ~15 s); farther: another run
RANGE_GAP = {hourly_job.name: timedelta(hours=12), daily_job.name: timedelta(days=2)}
TRIGGER_TAG = "botflow/trigger"
REASON_TAG = "botflow/reason"

CHANGED_MESSAGES = """
select m.id::text, m.updated_at, date_trunc('hour', m.created_at, 'UTC'),
  (c.started_at at time zone 'UTC')::date
from {s}.messages m left join {s}.conversations c on c.id = m.conversation_id
where m.updated_at > %(since)s and m.created_at is not null
"""
CHANGED_CONVERSATIONS = """
select id::text, updated_at, date_trunc('hour', started_at, 'UTC'), date_trunc('hour', ended_at, 'UTC'),
  date_trunc('hour', handoff_at, 'UTC')
from {s}.conversations
where updated_at > %(since)s
"""


def overlap() -> timedelta:
    """How far behind the high-water mark a late commit is still read (BOTFLOW_CHANGE_CAPTURE_OVERLAP_MINUTES)."""
    return timedelta(minutes=setting_number(OVERLAP_SETTING, positive=True))


@dataclass
class Cursor:
    high_water: datetime | None = None  # the source's largest updated_at read (capped at the source's now())
    seen: dict[str, str] = field(default_factory=dict)  # row hash -> updated_at, inside the overlap
    pending_days: dict[str, str] = field(default_factory=dict)  # daily partition -> reason
    stale_requested: list[str] = field(default_factory=list)  # raw.stale_hours entries already requested

    @classmethod
    def load(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        raw = json.loads(text)
        mark = raw.get("high_water") or raw.get("until")  # "until": the host-clock cursor of before
        return cls(datetime.fromisoformat(mark) if mark else None, raw.get("seen", {}),
                   raw.get("pending_days", {}), raw.get("stale_requested", []))

    def dump(self) -> str:
        return json.dumps({"high_water": self.high_water.isoformat() if self.high_water else None,
                           "seen": self.seen, "pending_days": self.pending_days,
                           "stale_requested": self.stale_requested}, sort_keys=True)


@dataclass
class Changes:
    hours: dict[datetime, list[str]] = field(default_factory=dict)  # hour -> reasons
    days: dict[date, list[str]] = field(default_factory=dict)
    high_water: datetime | None = None  # the new mark
    seen: dict[str, str] = field(default_factory=dict)  # the rows read inside the new mark's overlap

    def add_hour(self, hour: datetime | None, reason: str) -> None:
        if hour is not None:
            self.hours.setdefault(hour, []).append(reason)
            self.days.setdefault(hour.date(), []).append(reason)

    def add_day(self, day: date | None, reason: str) -> None:
        if day is not None:
            self.days.setdefault(day, []).append(reason)


def _row_key(table: str, row_id: str, updated_at: datetime) -> str:
    return hashlib.sha1(f"{table}:{row_id}:{updated_at.isoformat()}".encode()).hexdigest()[:16]


def _summary(reasons: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def find_changes(source: SourceDatabase, cursor: Cursor, window: timedelta | None = None) -> Changes:
    """The partitions touched by rows changed since the cursor's mark (minus the overlap), the new mark,
    and the rows read inside its overlap."""
    window = window or overlap()
    params = {"since": cursor.high_water - window}
    changes = Changes()
    read: list[tuple[str, datetime]] = []
    s = sql.Identifier(source.schema_name)
    with source.connect() as conn:
        source_now = conn.execute("select now()").fetchone()[0]
        for row_id, updated, hour, conv_day in conn.execute(sql.SQL(CHANGED_MESSAGES).format(s=s), params):
            key = _row_key("messages", row_id, updated)
            read.append((key, updated))
            if key in cursor.seen:
                continue
            changes.add_hour(hour, "message changed")
            changes.add_day(conv_day, "message of a conversation started that day")
        for row_id, updated, started, ended, handoff in conn.execute(
                sql.SQL(CHANGED_CONVERSATIONS).format(s=s), params):
            key = _row_key("conversations", row_id, updated)
            read.append((key, updated))
            if key in cursor.seen:
                continue
            for hour in {started, ended, handoff} - {None}:
                changes.add_hour(hour, "conversation changed")
    # the mark never passes the source's own now(): a row stamped ahead of it is read again each tick
    # (and skipped as seen) instead of hiding the rows stamped after it
    newest = max((updated for _, updated in read), default=cursor.high_water)
    changes.high_water = max(cursor.high_water, min(newest, source_now))
    changes.seen = {key: updated.isoformat() for key, updated in read if updated > changes.high_water - window}
    return changes


STALE_HOURS = "select hour, reason, found_at from raw.stale_hours order by hour"


def add_stale_hours(warehouse: WarehouseDatabase, cursor: Cursor, changes: Changes) -> list[str]:
    """Add the hours raw.stale_hours lists (a load or reconciliation found them out of date) that were not
    requested yet; returns the entries now listed, so that each is requested once."""
    listed = []
    with warehouse.connect() as conn:
        if conn.execute("select to_regclass('raw.stale_hours')").fetchone()[0] is None:
            return []  # nothing loaded yet
        for hour, reason, found_at in conn.execute(STALE_HOURS):
            entry = f"{hour.isoformat()}|{reason}|{found_at.isoformat()}"
            listed.append(entry)
            if entry not in cursor.stale_requested:
                changes.add_hour(hour, reason.split(" (")[0])
    return listed


def _valid_hour(hour: datetime, now: datetime) -> bool:
    return hourly_partitions.start <= hour and hour + timedelta(hours=1) <= now


def _valid_day(day: date, now: datetime) -> bool:
    start = utc_midnight(day)
    return daily_partitions.start <= start and start + timedelta(days=1) <= now


def coalesce(starts: Iterable[datetime], gap: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted partition starts grouped into (first, last) ranges; a range ends where the next start is
    more than `gap` after the previous one."""
    ranges: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if ranges and start - ranges[-1][1] <= gap:
            ranges[-1] = (ranges[-1][0], start)
        else:
            ranges.append((start, start))
    return ranges


def range_requests(job: dg.JobDefinition, partitions_def: dg.TimeWindowPartitionsDefinition,
                   reasons: dict[datetime, str | list[str]], mark: datetime) -> list[dg.RunRequest]:
    """One run request per coalesced range of `reasons`' partitions (a single partition: its key)."""
    requests = []
    for first, last in coalesce(reasons, RANGE_GAP[job.name]):
        lo, hi = partition_key(partitions_def, first), partition_key(partitions_def, last)
        why = [r for start, rs in reasons.items() if first <= start <= last
               for r in ([rs] if isinstance(rs, str) else rs)]
        tags = {TRIGGER_TAG: "change_capture", REASON_TAG: _summary(why)[:200]}
        if lo == hi:
            requests.append(dg.RunRequest(job_name=job.name, partition_key=lo, tags=tags,
                                          run_key=f"cc:{lo}:{mark.isoformat()}"))
        else:
            tags |= range_run_tags(lo, hi)
            requests.append(dg.RunRequest(job_name=job.name, tags=tags, run_key=f"cc:{lo}...{hi}:{mark.isoformat()}"))
    return requests


@dg.sensor(
    name="change_capture_sensor",
    jobs=[hourly_job, daily_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the source by updated_at from its own high-water mark and rebuilds exactly the hourly and "
    "daily partitions whose rows changed (late messages, CSAT given later, status changes), old partitions too, "
    "and the hours raw.stale_hours lists (found by loads and by reconciliation), as one range run per partitions "
    "definition.",
)
def change_capture_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase,
                          warehouse: WarehouseDatabase):
    now = datetime.now(UTC)
    cursor = Cursor.load(context.cursor)
    if cursor.high_water is None:  # first tick: start from the source's newest change
        high_water = source_high_water(source)
        mark, source_now = high_water.capped, high_water.now
        mark = mark or source_now
        # what the overlap holds at the mark counts as handled: it was there before change capture began
        start = find_changes(source, Cursor(high_water=mark))
        context.update_cursor(Cursor(high_water=start.high_water, seen=start.seen).dump())
        return dg.SkipReason(f"change capture starts from the source's newest change ({mark.isoformat()}); "
                             "history is the schedules' and backfills' job")
    changes = find_changes(source, cursor)
    stale = add_stale_hours(warehouse, cursor, changes)
    # the current hour is not a partition yet: its schedule will build it
    hours = {hour: reasons for hour, reasons in changes.hours.items() if _valid_hour(hour, now)}
    requests = range_requests(hourly_job, hourly_partitions, hours, changes.high_water)
    pending = dict(cursor.pending_days)
    for day, reasons in changes.days.items():
        if _valid_day(day, now):
            pending[day.isoformat()] = _summary(reasons)[:200]
    hourly_in_flight = bool(requests) or bool(context.instance.get_runs(
        filters=dg.RunsFilter(job_name=hourly_job.name, statuses=ACTIVE_RUN_STATUSES,
                              tags={TRIGGER_TAG: "change_capture"}), limit=1))
    if not hourly_in_flight:  # the daily marts read the raw hours: build them once those are loaded
        days = {utc_midnight(date.fromisoformat(day)): reason for day, reason in pending.items()}
        requests += range_requests(daily_job, daily_partitions, days, changes.high_water)
        pending = {}
    context.update_cursor(Cursor(high_water=changes.high_water, seen=changes.seen, pending_days=pending,
                                 stale_requested=stale).dump())
    if not requests:
        waiting = f"; {len(pending)} daily partitions wait for hourly runs" if pending else ""
        return dg.SkipReason(f"no source change since {cursor.high_water.isoformat()} (the source's high-water "
                             f"mark){waiting}")
    return requests
