"""What a report says, read from the marts and the reply fact table (never recomputed differently).

The period is a day or an ISO week in the scope's zone (periods.py): UTC for the platform, the organization's own
zone for an organization. KPIs of a period and scope (the platform, or one organization):
- conversations, messages: sums of bot_performance_metrics.total_conversations / total_messages over the period's
  dates (the platform: UTC dates), or of bot_performance_metrics_local's (an organization: its local dates);
- avg / p50 / p95 response time, success rate: over marts.fct_bot_replies created in the period
  (exact percentile_cont over the whole period, whole ms; the rate over replies with an outcome);
- tokens, cost: sums over the same replies (inbound messages carry no tokens: rule message_inbound_fields_ignored),
  the cost rounded to cents once, over the whole period;
- handoff rate: share of the conversations started in the period (conversation_metrics) that were
  handed off; CSAT: average rating of the conversations that ended in the period;
- first response p50, SLA met: over the conversations started in the period (conversation_metrics: business
  hours in each organization's zone, docs/service-metrics.md).
Every aggregate is the registry's (core/metrics.py), so it equals the marts', Superset's and the live
tables' by construction; rounding follows the contract (2-decimal rates, whole ms, halves away from 0).
Each bound is an instant, so every KPI is exact over a local day, half-hour offsets included. Anomalies
are judged per UTC date (metric_anomalies) and listed by their date; quarantined rows are counted by the
UTC hour partitions that start in the period.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from dagster_project.core.metrics import metric_sql
from dagster_project.serve.reports.periods import Period


def scope_filter(alias: str = "") -> str:
    """The rows of the report's scope: every row for the platform, one organization's otherwise."""
    return f"(%(org)s::uuid is null or {alias}organization_id = %(org)s::uuid)"


SCOPE_FILTER = scope_filter()

KPI_SQL = f"""
with days as (
    -- the platform's UTC dates, or the organization's own dates
    select total_conversations, total_messages from marts.bot_performance_metrics
    where %(org)s::uuid is null and date >= %(d0)s and date < %(d1)s
    union all
    select total_conversations, total_messages from marts.bot_performance_metrics_local
    where %(org)s::uuid is not null and date >= %(d0)s and date < %(d1)s and {SCOPE_FILTER}
), daily as (
    select coalesce(sum(total_conversations), 0)::bigint as conversations,
           coalesce(sum(total_messages), 0)::bigint as messages
    from days
), replies as (
    select {metric_sql('avg_response_time_ms')} as avg_response_time_ms,
      {metric_sql('p50_response_time_ms')} as p50_response_time_ms,
      {metric_sql('p95_response_time_ms')} as p95_response_time_ms,
      {metric_sql('success_rate')} as success_rate,
      coalesce(sum(tokens), 0)::bigint as tokens,
      round(coalesce(sum(cost_usd), 0), 2) as cost_usd
    from marts.fct_bot_replies
    where created_at >= %(t0)s and created_at < %(t1)s and {SCOPE_FILTER}
), started as (
    select {metric_sql('handoff_rate')} as handoff_rate,
      {metric_sql('first_response_p50_ms')} as first_response_p50_ms,
      {metric_sql('sla_met_rate')} as sla_met_rate
    from marts.conversation_metrics
    where started_at >= %(t0)s and started_at < %(t1)s and {SCOPE_FILTER}
), ended as (
    select {metric_sql('csat')} as csat
    from marts.conversation_metrics
    where ended_at >= %(t0)s and ended_at < %(t1)s and {SCOPE_FILTER}
)
select conversations, messages, avg_response_time_ms, p50_response_time_ms, p95_response_time_ms, success_rate,
  handoff_rate, csat, first_response_p50_ms, sla_met_rate, tokens, cost_usd
from daily, replies, started, ended
"""

SERIES_SQL = f"""
with buckets as (
    select * from unnest(%(bucket_starts)s::timestamptz[], %(bucket_ends)s::timestamptz[]) as b(bucket, bucket_end)
), replies as (
    select b.bucket,
      {metric_sql('avg_response_time_ms', 'r.response_time_ms')} as avg_ms,
      {metric_sql('p50_response_time_ms', 'r.response_time_ms')} as p50_ms,
      {metric_sql('p95_response_time_ms', 'r.response_time_ms')} as p95_ms
    from buckets b
    join marts.fct_bot_replies r on r.created_at >= b.bucket and r.created_at < b.bucket_end
    where r.created_at >= %(t0)s and r.created_at < %(t1)s and {scope_filter('r.')}
    group by b.bucket
), volume as (
    -- usage_analytics is kept by UTC hour: a bucket counts the hours that lie wholly inside it
    select b.bucket, sum(u.messages_received)::bigint as inbound, sum(u.messages_sent)::bigint as outbound
    from buckets b
    join marts.usage_analytics u on u.hour >= b.bucket and u.hour + interval '1 hour' <= b.bucket_end
    where u.hour >= %(t0)s and u.hour < %(t1)s and {scope_filter('u.')}
    group by b.bucket
)
select b.bucket, r.avg_ms, r.p50_ms, r.p95_ms,
  coalesce(v.inbound, 0) as inbound, coalesce(v.outbound, 0) as outbound
from buckets b left join replies r using (bucket) left join volume v using (bucket)
order by b.bucket
"""

BOTS_SQL = f"""
select r.bot_id, b.bot_name, count(*) as replies,
  {metric_sql('p95_response_time_ms', 'r.response_time_ms')} as p95_response_time_ms,
  {metric_sql('success_rate', 'r.outcome')} as success_rate
from marts.fct_bot_replies r
join marts.dim_bots b using (bot_id)
where r.created_at >= %(t0)s and r.created_at < %(t1)s
  and {scope_filter('r.')}
group by r.bot_id, b.bot_name
"""

QUARANTINE_SQL = """
select source_table, rule, count(*) as rows
from reports.quarantine_by_organization
where partition_hour >= %(t0)s and partition_hour < %(t1)s
  and (%(org)s::text is null or organization_id = %(org)s::text)
group by 1, 2 order by 3 desc, 1, 2
"""

ANOMALIES_SQL = f"""
select a.date, a.bot_id, b.bot_name, a.metric, a.value, a.baseline_median, a.threshold, a.direction
from marts.metric_anomalies a
join marts.dim_bots b using (bot_id)
where a.date >= %(d0)s and a.date < %(d1)s and {scope_filter('a.')}
order by a.date, b.bot_name, a.bot_id, a.metric
"""
# metric_anomalies' metrics as a report names them
ANOMALY_METRICS = {"p95_response_time_ms": "p95 response time (ms)", "error_rate": "error rate (%)",
                   "fallback_rate": "fallback rate (%)", "total_messages": "messages"}

KPI_FIELDS: dict[str, str] = {
    "conversations": "Conversations",
    "messages": "Messages",
    "avg_response_time_ms": "Avg response time (ms)",
    "p50_response_time_ms": "p50 response time (ms)",
    "p95_response_time_ms": "p95 response time (ms)",
    "success_rate": "Success rate (%)",
    "handoff_rate": "Handoff rate (%)",
    "csat": "CSAT (1-5)",
    "first_response_p50_ms": "First response p50 (ms)",
    "sla_met_rate": "First response within SLA (%)",
    "tokens": "Tokens",
    "cost_usd": "Cost (USD)",
}
# for these a rise is bad news (shown red); percentage-valued KPIs change in points
LOWER_IS_BETTER = {"avg_response_time_ms", "p50_response_time_ms", "p95_response_time_ms", "handoff_rate", "cost_usd",
                   "first_response_p50_ms"}
PERCENT_KPIS = {"success_rate", "handoff_rate", "sla_met_rate"}
RANKED_BOTS = 3


@dataclass(frozen=True)
class Scope:
    """The whole platform (organization_id None) or one organization."""

    organization_id: uuid.UUID | None
    name: str
    timezone: str = "UTC"  # the zone of the scope's days: the organization's (dim_organizations), UTC for the platform

    @property
    def key(self) -> str:
        """Stable file name: platform, or org-<name>-<first 8 of the id>."""
        if self.organization_id is None:
            return "platform"
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:40] or "org"
        return f"org-{slug}-{str(self.organization_id)[:8]}"


PLATFORM = Scope(None, "All organizations")


@dataclass
class ReportData:
    period: Period
    scope: Scope
    kpis: dict[str, int | Decimal | None]
    previous_kpis: dict[str, int | Decimal | None]
    series: list[dict]
    bots_by_p95: list[dict]
    bots_by_success: list[dict]
    quarantined: list[dict]
    anomalies: list[dict] = field(default_factory=list)  # marts.metric_anomalies rows dated in the period
    revisions: list[str] = field(default_factory=list)  # late data that changed a past report's numbers
    stale_marts: list[str] = field(default_factory=list)  # mart partitions not (re)built when rendered
    generated_at: datetime | None = None

    def changes(self) -> dict[str, dict]:
        """Per KPI: the change against the previous period (points for rates, percent otherwise)."""
        out = {}
        for name in KPI_FIELDS:
            now, before = self.kpis.get(name), self.previous_kpis.get(name)
            if now is None or before is None:
                out[name] = {"delta": None, "unit": "", "good": None}
                continue
            if name in PERCENT_KPIS:
                delta, unit = Decimal(now) - Decimal(before), "pts"
            elif before == 0:
                out[name] = {"delta": None, "unit": "", "good": None}
                continue
            else:
                delta, unit = (Decimal(now) - Decimal(before)) * 100 / Decimal(before), "%"
            delta = delta.quantize(Decimal("0.1"))
            good = None if delta == 0 else (delta < 0) == (name in LOWER_IS_BETTER)
            out[name] = {"delta": delta, "unit": unit, "good": good}
        return out


def params(period: Period, scope: Scope) -> dict:
    """The query parameters of a period in the scope's zone: its instants [t0, t1), its dates [d0, d1)."""
    period = period.in_zone(scope.timezone)
    buckets = period.buckets
    return {"t0": period.window.start, "t1": period.window.end, "d0": period.start, "d1": period.end,
            "org": scope.organization_id, "bucket_starts": [b[0] for b in buckets],
            "bucket_ends": [b[1] for b in buckets]}


def list_scopes(conn: psycopg.Connection) -> list[Scope]:
    rows = conn.execute(
        "select organization_id, organization_name, timezone from marts.dim_organizations "
        "order by organization_name, organization_id").fetchall()
    return [PLATFORM, *(Scope(org_id, name, zone) for org_id, name, zone in rows)]


def read_kpis(conn: psycopg.Connection, period: Period, scope: Scope) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return dict(cur.execute(KPI_SQL, params(period, scope)).fetchone())


def read_series(conn: psycopg.Connection, period: Period, scope: Scope) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(SERIES_SQL, params(period, scope)).fetchall()


def read_bot_rankings(conn: psycopg.Connection, period: Period, scope: Scope) -> tuple[list[dict], list[dict]]:
    """The best and worst bots by p95 (lower is better) and by success rate; ties by name."""
    with conn.cursor(row_factory=dict_row) as cur:
        bots = cur.execute(BOTS_SQL, params(period, scope)).fetchall()
    return (_best_and_worst(bots, "p95_response_time_ms", low_is_best=True),
            _best_and_worst(bots, "success_rate", low_is_best=False))


def _best_and_worst(bots: list[dict], column: str, *, low_is_best: bool) -> list[dict]:
    ranked = sorted((b for b in bots if b[column] is not None),
                    key=lambda b: (b[column] if low_is_best else -b[column], b["bot_name"], str(b["bot_id"])))
    if len(ranked) <= 2 * RANKED_BOTS:
        picks = [(b, "best" if i < (len(ranked) + 1) // 2 else "worst") for i, b in enumerate(ranked)]
    else:
        picks = [(b, "best") for b in ranked[:RANKED_BOTS]] + [(b, "worst") for b in ranked[-RANKED_BOTS:]]
    return [{**b, "rank": rank} for b, rank in picks]


def read_quarantine(conn: psycopg.Connection, period: Period, scope: Scope) -> list[dict]:
    p = params(period, scope)
    p["org"] = None if scope.organization_id is None else str(scope.organization_id)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(QUARANTINE_SQL, p).fetchall()


def read_anomalies(conn: psycopg.Connection, period: Period, scope: Scope) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(ANOMALIES_SQL, params(period, scope)).fetchall()


def anomaly_line(anomaly: dict) -> str:
    """One anomaly as a report says it: the date, the bot, the value against the bot's usual one."""
    side = "above" if anomaly["direction"] == "high" else "below"
    value = Decimal(anomaly["value"])
    shown = f"{int(value):,}" if value == value.to_integral_value() else f"{value:,}"
    return (f"{anomaly['date']:%Y-%m-%d} {anomaly['bot_name']}: {ANOMALY_METRICS[anomaly['metric']]} {shown}, "
            f"{side} its usual {anomaly['baseline_median']:,.6g} (more than {anomaly['threshold']:,.6g} away; the "
            "median of its 14 days before)")


def read_report(conn: psycopg.Connection, period: Period, scope: Scope) -> ReportData:
    """The report of `period`'s dates in the scope's zone."""
    period = period.in_zone(scope.timezone)
    kpis = read_kpis(conn, period, scope)
    by_p95, by_success = read_bot_rankings(conn, period, scope)
    return ReportData(
        period=period, scope=scope, kpis=kpis, previous_kpis=read_kpis(conn, period.previous, scope),
        series=read_series(conn, period, scope), bots_by_p95=by_p95, bots_by_success=by_success,
        quarantined=read_quarantine(conn, period, scope), anomalies=read_anomalies(conn, period, scope),
    )
