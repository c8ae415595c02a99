"""CSV exports of the marts, streamed with server-side COPY: any number of rows, flat memory.

Filters are bound as parameters (psycopg quotes them; they are never pasted into SQL). Output is
RFC 4180 CSV (quoted where needed, a header row), UTF-8, to a file or stdout. Phones appear only
masked (last 4 digits).

An export for one organization (--org, or a --bot of it) runs inside tenancy.organization_scope: the
warehouse itself returns that organization's rows only, even if a filter below were wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import BinaryIO

import psycopg
from psycopg import sql

from dagster_project.core.tenancy import organization_scope

STATUSES = ("active", "resolved", "escalated")

QUERIES = {
    "conversations": """
        select (m.started_at at time zone 'UTC')::date as date, b.bot_name, o.organization_name,
          '***' || c.customer_phone_last4 as customer_phone, m.total_messages, m.user_messages,
          m.bot_messages, m.avg_response_time_ms, m.p50_response_time_ms, m.p95_response_time_ms,
          m.p99_response_time_ms, m.successful_responses, m.failed_responses, m.fallback_responses,
          m.knowledge_base_hits, m.knowledge_base_misses, m.tokens_used, m.estimated_cost_usd,
          m.duration_seconds, m.resolution_status, m.customer_satisfaction, m.first_response_time_ms,
          m.first_response_business_ms, m.resolution_time_secs, m.resolution_business_secs,
          m.sla_first_response_met::text as sla_first_response_met, m.conversation_id
        from marts.conversation_metrics m
        join marts.dim_bots b on b.bot_id = m.bot_id
        join marts.dim_organizations o on o.organization_id = m.organization_id
        join staging.stg_botflow__conversations c on c.conversation_id = m.conversation_id
        where m.started_at >= %(start)s and m.started_at < %(end)s
          and (%(org)s::text is null or o.organization_name = %(org)s or o.organization_id::text = %(org)s)
          and (%(bot)s::text is null or b.bot_name = %(bot)s or b.bot_id::text = %(bot)s)
          and (%(status)s::text is null or m.resolution_status = %(status)s)
          and (%(search)s::text is null or strpos(lower(b.bot_name), lower(%(search)s)) > 0
               or c.customer_phone_last4 = %(search)s)
        order by m.started_at, m.conversation_id""",
    "bot-performance": """
        select b.bot_name, o.organization_name, m.*
        from marts.bot_performance_metrics m
        join marts.dim_bots b on b.bot_id = m.bot_id
        join marts.dim_organizations o on o.organization_id = m.organization_id
        where m.date >= %(start_date)s and m.date < %(end_date)s
          and (%(org)s::text is null or o.organization_name = %(org)s or o.organization_id::text = %(org)s)
          and (%(bot)s::text is null or b.bot_name = %(bot)s or b.bot_id::text = %(bot)s)
          and (%(search)s::text is null or strpos(lower(b.bot_name), lower(%(search)s)) > 0)
        order by m.date, b.bot_name""",
    "usage": """
        select o.organization_name, m.*
        from marts.usage_analytics m
        join marts.dim_organizations o on o.organization_id = m.organization_id
        where m.hour >= %(start)s and m.hour < %(end)s
          and (%(org)s::text is null or o.organization_name = %(org)s or o.organization_id::text = %(org)s)
        order by m.hour, o.organization_name""",
}


class ExportError(ValueError):
    """A filter value is wrong; the message names the filter."""


@dataclass(frozen=True)
class ExportFilters:
    start: date
    end: date
    org: str | None = None
    bot: str | None = None
    status: str | None = None
    search: str | None = None

    def validate(self, kind: str) -> None:
        if kind not in QUERIES:
            raise ExportError(f"export {kind!r}: choose one of {', '.join(QUERIES)}")
        if self.end <= self.start:
            raise ExportError(f"--end {self.end} must be after --start {self.start} (end is exclusive)")
        if self.status is not None and self.status not in STATUSES:
            raise ExportError(f"--status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status is not None and kind != "conversations":
            raise ExportError("--status filters conversations only")
        if self.bot is not None and kind == "usage":
            raise ExportError("--bot does not apply to usage (one row per organization and hour)")

    def params(self) -> dict:
        return {
            "start": datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC),
            "end": datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC),
            "start_date": self.start, "end_date": self.end,
            "org": self.org, "bot": self.bot, "status": self.status, "search": self.search,
        }


def scope_organization(conn: psycopg.Connection, filters: ExportFilters) -> uuid.UUID | None:
    """The organization an export is confined to: --org's, else --bot's; None for the whole platform.

    An --org or --bot that matches nothing is a mistake, not an empty export. A name shared by
    several organizations (or by bots of several) is ambiguous: give the id.
    """
    scope = None
    for flag, value, what, query in (
        ("--org", filters.org, "organization", "select distinct organization_id from marts.dim_organizations "
                                               "where organization_name = %s or organization_id::text = %s"),
        ("--bot", filters.bot, "bot",
         "select distinct organization_id from marts.dim_bots where bot_name = %s or bot_id::text = %s"),
    ):
        if value is None:
            continue
        matches = [row[0] for row in conn.execute(query, (value, value))]
        if not matches:
            raise ExportError(f"{flag} {value!r} matches no {what} (give its name or id)")
        if len(matches) > 1:
            raise ExportError(f"{flag} {value!r} names {what}s of {len(matches)} organizations (give its id)")
        scope = scope or matches[0]
    return scope


def export_csv(conn: psycopg.Connection, kind: str, filters: ExportFilters, out: BinaryIO) -> int:
    """Stream the export to `out` (bytes); returns the number of data rows."""
    filters.validate(kind)
    organization = scope_organization(conn, filters)
    query = sql.SQL(QUERIES[kind]).format()
    bound = psycopg.ClientCursor(conn).mogrify(query, filters.params())  # parameters quoted by psycopg
    copy = sql.SQL("copy ({}) to stdout with (format csv, header, force_quote *)").format(sql.SQL(bound))
    rows = -1  # the header
    with organization_scope(conn, organization), conn.cursor().copy(copy) as stream:
        for chunk in stream:
            data = bytes(chunk)
            rows += data.count(b"\n")
            out.write(data)
    return max(rows, 0)
