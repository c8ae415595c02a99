-- Every valid message with its conversation's bot and organization, and the LLM model that
-- priced it (the message's own, else the bot's default). Messages of a conversation that is no
-- longer valid drop out here.
select
  m.message_id,
  m.conversation_id,
  c.bot_id,
  c.organization_id,
  m.direction,
  m.created_at,
  m.response_time_ms,
  m.outcome,
  m.knowledge_base_hit,
  coalesce(m.llm_model, b.llm_model) as llm_model,
  m.prompt_tokens,
  m.completion_tokens,
  m.tokens
from {{ ref('stg_botflow__messages') }} m
join {{ ref('stg_botflow__conversations') }} c on c.conversation_id = m.conversation_id
left join {{ ref('stg_botflow__bots') }} b on b.bot_id = c.bot_id
