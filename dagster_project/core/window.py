"""UTC day boundaries: every partition, window and report period of the warehouse is in UTC."""

from datetime import UTC, date, datetime


def utc_midnight(day: date) -> datetime:
    """The instant `day` starts, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
