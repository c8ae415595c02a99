select
  id as message_id,
  conversation_id,
  direction,
  created_at,
  response_time_ms,
  outcome,
  knowledge_base_hit,
  llm_model,
  prompt_tokens,
  completion_tokens,
  prompt_tokens + completion_tokens as tokens,
  updated_at
from {{ source('raw', 'messages') }}
