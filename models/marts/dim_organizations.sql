{{ config(materialized='view', tags=['views']) }}
select organization_id, organization_name, timezone
from {{ ref('stg_botflow__organizations') }}
where {{ tenant_filter() }}
