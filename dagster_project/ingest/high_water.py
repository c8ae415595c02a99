"""How far the source has changed: its newest updated_at, read once for every reader.

Change capture (automation/change_capture.py) keeps its cursor at the newest change capped at the
source's own now(): an app server whose clock runs ahead does not hide the changes stamped after it.
The live sensor (serve/live/sensor.py) only asks "did anything change?": it ignores stamps more than
FUTURE_TOLERANCE ahead, which would otherwise look like a new change on every tick. Both come from
one statement (backward scans of the updated_at indexes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from dagster_project.core.resources import SourceDatabase
from dagster_project.ingest.loader import FUTURE_TOLERANCE

HIGH_WATER = """
with newest as (
  select greatest((select max(updated_at) from {s}.messages), (select max(updated_at) from {s}.conversations)) as at,
    greatest((select max(updated_at) from {s}.messages where updated_at <= now() + %(tolerance)s),
             (select max(updated_at) from {s}.conversations where updated_at <= now() + %(tolerance)s)) as plausible
)
select least(at, now()), plausible, now() from newest
"""


@dataclass(frozen=True)
class HighWater:
    capped: datetime | None  # the newest updated_at, at most the source's now() (None: no rows)
    plausible: datetime | None  # the newest updated_at not beyond now() + FUTURE_TOLERANCE
    now: datetime  # the source's clock


def source_high_water(source: SourceDatabase) -> HighWater:
    with source.connect() as conn:
        query = sql.SQL(HIGH_WATER).format(s=sql.Identifier(source.schema_name))
        return HighWater(*conn.execute(query, {"tolerance": FUTURE_TOLERANCE}).fetchone())
