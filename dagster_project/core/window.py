"""The time window: the one form in which a partition, or a range of partitions, travels.

Every partition and window of the warehouse is in UTC (an organization's report period is its local
days, as instants: serve/reports/periods.py). A `Window` is the half-open
interval [start, end) that Dagster hands a step (`Window.of(context)`), and each consumer reads it
from here: the loader (`start`, `end`), dbt (`dbt_env()`: the variables macros/window.sql reads),
great-expectations (`sql_literals()`), the runner and change capture (`partition_keys()`,
`range_tags()`, `partition_key()`, `range_run_tags()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

# what dbt reads (macros/window.sql); unset, a dbt run covers all of history
DBT_WINDOW_ENV = ("BOTFLOW_WINDOW_START", "BOTFLOW_WINDOW_END")


def utc_midnight(day: date) -> datetime:
    """The instant `day` starts, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partition_key(partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime) -> str:
    """The key of the partition of `partitions_def` that starts at `start`."""
    return partitions_def.get_partition_key_for_timestamp(start.timestamp())


def range_run_tags(first_key: str, last_key: str) -> dict[str, str]:
    """The tags of one run over the partitions first_key..last_key (as a UI backfill launches it)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first_key, ASSET_PARTITION_RANGE_END_TAG: last_key}


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC; both bounds time-zone aware, start before end."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            bound = getattr(self, name)
            if bound.tzinfo is None:
                raise ValueError(f"window {name} {bound.isoformat()} has no time zone (the warehouse is in UTC)")
            object.__setattr__(self, name, bound.astimezone(UTC))
        if self.end <= self.start:
            raise ValueError(f"empty window {self}")

    @classmethod
    def of(cls, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Window:
        """The window of a step's partition, or of its partition range."""
        window = context.partition_time_window
        return cls(window.start, window.end)

    @classmethod
    def days(cls, first: date, end: date) -> Window:
        """Whole UTC days: from the start of `first` to the start of `end`."""
        return cls(utc_midnight(first), utc_midnight(end))

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def dbt_env(self) -> dict[str, str]:
        """The environment variables dbt's models and tests read the window from (macros/window.sql)."""
        return dict(zip(DBT_WINDOW_ENV, (self.start.isoformat(), self.end.isoformat()), strict=True))

    def sql_literals(self) -> dict[str, str]:
        """{lo} and {hi} as SQL timestamptz literals, for query templates (the GX suites)."""
        return {"lo": f"'{self.start.isoformat()}'::timestamptz", "hi": f"'{self.end.isoformat()}'::timestamptz"}

    def partition_keys(self, partitions_def: dg.TimeWindowPartitionsDefinition) -> list[str]:
        """The keys of the partitions in the window (none before the definition's first partition:
        Dagster itself would list keys before it)."""
        start = max(self.start, partitions_def.start)
        if start >= self.end:
            return []
        return partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, self.end))

    def range_tags(self, partitions_def: dg.TimeWindowPartitionsDefinition) -> tuple[dict[str, str], int]:
        """Tags for one run over every partition of `partitions_def` in the window, and their number."""
        keys = self.partition_keys(partitions_def)
        if not keys:
            raise ValueError(f"no partitions of {partitions_def} in {self}")
        return range_run_tags(keys[0], keys[-1]), len(keys)
