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
)
-- Per conversation of the window, its messages and replies are looked up by conversation_id (indexed)
-- in LATERAL subqueries, in one pass over the window's conversations: a join let PostgreSQL scan all
-- of fct_bot_replies in conversation order, so a day's partition cost grew with history (80 s at
-- 30 days of 300k messages), and joining the two lookups back by conversation_id depended on row
-- estimates (a nested loop over 37k x 37k rows, 170 s, on tables not yet analyzed). Measured in bench/.
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
  c.customer_satisfaction
  {{ partition_date_column('c.started_at', 'started_date') }}
from conversations c
cross join lateral (
    select
      count(*) as total_messages,
      count(*) filter (where m.direction = 'inbound') as user_messages,
      count(*) filter (where m.direction = 'outbound') as bot_messages,
      max(m.created_at) as last_message_at,
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
where m.total_messages > 0
