"""Report periods: a UTC day (daily report) or an ISO week starting Monday (weekly report)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from dagster_project.core.window import Window

ReportKind = Literal["daily", "weekly"]
LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


@dataclass(frozen=True)
class Period:
    kind: ReportKind
    start: date

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

    @property
    def end(self) -> date:
        """The day after the period (exclusive)."""
        return self.start + LENGTH[self.kind]

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(LENGTH[self.kind].days)]

    @property
    def previous(self) -> Period:
        return Period(self.kind, self.start - LENGTH[self.kind])

    @property
    def window(self) -> Window:
        return Window.days(self.start, self.end)

    @property
    def slug(self) -> str:
        """Stable folder name: 2026-11-24, or 2026-W48 for a week."""
        if self.kind == "daily":
            return self.start.isoformat()
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def label(self) -> str:
        if self.kind == "daily":
            return f"{self.start:%A %d %B %Y}"
        last = self.end - timedelta(days=1)
        return f"week {self.slug} ({self.start:%d %b} to {last:%d %b %Y})"

    @property
    def bucket(self) -> Literal["hour", "day"]:
        """The chart resolution: hours for a day, days for a week."""
        return "hour" if self.kind == "daily" else "day"


