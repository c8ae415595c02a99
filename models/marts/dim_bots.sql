{{ config(materialized='view', tags=['views']) }}
{# Names for the marts' ids, so that dashboards can filter and group by bot and organization without
   reading staging (Superset's role reads only the marts and live schemas). #}
select b.bot_id, b.bot_name, b.llm_model, b.organization_id, o.organization_name
from {{ ref('stg_botflow__bots') }} b
join {{ ref('stg_botflow__organizations') }} o using (organization_id)
where {{ tenant_filter('b.organization_id') }}
