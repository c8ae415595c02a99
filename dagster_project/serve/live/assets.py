"""The near-real-time feed: ingest the last two hours and refresh the live tables, in one small run."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from dagster_project.core.db import connect
from dagster_project.core.partitions import hourly_partitions
from dagster_project.core.policies import POOL_LIVE
from dagster_project.core.resources import SourceDatabase, WarehouseDatabase
from dagster_project.core.run_process import record_run_process
from dagster_project.core.window import Window
from dagster_project.ingest.loader import load_window
from dagster_project.serve.live.refresh import refresh_live_tables

LIVE_TABLES = {
    "organization_metrics": "Live metrics per organization (last hour / last 30 minutes), with refreshed_at and "
    "the created_at of the newest message seen, so that lag can be read off the table.",
    "conversation_feed": "The latest 50 conversations per organization by last message, with masked phones.",
}


@dg.multi_asset(
    name="live_tables",
    specs=[
        dg.AssetSpec(key=["live", table], description=text, group_name="live", kinds={"python", "postgres"},
                     deps=[dg.AssetKey(["raw", "messages"]), dg.AssetKey(["raw", "conversations"])])
        for table, text in LIVE_TABLES.items()
    ],
    pool=POOL_LIVE,
)
def live_tables(context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: WarehouseDatabase):
    """Load [previous hour, next hour) into raw (the same loader and checks as the hourly partitions),
    then rewrite the live tables from the last hour, each in one transaction."""
    record_run_process(context)
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    with source.connect() as src, warehouse.connect() as wh:
        report = load_window(src, wh, source_schema=source.schema_name,
                             window=Window(hour - timedelta(hours=1), hour + timedelta(hours=1)),
                             run_id=context.run.run_id, phone_hash_key=source.phone_hash_key, now=now,
                             floor=hourly_partitions.start, log=False)
    with connect(warehouse.url, setting="BOTFLOW_WAREHOUSE_URL", autocommit=True) as wh:
        refresh = refresh_live_tables(wh, now)
    lag = (refresh.refreshed_at - refresh.newest_message_at).total_seconds() if refresh.newest_message_at else None
    common = {
        "refreshed_at": dg.MetadataValue.text(refresh.refreshed_at.isoformat()),
        "newest_message_at": dg.MetadataValue.text(
            refresh.newest_message_at.isoformat() if refresh.newest_message_at else "none"),
        "lag_seconds": dg.MetadataValue.float(lag if lag is not None else -1.0),
        "messages_loaded": dg.MetadataValue.int(report.loaded_rows.get("messages", 0)),
    }
    yield dg.MaterializeResult(asset_key=["live", "organization_metrics"],
                               metadata={**common, "rows": dg.MetadataValue.int(refresh.organizations)})
    yield dg.MaterializeResult(asset_key=["live", "conversation_feed"],
                               metadata={**common, "rows": dg.MetadataValue.int(refresh.feed_rows)})
