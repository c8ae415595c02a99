{{ config(
    meta={'window': {'column': 'created_at'}},
    partition_by=['reply_hour'],
    pre_hook="{{ delete_window() }}",
    indexes=[
      {'columns': ['created_at']},
      {'columns': ['bot_id', 'created_at']},
      {'columns': ['organization_id', 'created_at']},
      {'columns': ['conversation_id']},
    ],
    tags=['hourly'],
) }}
-- One row per bot reply (outbound message) created in the window, with its response time and
-- cost. Exact percentiles of any range are computed from this table.
with window_conversations as (
    select distinct conversation_id
    from {{ ref('int_messages') }}
    where direction = 'outbound' and {{ in_window('created_at') }}
),
conversation_messages as (
    -- the replies' conversations up to the window's end: the latest earlier inbound message of
    -- a reply may lie before the window
    select m.*
    from {{ ref('int_messages') }} m
    join window_conversations w on w.conversation_id = m.conversation_id
    where m.created_at < {{ window_end() }}
),
prices as (
    -- each price applies from its effective_from until the model's next one
    select model, effective_from, prompt_price_per_1k, completion_price_per_1k,
      lead(effective_from) over (partition by model order by effective_from) as effective_until
    from {{ ref('llm_prices') }}
),
sequenced as (
    select *,
      max(created_at) filter (where direction = 'inbound') over (
        partition by conversation_id {{ strictly_earlier('created_at') }}
      ) as previous_inbound_at  -- strictly earlier: messages at the same instant are excluded
    from conversation_messages
)
select
  s.message_id,
  s.conversation_id,
  s.bot_id,
  s.organization_id,
  s.created_at,
  {{ utc_date('s.created_at') }} as reply_date,
  {{ utc_hour('s.created_at') }} as reply_hour,
  coalesce(
    s.response_time_ms::bigint,
    {{ whole_ms_between('s.created_at', 's.previous_inbound_at') }}::bigint
  ) as response_time_ms,
  case when s.response_time_ms is not null then 'app'
       when s.previous_inbound_at is not null then 'computed' end as response_time_source,
  s.outcome,
  s.knowledge_base_hit,
  s.llm_model,
  s.prompt_tokens,
  s.completion_tokens,
  s.tokens,
  coalesce(
    (s.prompt_tokens * p.prompt_price_per_1k + s.completion_tokens * p.completion_price_per_1k) * 0.001, 0
  ) as cost_usd,
  p.model is not null as is_priced
from sequenced s
left join prices p
  on p.model = s.llm_model and p.effective_from <= s.created_at
  and (p.effective_until is null or s.created_at < p.effective_until)
where s.direction = 'outbound' and {{ in_window('s.created_at') }}
