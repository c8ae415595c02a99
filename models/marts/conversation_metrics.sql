{{ config(
    meta={'window': {'column': 'started_at'}},
    partition_by=['started_date'],
    pre_hook="{{ delete_window() }}",
    indexes=[
      {'columns': ['conversation_id'], 'unique': true},
      {'columns': ['started_at']},
      {'columns': ['bot_id', 'started_at']},
    ],
    tags=['daily'],
) }}
-- One row per conversation that has at least one message, in the daily partition of its
-- started_at. Messages count whatever day they were created on.
with conversations as (
    select * from {{ ref('stg_botflow__conversations') }}
    where {{ in_window('started_at') }}
),
-- Per conversation of the window, its messages and replies are looked up by conversation_id (indexed)
-- in LATERAL subqueries, in one pass over the window's conversations: a join let PostgreSQL scan all
-- of fct_bot_replies in conversation order, so a day's partition cost grew with history (80 s at
-- 30 days of 300k messages), and joining the two lookups back by conversation_id depended on row
-- estimates (a nested loop over 37k x 37k rows, 170 s, on tables not yet analyzed). Measured in bench/.
measured as (
  select
    {{ stable_id('conversation_metrics', ['c.conversation_id']) }} as id,
    c.conversation_id,
    c.bot_id,
    c.organization_id,
    c.started_at,
    c.ended_at,
    {{ whole_seconds_between('coalesce(c.ended_at, m.last_message_at)', 'c.started_at') }}::integer as duration_seconds,
    m.total_messages::integer as total_messages,
    m.user_messages::integer as user_messages,
    m.bot_messages::integer as bot_messages,
    r.avg_response_time_ms,
    r.p50_response_time_ms,
    r.p95_response_time_ms,
    r.p99_response_time_ms,
    r.successful_responses::integer as successful_responses,
    r.failed_responses::integer as failed_responses,
    r.fallback_responses::integer as fallback_responses,
    (c.handoff_at is not null or c.status = 'escalated') as handoff_triggered,
    r.knowledge_base_hits::integer as knowledge_base_hits,
    r.knowledge_base_misses::integer as knowledge_base_misses,
    m.tokens_used::bigint as tokens_used,
    round(coalesce(r.cost_usd, 0), 6)::numeric(10, 6) as estimated_cost_usd,
    c.status as resolution_status,
    c.customer_satisfaction,
    m.first_inbound_at,
    f.first_reply_at
  from conversations c
  cross join lateral (
      select
        count(*) as total_messages,
        count(*) filter (where m.direction = 'inbound') as user_messages,
        count(*) filter (where m.direction = 'outbound') as bot_messages,
        max(m.created_at) as last_message_at,
        min(case when m.direction = 'inbound' then m.created_at end) as first_inbound_at,
        sum(m.tokens) as tokens_used
      from {{ ref('int_messages') }} m
      where m.conversation_id = c.conversation_id
  ) m
  cross join lateral (
      select
        {{ response_time_columns('r.response_time_ms') }},
        count(*) filter (where r.outcome = 'success') as successful_responses,
        count(*) filter (where r.outcome = 'failed') as failed_responses,
        count(*) filter (where r.outcome = 'fallback') as fallback_responses,
        count(*) filter (where r.knowledge_base_hit) as knowledge_base_hits,
        count(*) filter (where not r.knowledge_base_hit) as knowledge_base_misses,
        sum(r.cost_usd) as cost_usd
      from {{ ref('fct_bot_replies') }} r
      where r.conversation_id = c.conversation_id
  ) r
  {{ first_reply_lookup(ref('int_messages'), 'conversations') }}
  where m.total_messages > 0
),
-- the intervals measured in business time, for business_time() (macros/business_time.sql)
spans as (
    select conversation_id as key, 'first_response' as span, organization_id,
      first_inbound_at as span_start, first_reply_at as span_end
    from measured where first_reply_at is not null
    union all
    select conversation_id, 'resolution', organization_id, started_at, ended_at
    from measured where resolution_status = 'resolved' and ended_at is not null
),
business as (
    {{ business_time('spans') | indent(4) }}
)
select
  x.id, x.conversation_id, x.bot_id, x.organization_id, x.started_at, x.ended_at, x.duration_seconds,
  x.total_messages, x.user_messages, x.bot_messages,
  x.avg_response_time_ms, x.p50_response_time_ms, x.p95_response_time_ms, x.p99_response_time_ms,
  x.successful_responses, x.failed_responses, x.fallback_responses, x.handoff_triggered,
  x.knowledge_base_hits, x.knowledge_base_misses, x.tokens_used, x.estimated_cost_usd,
  x.resolution_status, x.customer_satisfaction,
  -- Service metrics (second edition)
  {{ whole_ms_between('x.first_reply_at', 'x.first_inbound_at') }}::bigint as first_response_time_ms,
  {{ whole_div('fr.business_us', 1000) }} as first_response_business_ms,
  case when x.resolution_status = 'resolved'
       then {{ whole_seconds_between('x.ended_at', 'x.started_at') }} end::integer as resolution_time_secs,
  {{ whole_div('rs.business_us', 1000000) }}::integer as resolution_business_secs,
  case when t.first_response_secs is not null and fr.business_us is not null
       then {{ whole_div('fr.business_us', 1000) }} <= 1000 * t.first_response_secs end as sla_first_response_met
  {{ partition_date_column('x.started_at', 'started_date') }}
from measured x
left join business fr on fr.key = x.conversation_id and fr.span = 'first_response'
left join business rs on rs.key = x.conversation_id and rs.span = 'resolution'
left join {{ ref('sla_targets') }} t on t.organization_id = x.organization_id
