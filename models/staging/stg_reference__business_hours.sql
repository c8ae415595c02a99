-- The organizations' opening hours (seed business_hours), with opens and closes as minutes of the local
-- day (24:00 = 1440), as business_time() reads them.
select
  organization_id,
  iso_weekday,
  opens,
  closes,
  cast(substr(opens, 1, 2) as integer) * 60 + cast(substr(opens, 4, 2) as integer) as opens_minute,
  cast(substr(closes, 1, 2) as integer) * 60 + cast(substr(closes, 4, 2) as integer) as closes_minute
from {{ ref('business_hours') }}
