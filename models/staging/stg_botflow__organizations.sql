select id as organization_id, name as organization_name, timezone, created_at
from {{ source('raw', 'organizations') }}
