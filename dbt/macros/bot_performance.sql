{#
  bot_performance_metrics over [lo, hi), one row per bot and period.
  period='day': per UTC date (the mart); period='local_day': per date in the organization's zone, the local
  days [lo, hi) overlaps whole (bot_performance_metrics_local: every relation has the organization's
  `timezone`); period='range': one row per bot for the whole range (marts.get_bot_performance_summary). All
  use this one query, so the function and the marts can never disagree. `rel` maps messages / replies / conversations / conversation_metrics / bots to relations
  (first responses and SLA verdicts are read from conversation_metrics, their one definition).
#}
{% macro bot_performance_select(rel, lo, hi, period='day', bot_filter='true') -%}
with messages_in_range as (
    select bot_id, {{ period_of('created_at', period) }} as period, conversation_id, tokens
    from {{ rel.messages }}
    where {{ in_period_window('created_at', lo, hi, period) }} and {{ bot_filter }}
),
message_stats as (
    select bot_id, period, count(*) as total_messages,
      count(distinct conversation_id) as active_conversations, sum(tokens) as total_tokens
    from messages_in_range group by 1, 2
),
reply_stats as (
    select bot_id, {{ period_of('created_at', period) }} as period,
      {{ response_time_columns('response_time_ms') }},
      count(*) filter (where outcome = 'success') as successes,
      count(*) filter (where outcome = 'failed') as failures,
      count(*) filter (where outcome = 'fallback') as fallbacks,
      count(outcome) as with_outcome,
      count(*) filter (where knowledge_base_hit) as kb_hits,
      count(knowledge_base_hit) as kb_lookups,
      sum(cost_usd) as total_cost
    from {{ rel.replies }}
    where {{ in_period_window('created_at', lo, hi, period) }} and {{ bot_filter }}
    group by 1, 2
),
started as (
    select bot_id, {{ period_of('started_at', period) }} as period, count(*) as total_conversations
    from {{ rel.conversations }}
    where {{ in_period_window('started_at', lo, hi, period) }} and {{ bot_filter }}
    group by 1, 2
),
ended as (
    select bot_id, {{ period_of('ended_at', period) }} as period,
      avg({{ whole_seconds_between('ended_at', 'started_at') }}) as avg_duration_secs,
      avg(customer_satisfaction) as satisfaction_avg
    from {{ rel.conversations }}
    where {{ in_period_window('ended_at', lo, hi, period) }} and {{ bot_filter }}
    group by 1, 2
),
handoffs as (
    select bot_id, {{ period_of('handoff_at', period) }} as period, count(*) as handoffs
    from {{ rel.conversations }}
    where {{ in_period_window('handoff_at', lo, hi, period) }} and {{ bot_filter }}
    group by 1, 2
),
first_responses as (
    select bot_id, {{ period_of('started_at', period) }} as period,
      {{ metric('first_response_p50_ms') }} as first_response_p50_ms,
      {{ metric('first_response_p95_ms') }} as first_response_p95_ms,
      {{ metric('sla_met_rate') }} as sla_met_rate
    from {{ rel.conversation_metrics }}
    where {{ in_period_window('started_at', lo, hi, period) }} and {{ bot_filter }}
    group by 1, 2
),
active_keys as (
    select bot_id, period from message_stats
    union select bot_id, period from started
    union select bot_id, period from ended
)
select
  {%- if period in ('day', 'local_day') %}
  {{ stable_id('bot_performance_metrics' ~ ('_local' if period == 'local_day' else ''), ['k.bot_id', 'k.period']) }} as id,
  {%- endif %}
  k.bot_id,
  b.organization_id,
  {%- if period in ('day', 'local_day') %}
  k.period as date,
  {%- endif %}
  coalesce(s.total_conversations, 0)::integer as total_conversations,
  coalesce(m.total_messages, 0)::integer as total_messages,
  coalesce(m.active_conversations, 0)::integer as active_conversations,
  r.avg_response_time_ms,
  r.p50_response_time_ms,
  r.p95_response_time_ms,
  r.p99_response_time_ms,
  {{ rate('r.successes', 'r.with_outcome') }}::numeric(5, 2) as success_rate,
  {{ rate('r.failures', 'r.with_outcome') }}::numeric(5, 2) as error_rate,
  {{ rate('r.fallbacks', 'r.with_outcome') }}::numeric(5, 2) as fallback_rate,
  {{ rate('coalesce(h.handoffs, 0)', 'm.active_conversations') }}::numeric(7, 2) as handoff_rate,
  {{ rate('r.kb_hits', 'r.kb_lookups') }}::numeric(5, 2) as knowledge_base_hit_rate,
  {{ ratio('coalesce(m.total_tokens, 0)', 'm.active_conversations', 0) }}::integer as avg_tokens_per_conversation,
  coalesce(m.total_tokens, 0)::bigint as total_tokens_used,
  round(coalesce(r.total_cost, 0), 2)::numeric(10, 2) as total_cost_usd,
  {{ ratio('coalesce(r.total_cost, 0)', 'm.active_conversations', 6) }}::numeric(10, 6) as cost_per_conversation_usd,
  round(e.avg_duration_secs)::integer as avg_conversation_duration_secs,
  {{ ratio('coalesce(m.total_messages, 0)', 'm.active_conversations', 2) }}::numeric(5, 2) as avg_messages_per_conversation,
  round(e.satisfaction_avg, 2)::numeric(3, 2) as customer_satisfaction_avg,
  f.first_response_p50_ms,
  f.first_response_p95_ms,
  f.sla_met_rate::numeric(5, 2) as sla_met_rate
  {%- if period == 'local_day' %},
  b.timezone
  {%- endif %}
from active_keys k
left join message_stats m on m.bot_id = k.bot_id and m.period = k.period
left join reply_stats r on r.bot_id = k.bot_id and r.period = k.period
left join started s on s.bot_id = k.bot_id and s.period = k.period
left join ended e on e.bot_id = k.bot_id and e.period = k.period
left join handoffs h on h.bot_id = k.bot_id and h.period = k.period
left join first_responses f on f.bot_id = k.bot_id and f.period = k.period
left join {{ rel.bots }} b on b.bot_id = k.bot_id
{%- endmacro %}
