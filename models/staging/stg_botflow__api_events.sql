select id as api_event_id, organization_id, bot_id, kind, occurred_at
from {{ source('raw', 'api_events') }}
