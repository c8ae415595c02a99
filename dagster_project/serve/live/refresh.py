"""The live layer: two small tables refreshed from the last hour of the raw layer, in plain SQL.

`refresh_live_tables` rewrites each table in one transaction (delete + insert), so a reader sees
either the previous refresh or the new one, never half of it. Both read only the recent window
(the last hour for metrics, the last 30 minutes for active conversations; the feed's message
counts use the (conversation_id, created_at) index for the 50 conversations per organization it
shows), never full history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from dagster_project.core.metrics import metric_sql
from dagster_project.core.tenancy import ensure_tenancy, isolate

LIVE_DDL = """
create schema if not exists live;
create table if not exists live.organization_metrics (
  organization_id uuid primary key,
  active_conversations integer not null,
  avg_response_time_ms integer,
  success_rate numeric(5, 2),
  messages_last_hour integer not null,
  newest_message_at timestamptz,
  refreshed_at timestamptz not null);
comment on table live.organization_metrics is
  'Live metrics per organization as of refreshed_at: active conversations (status active with a message '
  'in the last 30 minutes), average response time and success rate of the last hour''s replies, messages '
  'in the last hour. newest_message_at: created_at of the newest message the refresh saw '
  '(lag = refreshed_at - newest_message_at).';
create table if not exists live.conversation_feed (
  organization_id uuid not null,
  conversation_id uuid not null,
  bot_id uuid not null,
  status text not null,
  customer_phone_masked text,
  last_message_at timestamptz not null,
  message_count integer not null,
  feed_rank integer not null,
  newest_message_at timestamptz,
  refreshed_at timestamptz not null,
  primary key (organization_id, conversation_id));
comment on table live.conversation_feed is
  'The latest 50 conversations per organization by last message (feed_rank 1 = most recent), with status, '
  'masked phone (last 4 digits), last message time and message count.';
"""

LIVE_TABLES = ("live.organization_metrics", "live.conversation_feed")

# Response time of a reply, as in the marts: the app's value, else ms since the latest earlier inbound.
_REPLY_TIMES = """
select m.conversation_id, m.outcome,
  coalesce(m.response_time_ms::bigint,
           trunc(extract(epoch from m.created_at - prev.at) * 1000)::bigint) as response_time_ms
from raw.messages m
cross join lateral (
  select max(i.created_at) as at from raw.messages i
  where i.conversation_id = m.conversation_id and i.direction = 'inbound' and i.created_at < m.created_at
) prev
where m.direction = 'outbound' and m.created_at > %(now)s - interval '1 hour' and m.created_at <= %(now)s
"""

REFRESH_METRICS = f"""
insert into live.organization_metrics (organization_id, active_conversations, avg_response_time_ms,
  success_rate, messages_last_hour, newest_message_at, refreshed_at)
with recent as (
  select m.conversation_id, m.created_at, c.organization_id, c.status
  from raw.messages m join raw.conversations c on c.id = m.conversation_id
  where m.created_at > %(now)s - interval '1 hour' and m.created_at <= %(now)s
),
replies as (
  select c.organization_id, r.outcome, r.response_time_ms
  from ({_REPLY_TIMES}) r join raw.conversations c on c.id = r.conversation_id
),
per_org as (
  select organization_id,
    count(distinct conversation_id) filter (
      where status = 'active' and created_at > %(now)s - interval '30 minutes') as active_conversations,
    count(*) as messages_last_hour,
    max(created_at) as newest_message_at
  from recent group by organization_id
),
reply_stats as (
  select organization_id, {metric_sql('avg_response_time_ms')} as avg_response_time_ms,
    {metric_sql('success_rate')} as success_rate
  from replies group by organization_id
)
select o.id, coalesce(p.active_conversations, 0), s.avg_response_time_ms, s.success_rate,
  coalesce(p.messages_last_hour, 0), p.newest_message_at, %(now)s
from raw.organizations o
left join per_org p on p.organization_id = o.id
left join reply_stats s on s.organization_id = o.id
"""

REFRESH_FEED = """
insert into live.conversation_feed (organization_id, conversation_id, bot_id, status, customer_phone_masked,
  last_message_at, message_count, feed_rank, newest_message_at, refreshed_at)
with last_messages as (
  select m.conversation_id, max(m.created_at) as last_message_at
  from raw.messages m
  where m.created_at > %(now)s - interval '1 hour' and m.created_at <= %(now)s
  group by m.conversation_id
),
ranked as (
  select c.organization_id, c.id as conversation_id, c.bot_id, c.status, c.customer_phone_last4,
    l.last_message_at,
    row_number() over (partition by c.organization_id order by l.last_message_at desc, c.id) as feed_rank
  from last_messages l join raw.conversations c on c.id = l.conversation_id
)
select r.organization_id, r.conversation_id, r.bot_id, r.status, '***' || r.customer_phone_last4,
  r.last_message_at,
  (select count(*) from raw.messages m where m.conversation_id = r.conversation_id and m.created_at <= %(now)s),
  r.feed_rank,
  max(r.last_message_at) over (partition by r.organization_id),
  %(now)s
from ranked r where r.feed_rank <= 50
"""


@dataclass
class LiveRefresh:
    refreshed_at: datetime
    organizations: int
    feed_rows: int
    newest_message_at: datetime | None


def ensure_live_schema(conn: psycopg.Connection) -> None:
    ensure_tenancy(conn)
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('botflow.live.ddl'))")
        conn.execute(LIVE_DDL)
        for table in LIVE_TABLES:  # tenants read each organization's own rows only
            isolate(conn, table)


def refresh_live_tables(conn: psycopg.Connection, now: datetime) -> LiveRefresh:
    """Rewrite both live tables as of `now`, each in its own transaction."""
    ensure_live_schema(conn)
    params = {"now": now}
    with conn.transaction():
        conn.execute("delete from live.organization_metrics")
        orgs = conn.execute(REFRESH_METRICS, params).rowcount
    with conn.transaction():
        conn.execute("delete from live.conversation_feed")
        feed = conn.execute(REFRESH_FEED, params).rowcount
    newest = conn.execute("select max(newest_message_at) from live.organization_metrics").fetchone()[0]
    conn.commit()
    return LiveRefresh(now, orgs, feed, newest)
