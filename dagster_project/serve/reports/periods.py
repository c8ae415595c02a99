"""Report periods: a day (daily report) or an ISO week starting Monday (weekly report), in a zone.

The platform's reports are in UTC; an organization's are in its own zone (organizations.timezone,
repaired to UTC when unknown): its daily report of 2026-11-10 covers the instants whose date in its
zone is 2026-11-10, [2026-11-10 00:00 in the zone, 2026-11-11 00:00 in the zone), 23, 24 or 25 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dagster_project.core.window import Window

ReportKind = Literal["daily", "weekly"]
LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
HOUR = timedelta(hours=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to(instant: datetime, unit: timedelta) -> datetime:
    """The start of the UTC hour (unit HOUR) or day that holds `instant`."""
    return instant - (instant - EPOCH) % unit


def ceil_to(instant: datetime, unit: timedelta) -> datetime:
    """The first start of a UTC hour or day at or after `instant`."""
    return instant + (EPOCH - instant) % unit


def local_midnight(day: date, zone: str) -> datetime:
    """The instant `day` starts in `zone`, in UTC (a midnight skipped by a clock change: the instant of the change)."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass(frozen=True)
class Period:
    kind: ReportKind
    start: date
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if self.kind not in LENGTH:
            raise ValueError(f"report kind {self.kind!r}: choose daily or weekly")
        if self.kind == "weekly" and self.start.isoweekday() != 1:
            raise ValueError(f"a weekly report starts on a Monday, {self.start} is a {self.start:%A}")

    @classmethod
    def from_partition_key(cls, kind: ReportKind, key: str) -> Period:
        """Daily and weekly partition keys are the period's first day, YYYY-MM-DD."""
        return cls(kind, date.fromisoformat(key[:10]))

    @classmethod
    def containing(cls, kind: ReportKind, day: date) -> Period:
        """The day itself (daily), or the ISO week (Monday to Sunday) that holds it (weekly)."""
        return cls(kind, day if kind == "daily" else day - timedelta(days=day.isoweekday() - 1))

    def in_zone(self, zone: str) -> Period:
        """The same dates in another zone."""
        return Period(self.kind, self.start, zone)

    @property
    def end(self) -> date:
        """The day after the period (exclusive)."""
        return self.start + LENGTH[self.kind]

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(LENGTH[self.kind].days)]

    @property
    def previous(self) -> Period:
        return Period(self.kind, self.start - LENGTH[self.kind], self.zone)

    @property
    def window(self) -> Window:
        """The period's instants: [first midnight, end midnight) in its zone."""
        return Window(local_midnight(self.start, self.zone), local_midnight(self.end, self.zone))

    def covering(self, unit: timedelta) -> Window:
        """The UTC hours (unit HOUR) or days that hold the period's instants: the partitions it reads."""
        return Window(floor_to(self.window.start, unit), ceil_to(self.window.end, unit))

    @property
    def readable_after(self) -> datetime:
        """When the last UTC day the period touches has ended: its daily marts can be built from then on."""
        return self.covering(timedelta(days=1)).end

    @property
    def slug(self) -> str:
        """Stable folder name: 2026-11-24, or 2026-W48 for a week."""
        if self.kind == "daily":
            return self.start.isoformat()
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def label(self) -> str:
        zone = "" if self.zone == "UTC" else f" ({self.zone} time)"
        if self.kind == "daily":
            return f"{self.start:%A %d %B %Y}{zone}"
        last = self.end - timedelta(days=1)
        return f"week {self.slug} ({self.start:%d %b} to {last:%d %b %Y}){zone}"

    @property
    def bucket(self) -> Literal["hour", "day"]:
        """The chart resolution: hours for a day, days for a week."""
        return "hour" if self.kind == "daily" else "day"

    @property
    def off_the_hour(self) -> bool:
        """The zone's offset is not a whole number of hours (+05:30) somewhere in the period: UTC hours do not
        tile its local hours or days, so the chart's buckets leave out the ends (`buckets`)."""
        zone = ZoneInfo(self.zone)
        return any(start.astimezone(zone).utcoffset().seconds % 3600 for start, _ in self.buckets)

    @property
    def buckets(self) -> list[tuple[datetime, datetime]]:
        """The chart's buckets [start, end): the period's local days (weekly), or the UTC hours that lie wholly
        inside it (daily). The warehouse keeps message counts by UTC hour, so in a zone whose offset is not a whole
        number of hours (+05:30) a day's hours start at :30 local time and the two half hours at its ends are left
        out of the chart (never out of the KPIs)."""
        if self.bucket == "day":
            return [(local_midnight(d, self.zone), local_midnight(d + timedelta(days=1), self.zone)) for d in self.days]
        hour = ceil_to(self.window.start, HOUR)
        out = []
        while hour + HOUR <= self.window.end:
            out.append((hour, hour + HOUR))
            hour += HOUR
        return out
