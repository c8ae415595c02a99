"""Reconciliation: compare the source with what the warehouse loaded, hour by hour, and mark what differs.

Change capture sees the rows whose `updated_at` moved past its high-water mark. What it cannot see is
found here: rows deleted from the source, rows stamped further behind the mark than its overlap (an
app server with a slow clock, an import or a replay), anything a failed or skipped run left behind.
Every load records, per source table and hour, the number of rows it read and a checksum of their ids
and `updated_at` (ingest/checksums.py). This asset computes the same figures on the source as it is
now, for the hours loaded in the last BOTFLOW_RECONCILE_DAYS days (default 30), and writes every hour
that differs to `raw.stale_hours`. Change capture requests those hours, as range runs; their next
load clears them, and marks the other hours a changed or deleted conversation of theirs counts in
(its end, handoff and messages: rules.STALE_BY_CHANGED_CONVERSATIONS). Each reconciliation is
recorded in `raw.reconciliation_log`.
"""


import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from dagster_project.core.resources import SourceDatabase, WarehouseDatabase
from dagster_project.core.settings import setting, setting_number
from dagster_project.ingest.checksums import CHECKSUMMED, source_figures

DAYS_SETTING = "BOTFLOW_RECONCILE_DAYS"
# when reconciliation runs (UTC cron); read when the code location loads, like the partitions' start
RECONCILE_CRON = setting("BOTFLOW_RECONCILE_CRON")


@dataclass(frozen=True)
class Drift:
    source_table: str
    hour: datetime
    source_rows: int  # in the source now
    loaded_rows: int  # when the hour was last loaded

    @property
    def reason(self) -> str:
        what = "rows" if self.source_rows != self.loaded_rows else "ids or updated_at"
        return (f"reconciliation: {self.source_table} {what} differ ({self.source_rows} in the source, "
                f"{self.loaded_rows} when loaded)")


def reconcile_days() -> int:
    return setting_number(DAYS_SETTING, int, minimum=1)


def find_drift(source: psycopg.Connection, schema: str, warehouse: psycopg.Connection,
               lo: datetime, hi: datetime) -> tuple[int, list[Drift]]:
    """(hours compared, the hours whose source figures differ from those recorded at their last load)."""
    now = source_figures(source, schema, lo, hi)
    recorded = warehouse.execute(
        "select source_table, hour, rows, checksum from raw.source_checksums where hour >= %s and hour < %s",
        (lo, hi)).fetchall()
    drift = [Drift(table, hour, now.get((table, hour), (0, 0))[0], rows)
             for table, hour, rows, checksum in recorded
             if now.get((table, hour), (0, 0)) != (rows, int(checksum))]
    compared = len({hour for _, hour, _, _ in recorded})
    return compared, sorted(drift, key=lambda d: (d.hour, d.source_table))


MARK_STALE = """
insert into raw.stale_hours (hour, reason, found_by, run_id)
select hour, reason, 'reconciliation', %(run_id)s
from unnest(%(hours)s::timestamptz[], %(reasons)s::text[]) as d (hour, reason)
on conflict (hour) do nothing
"""
def mark_stale(warehouse: psycopg.Connection, drift: list[Drift], run_id: str,
               lo: datetime, hi: datetime, compared: int) -> dict[datetime, str]:
    """Write the drifted hours to raw.stale_hours; log the check. (Reloading a drifted hour marks the
    other hours its changed conversations count in: rules.STALE_BY_CHANGED_CONVERSATIONS.)"""
    stale: dict[datetime, str] = {}
    for d in drift:
        stale.setdefault(d.hour, d.reason)
    if stale:
        hours = sorted(stale)
        warehouse.execute(MARK_STALE, {"hours": hours, "reasons": [stale[h] for h in hours], "run_id": run_id})
    warehouse.execute(
        "insert into raw.reconciliation_log (range_start, range_end, hours_compared, drifted_hours, drift, run_id) "
        "values (%s, %s, %s, %s, %s, %s)",
        (lo, hi, compared, len(stale), psycopg.types.json.Jsonb(
            [{"table": d.source_table, "hour": d.hour.isoformat(), "source_rows": d.source_rows,
              "loaded_rows": d.loaded_rows} for d in drift]), run_id))
    warehouse.commit()
    return stale


@dg.asset(
    key=["raw", "source_reconciliation"],
    group_name="ingestion",
    kinds={"python", "postgres"},
    deps=[dg.AssetKey(["raw", table]) for table in CHECKSUMMED],
    description="Compares the source with what the warehouse loaded, per table and hour (row counts and a checksum "
    "of ids and updated_at), over the last BOTFLOW_RECONCILE_DAYS days (schedule: BOTFLOW_RECONCILE_CRON, default "
    "hourly at :40), and marks the hours that differ (deleted rows, changes stamped behind change capture's mark) "
    "in raw.stale_hours, which change capture rebuilds.",
)
def source_reconciliation(context: dg.AssetExecutionContext, source: SourceDatabase,
                          warehouse: WarehouseDatabase) -> dg.MaterializeResult:
    hi = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    lo = hi - timedelta(days=reconcile_days())
    with source.connect() as src, warehouse.connect() as wh:
        compared, drift = find_drift(src, source.schema_name, wh, lo, hi)
        stale = mark_stale(wh, drift, context.run.run_id, lo, hi, compared)
    for d in drift:
        context.log.warning(f"{d.hour:%Y-%m-%d-%H:00}: {d.reason}")
    context.log.info(f"compared {compared} hours in [{lo:%Y-%m-%d %H:00}, {hi:%Y-%m-%d %H:00}): "
                     f"{len(drift)} differ, {len(stale)} hours marked stale")
    return dg.MaterializeResult(metadata={
        "range": dg.MetadataValue.text(f"[{lo.isoformat()}, {hi.isoformat()})"),
        "hours_compared": dg.MetadataValue.int(compared),
        "drifted": dg.MetadataValue.int(len(drift)),
        "hours_marked_stale": dg.MetadataValue.int(len(stale)),
        "drift": dg.MetadataValue.json(json.loads(json.dumps(
            [{"hour": f"{d.hour:%Y-%m-%d-%H:00}", "table": d.source_table, "source_rows": d.source_rows,
              "loaded_rows": d.loaded_rows} for d in drift[:100]]))),
    })


reconciliation_job = dg.define_asset_job(
    "reconciliation_job", selection=dg.AssetSelection.assets(source_reconciliation),
    description="Compare the source with the loaded hours and mark the ones that differ for rebuilding.")
reconciliation_schedule = dg.ScheduleDefinition(
    name="reconciliation_schedule", job=reconciliation_job, cron_schedule=RECONCILE_CRON,
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
