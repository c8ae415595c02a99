{#
  Exports scoped to one organization (dagster_project/core/tenancy.organization_scope) read the masked phone
  from here, joined to rows of conversation_metrics that row-level security already confined: the scoped
  role may read these two columns only, and no other staging model.
#}
{{ config(post_hook=["{{ grant_scoped_reader('conversation_id, customer_phone_last4') }}"]) }}
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
