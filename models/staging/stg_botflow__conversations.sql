select
  id as conversation_id,
  organization_id,
  bot_id,
  customer_phone_hash,
  customer_phone_last4,
  status,
  started_at,
  ended_at,
  handoff_at,
  customer_satisfaction,
  updated_at
from {{ source('raw', 'conversations') }}
