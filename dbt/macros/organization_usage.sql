{#
  usage_analytics over [lo, hi), one row per organization and period.
  period='hour': per UTC hour (the mart); period='range': one row for the whole range
  (marts.get_organization_analytics_summary: distinct counts over the whole range).
#}
{% macro organization_usage_select(rel, lo, hi, period='hour', org_filter='true') -%}
with messages_in_range as (
    select organization_id, {{ period_of('created_at', period) }} as period, bot_id,
      conversation_id, direction, tokens
    from {{ rel.messages }}
    where {{ in_window('created_at', lo, hi) }} and {{ org_filter }}
),
message_stats as (
    select organization_id, period,
      count(*) filter (where direction = 'outbound') as messages_sent,
      count(*) filter (where direction = 'inbound') as messages_received,
      count(distinct bot_id) as bots_active,
      sum(tokens) as tokens_used
    from messages_in_range group by 1, 2
),
active_users as (
    select m.organization_id, m.period, count(distinct c.customer_phone_hash) as active_users
    from messages_in_range m
    join {{ rel.conversations }} c on c.conversation_id = m.conversation_id
    where m.direction = 'inbound'
    group by 1, 2
),
most_active_bot as (
    select organization_id, period, bot_id
    from (select organization_id, period, bot_id,
            row_number() over (partition by organization_id, period order by count(*) desc, bot_id) as bot_rank
          from messages_in_range group by 1, 2, 3) per_bot
    where bot_rank = 1
),
reply_cost as (
    select organization_id, {{ period_of('created_at', period) }} as period, sum(cost_usd) as cost
    from {{ rel.replies }}
    where {{ in_window('created_at', lo, hi) }} and {{ org_filter }}
    group by 1, 2
),
started as (
    select organization_id, {{ period_of('started_at', period) }} as period, count(*) as started
    from {{ rel.conversations }}
    where {{ in_window('started_at', lo, hi) }} and {{ org_filter }}
    group by 1, 2
),
ended as (
    select organization_id, {{ period_of('ended_at', period) }} as period, count(*) as ended
    from {{ rel.conversations }}
    where {{ in_window('ended_at', lo, hi) }} and {{ org_filter }}
    group by 1, 2
),
api as (
    select organization_id, {{ period_of('occurred_at', period) }} as period,
      count(*) filter (where kind = 'api_call') as api_calls,
      count(*) filter (where kind = 'webhook_received') as webhooks
    from {{ rel.api_events }}
    where {{ in_window('occurred_at', lo, hi) }} and {{ org_filter }}
    group by 1, 2
),
active_keys as (
    select organization_id, period from message_stats
    union select organization_id, period from started
    union select organization_id, period from ended
    union select organization_id, period from api
)
select
  {%- if period == 'hour' %}
  {{ stable_id('usage_analytics', ['k.organization_id', minute_text('k.period')]) }} as id,
  {%- endif %}
  k.organization_id,
  {%- if period == 'hour' %}
  k.period as hour,
  {%- endif %}
  coalesce(m.messages_sent, 0)::integer as messages_sent,
  coalesce(m.messages_received, 0)::integer as messages_received,
  coalesce(s.started, 0)::integer as conversations_started,
  coalesce(e.ended, 0)::integer as conversations_ended,
  coalesce(u.active_users, 0)::integer as active_users,
  coalesce(m.bots_active, 0)::integer as bots_active,
  b.bot_id as most_active_bot_id,
  coalesce(a.api_calls, 0)::integer as api_calls_made,
  coalesce(a.webhooks, 0)::integer as webhook_calls_received,
  coalesce(m.tokens_used, 0)::bigint as tokens_used,
  round(coalesce(c.cost, 0), 6)::numeric(12, 6) as estimated_cost_usd
from active_keys k
left join message_stats m on m.organization_id = k.organization_id and m.period = k.period
left join active_users u on u.organization_id = k.organization_id and u.period = k.period
left join most_active_bot b on b.organization_id = k.organization_id and b.period = k.period
left join reply_cost c on c.organization_id = k.organization_id and c.period = k.period
left join started s on s.organization_id = k.organization_id and s.period = k.period
left join ended e on e.organization_id = k.organization_id and e.period = k.period
left join api a on a.organization_id = k.organization_id and a.period = k.period
{%- endmacro %}
