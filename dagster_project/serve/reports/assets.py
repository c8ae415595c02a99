"""Report assets: the daily and weekly (ISO week) reports, rendered then e-mailed.

`reports/<kind>_report` renders HTML + PDF for the platform (UTC days) and each organization (its own
zone's days) once the marts it reads are built for the whole period (it waits up to
BOTFLOW_REPORT_WAIT_MINUTES, then renders anyway with a warning banner naming what is missing: never
silently wrong numbers). An organization whose local period touches a UTC day that has not ended yet
is left pending; a run tagged botflow/reports=pending (the schedule's catch-up, a day later) renders
the scopes not yet rendered.
`reports/<kind>_report_delivery` e-mails them; it retries with backoff and never re-sends a report
already delivered for that partition (reports.deliveries).
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from dagster_project.core.partitions import daily_partitions, hourly_partitions, weekly_partitions
from dagster_project.core.policies import DELIVERY_RETRY_POLICY, POOL_REPORTS, RETRY_POLICY
from dagster_project.core.resources import WarehouseDatabase
from dagster_project.core.settings import setting_number
from dagster_project.serve.reports.build import deliver_period, period_folder, plan_period, render_period
from dagster_project.serve.reports.data import Scope
from dagster_project.serve.reports.delivery import DeliveryError
from dagster_project.serve.reports.periods import HOUR, Period, ReportKind
from dagster_project.transform.freshness import DAILY_MARTS, HOURLY_MARTS

# the marts the reports read (models/_exposures.yml, report_marts, lists the same); they wait for these
REPORT_MARTS = [key for key in (*DAILY_MARTS, *HOURLY_MARTS) if key.path[-1] != "response_time_histogram"]
# the names of bots and organizations (models/_exposures.yml lists the same)
REPORT_DIMS = [dg.AssetKey(["marts", "dim_bots"]), dg.AssetKey(["marts", "dim_organizations"])]
POLL_SECONDS = 30
# a run tagged PENDING_TAG=PENDING renders only the scopes of its period not rendered yet (the schedule's catch-up)
PENDING_TAG, PENDING = "botflow/reports", "pending"


def marts_read_by(scope: Scope) -> list[dg.AssetKey]:
    """The marts a scope's report reads: the platform's days are bot_performance_metrics' (UTC dates), an
    organization's are bot_performance_metrics_local's (its own dates)."""
    unread = "bot_performance_metrics_local" if scope.organization_id is None else "bot_performance_metrics"
    return [key for key in REPORT_MARTS if key.path[-1] != unread]


def missing_mart_partitions(instance: dg.DagsterInstance, period: Period, scopes: list[Scope]) -> list[str]:
    """The marts the scopes read not yet materialized for every UTC partition their periods (the period in each
    scope's zone) touch, e.g. 'usage_analytics (3 of 24 hours missing)'."""
    missing = []
    marts = ((DAILY_MARTS, daily_partitions, timedelta(days=1), "days"),
             (HOURLY_MARTS, hourly_partitions, HOUR, "hours"))
    for keys, partitions_def, unit, unit_name in marts:
        for key in keys:
            readers = [scope for scope in scopes if key in marts_read_by(scope)]
            expected = {k for scope in readers
                        for k in period.in_zone(scope.timezone).covering(unit).partition_keys(partitions_def)}
            absent = expected - instance.get_materialized_partitions(key)
            if absent:
                missing.append(f"{key.path[-1]} ({len(absent)} of {len(expected)} {unit_name} missing)")
    return missing


def wait_for_marts(context: dg.AssetExecutionContext, period: Period, scopes: list[Scope]) -> list[str]:
    deadline = time.monotonic() + 60 * setting_number("BOTFLOW_REPORT_WAIT_MINUTES", minimum=0)
    while True:
        missing = missing_mart_partitions(context.instance, period, scopes)
        if not missing or time.monotonic() >= deadline:
            return missing
        context.log.info(f"waiting for the marts of {period.kind} {period.slug}: {', '.join(missing)}")
        time.sleep(POLL_SECONDS)


def build_report_assets(kind: ReportKind, partitions_def: dg.PartitionsDefinition, cadence: str):
    report_key = dg.AssetKey(["reports", f"{kind}_report"])

    @dg.asset(
        key=report_key,
        description=f"The {kind} stakeholder report ({cadence}): headline KPIs against the previous period, "
        "response-time and message-volume charts, best and worst bots, data-quality notes; HTML and PDF for the "
        "platform and for each organization, under $BOTFLOW_REPORTS_DIR/" + kind + "/<period>/.",
        deps=[*(dg.AssetDep(key) for key in REPORT_MARTS), *REPORT_DIMS],
        partitions_def=partitions_def,
        group_name="reports",
        kinds={"python", "pdf", "html"},
        retry_policy=RETRY_POLICY,
        pool=POOL_REPORTS,
        output_required=False,  # a catch-up run with nothing pending materializes nothing (and delivers nothing)
    )
    def report(context: dg.AssetExecutionContext, warehouse: WarehouseDatabase) -> Iterator[dg.MaterializeResult]:
        period = Period.from_partition_key(kind, context.partition_key)
        only_pending = context.run.tags.get(PENDING_TAG) == PENDING
        with warehouse.connect() as conn:
            plan = plan_period(conn, period, datetime.now(UTC), only_pending=only_pending)
        if plan.pending:
            context.log.info(f"{kind} report {period.slug}: pending until their local {kind} period's UTC days have "
                             f"ended: {', '.join(s.key for s in plan.pending)}")
        if not plan.due:
            context.log.info(f"{kind} report {period.slug}: no report is due that was not rendered already")
            return
        stale = wait_for_marts(context, period, plan.due)
        if stale:
            context.log.warning(f"{kind} report {period.slug} rendered with marts not built: {', '.join(stale)}")
        with warehouse.connect() as conn:
            rendered = render_period(conn, period, plan.due, log=context.log.info,
                                     stale_marts=(lambda scope: missing_mart_partitions(context.instance, period,
                                                                                        [scope])) if stale
                                     else (lambda _scope: []))
        yield dg.MaterializeResult(metadata={
            "folder": dg.MetadataValue.path(str(period_folder(period))),
            "reports": len(rendered),
            "rendered": ", ".join(r.scope_key for r in rendered) or "none",
            "pending": ", ".join(s.key for s in plan.pending) or "none",
            "stale_marts": ", ".join(stale) or "none",
        })

    @dg.asset(
        key=dg.AssetKey(["reports", f"{kind}_report_delivery"]),
        description=f"E-mails the {kind} reports to the recipients of $BOTFLOW_REPORT_RECIPIENTS over SMTP "
        "(BOTFLOW_SMTP_*). Retries with backoff; a report already delivered for the partition is never re-sent.",
        deps=[report_key],
        partitions_def=partitions_def,
        group_name="reports",
        kinds={"python", "email"},
        retry_policy=DELIVERY_RETRY_POLICY,
        pool=POOL_REPORTS,
    )
    def delivery(context: dg.AssetExecutionContext, warehouse: WarehouseDatabase) -> dg.MaterializeResult:
        period = Period.from_partition_key(kind, context.partition_key)
        try:
            with warehouse.connect() as conn:
                deliveries = deliver_period(conn, period, log=context.log.info)
        except DeliveryError as exc:
            raise dg.Failure(description=f"{kind} report {period.slug}: {exc}") from exc
        counts: dict[str, int] = {}
        for d in deliveries:
            counts[d.status] = counts.get(d.status, 0) + 1
        return dg.MaterializeResult(metadata={
            **{status.replace(" ", "_"): n for status, n in sorted(counts.items())},
            "deliveries": dg.MetadataValue.md("\n".join(
                f"- `{d.scope_key}`: {d.status} {', '.join(d.recipients)}" for d in deliveries)),
            "checked_at": datetime.now().isoformat(timespec="seconds"),
        })

    return report, delivery


daily_report, daily_report_delivery = build_report_assets(
    "daily", daily_partitions, "the previous day, 07:00 UTC; the platform's UTC day, each organization's own day, "
    "zones west of UTC a day later")
weekly_report, weekly_report_delivery = build_report_assets(
    "weekly", weekly_partitions, "the ISO week, Monday 07:00 UTC; each organization's own days, zones west of UTC "
    "on Tuesday")
REPORT_ASSETS = [daily_report, daily_report_delivery, weekly_report, weekly_report_delivery]
