"""The `reports` schema: what each report said (to spot late data) and what was delivered (to never re-send)."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg

from dagster_project.core.tenancy import tenant_predicate
from dagster_project.serve.reports.data import KPI_FIELDS, ReportData

REPORTS_DDL = """
create schema if not exists reports;
create table if not exists reports.snapshots (
  report_kind text not null, period_start date not null, scope_key text not null,
  kpis jsonb not null, rendered_at timestamptz not null default now(),
  primary key (report_kind, period_start, scope_key));
comment on table reports.snapshots is 'The KPIs each report showed when it was last rendered.';
-- the zone of the period's days (an organization's reports moved from UTC days to its own)
alter table reports.snapshots add column if not exists zone text not null default 'UTC';
create table if not exists reports.deliveries (
  report_kind text not null, period_start date not null, scope_key text not null,
  recipients text[] not null, message_id text not null, delivered_at timestamptz not null default now(),
  primary key (report_kind, period_start, scope_key));
comment on table reports.deliveries is 'One row per report e-mailed: a report is never sent twice.';

-- quarantined rows with the organization they belong to, for the reports' data-quality section; a
-- security-barrier view, so a report scoped to one organization (tenancy.organization_scope) counts
-- that organization's rows only. Rows whose organization is unknown are the platform's.
create or replace view reports.quarantine_by_organization with (security_barrier) as
with attributed as (
    select q.partition_hour, q.source_table, q.rule,
      coalesce(q.source_row ->> 'organization_id', c.organization_id::text) as organization_id
    from raw.quarantine q
    left join raw.conversations c
      on q.source_table = 'messages' and c.id::text = q.source_row ->> 'conversation_id'
)
select partition_hour, source_table, rule, organization_id
from attributed
where """ + tenant_predicate(
    "case when organization_id ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' then organization_id::uuid end") + """;
grant usage on schema reports to botflow_scoped_reader;
grant select on reports.quarantine_by_organization to botflow_scoped_reader;
"""


def ensure_reports_schema(conn: psycopg.Connection) -> None:
    conn.execute("select pg_advisory_xact_lock(hashtext('botflow.reports.ddl'))")
    conn.execute(REPORTS_DDL)


def _jsonable(kpis: dict) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in kpis.items()}


def revisions_since_last_report(conn: psycopg.Connection, report: ReportData) -> list[str]:
    """Numbers of the previous period that changed since the report that covered it was rendered."""
    row = conn.execute(
        "select kpis, rendered_at from reports.snapshots where report_kind = %s and period_start = %s "
        "and scope_key = %s and zone = %s",  # a report of other days (another zone) is no earlier figure of these
        (report.period.kind, report.period.previous.start, report.scope.key, report.period.zone)).fetchone()
    if row is None:
        return []
    said, rendered_at = row
    now = _jsonable(report.previous_kpis)
    changed = [f"{KPI_FIELDS[k]} {said.get(k)} -> {now.get(k)}" for k in KPI_FIELDS if said.get(k) != now.get(k)]
    if not changed:
        return []
    return [f"Late data changed the previous {'day' if report.period.kind == 'daily' else 'week'}'s numbers "
            f"since its report of {rendered_at:%Y-%m-%d %H:%M} UTC: " + "; ".join(changed)]


def save_snapshot(conn: psycopg.Connection, report: ReportData) -> None:
    conn.execute(
        "insert into reports.snapshots (report_kind, period_start, scope_key, kpis, zone) values (%s, %s, %s, %s, %s) "
        "on conflict (report_kind, period_start, scope_key) do update set kpis = excluded.kpis, zone = excluded.zone, "
        "rendered_at = now()",
        (report.period.kind, report.period.start, report.scope.key, json.dumps(_jsonable(report.kpis)),
         report.period.zone))
