select id as bot_id, organization_id, name as bot_name, llm_model, created_at, updated_at
from {{ source('raw', 'bots') }}
