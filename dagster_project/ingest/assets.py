"""Ingestion: hourly partitions of the source, COPY-ed into the warehouse's raw layer."""


from datetime import UTC, datetime

import dagster as dg

from dagster_project.core.partitions import hourly_partitions
from dagster_project.core.policies import POOL_RAW, RETRY_POLICY, interrupts_stop_the_step
from dagster_project.core.resources import SourceDatabase, WarehouseDatabase
from dagster_project.core.run_process import record_run_process
from dagster_project.core.window import Window
from dagster_project.ingest.loader import LoadReport, SourceError, check_source_tables, load_range
from dagster_project.ingest.rules import REJECTION_RULES, REPAIR_RULES, SUPERSEDED_RULE, SUPERSEDED_TEXT

RAW_TABLES = {
    "organizations": "Organizations, synced whole on every run.",
    "bots": "Bots and their default LLM model, synced whole on every run.",
    "conversations": "Conversations started in the partition's hour, and those its messages belong to; "
    "the newest updated_at wins. Phones are stored as a keyed hash and the last 4 digits.",
    "messages": "Messages created in the partition's hour, validated and repaired; the newest updated_at wins.",
    "api_events": "API calls and webhooks that occurred in the partition's hour.",
}
RULES_DOC = "\n".join(f"- `{rule}`: {text}" for rule, text in {
    **REJECTION_RULES, SUPERSEDED_RULE: SUPERSEDED_TEXT, **REPAIR_RULES}.items())


@dg.multi_asset(
    name="raw_ingestion",
    specs=[
        dg.AssetSpec(
            key=["raw", table],
            description=f"{text}\n\nRejected rows go to raw.quarantine, repairs are counted in raw.repairs. "
            f"Rules:\n{RULES_DOC}",
            group_name="ingestion",
            kinds={"python", "postgres"},
        )
        for table, text in RAW_TABLES.items()
    ],
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=RETRY_POLICY,
    pool=POOL_RAW,
)
def raw_ingestion(context: dg.AssetExecutionContext, source: SourceDatabase, warehouse: WarehouseDatabase):
    """COPY the partition's window out of the app database, check every row, COPY it into raw."""
    record_run_process(context)
    window = Window.of(context)
    context.log.info(f"ingesting {window} from schema {source.schema_name}")
    with interrupts_stop_the_step(), source.connect() as src, warehouse.connect() as wh:
        try:
            check_source_tables(src, source.schema_name)
        except SourceError as exc:  # a setting to fix: retrying cannot help
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        report = load_range(
            src, wh,
            source_schema=source.schema_name,
            window=window,
            run_id=context.run.run_id,
            phone_hash_key=source.phone_hash_key,
            now=datetime.now(UTC),
            floor=hourly_partitions.start,
            progress=context.log.info,
        )
    if report.stale_hours:  # rows moved out of hours outside this run: their marts count them still
        context.log.warning(f"newer versions moved rows out of {len(report.stale_hours)} hours outside "
                            f"{window}: rebuild "
                            + ", ".join(f"{hour:%Y-%m-%d-%H:00}" for hour in sorted(report.stale_hours)))
    for table in RAW_TABLES:
        yield dg.MaterializeResult(asset_key=["raw", table], metadata=report_metadata(report, table))


def report_metadata(report: LoadReport, table: str) -> dict[str, dg.MetadataValue]:
    """Row counts of `table`, and the window's rejected and repaired rows per rule."""
    prefix = {"conversations": "conversation_", "messages": "message_", "api_events": "api_event_"}.get(table)
    metadata: dict[str, dg.MetadataValue] = {
        "window": dg.MetadataValue.text(f"[{report.window_start.isoformat()}, {report.window_end.isoformat()})"),
        "source_rows": dg.MetadataValue.int(report.source_rows.get(table, 0)),
        "loaded_rows": dg.MetadataValue.int(report.loaded_rows.get(table, report.source_rows.get(table, 0))),
    }
    if prefix:
        rejected = {r: n for r, n in report.rejected.items() if r.startswith(prefix)}
        swept = {r: n for r, n in report.swept.items() if r.startswith(prefix)}
        repaired = {r: n for r, n in report.repaired.items() if r.startswith(prefix)}
        metadata["rejected_rows"] = dg.MetadataValue.int(sum(rejected.values()))
        metadata["swept_rows"] = dg.MetadataValue.int(sum(swept.values()))
        metadata["repaired_rows"] = dg.MetadataValue.int(sum(repaired.values()))
        for rule in sorted(set(rejected) | set(swept)):
            metadata[f"rejected:{rule}"] = dg.MetadataValue.int(rejected.get(rule, 0) + swept.get(rule, 0))
        for rule, n in sorted(repaired.items()):
            metadata[f"repaired:{rule}"] = dg.MetadataValue.int(n)
    superseded = report.rejected.get(SUPERSEDED_RULE, 0) + report.swept.get(SUPERSEDED_RULE, 0)
    metadata["superseded_versions (all tables)"] = dg.MetadataValue.int(superseded)
    if report.stale_hours:
        metadata["stale_hours"] = dg.MetadataValue.text(
            ", ".join(f"{hour:%Y-%m-%d-%H:00}" for hour in sorted(report.stale_hours)))
    return metadata
