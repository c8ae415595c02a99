{{ config(
    meta={'window': {'column': 'hour'}},
    partition_by=['hour'],
    pre_hook="{{ delete_window() }}",
    indexes=[{'columns': ['bot_id', 'hour', 'bucket_lower_ms'], 'unique': true}, {'columns': ['hour']}],
    tags=['hourly'],
) }}
-- One row per bot, UTC hour and response-time bucket with at least one reply that has a response time.
-- Buckets are [lower, upper) in ms, the last one open (var response_time_buckets_ms): summing the rows of
-- any hours gives those hours' distribution exactly.
{%- set edges = var('response_time_buckets_ms') %}
select
  r.bot_id,
  r.organization_id,
  {{ utc_hour('r.created_at') }} as hour,
  {{ histogram_bucket('r.response_time_ms', edges) }}::integer as bucket_lower_ms,
  {{ histogram_bucket('r.response_time_ms', edges, upper=true) }}::integer as bucket_upper_ms,
  count(*)::integer as replies
from {{ ref('fct_bot_replies') }} r
where {{ in_window('r.created_at') }} and r.response_time_ms is not null
group by 1, 2, 3, 4, 5
