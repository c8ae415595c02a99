{{ config(
    meta={'window': {'column': 'date', 'grain': 'local_date'}, 'built_in': 'warehouse'},
    partition_by=['date'],
    pre_hook="{{ delete_window() }}",
    indexes=[{'columns': ['bot_id', 'date'], 'unique': true}, {'columns': ['date']}],
    tags=['daily'],
) }}
-- One row per bot and date in its organization's zone (organizations.timezone, repaired to UTC when unknown)
-- with any activity: bot_performance_metrics by local day, plus the zone. A local day lasts 23, 24 or 25
-- hours and can start at any minute of a UTC hour (+05:30). The run of UTC days [lo, hi) rebuilds, whole,
-- every local day that overlaps them (its rows begin up to 14 hours before lo or end after hi): any order of
-- partitions gives the same rows. Built in the warehouse on both engines (docs/service-metrics.md).
{%- set zones = ref('stg_botflow__organizations') %}
{% set with_zone -%}
(select x.*, o.timezone from {relation} x join {{ zones }} o on o.organization_id = x.organization_id)
{%- endset %}
{{ bot_performance_select({
    'messages': with_zone.replace('{relation}', ref('int_messages') | string) ~ ' messages',
    'replies': with_zone.replace('{relation}', ref('fct_bot_replies') | string) ~ ' replies',
    'conversations': with_zone.replace('{relation}', ref('stg_botflow__conversations') | string) ~ ' conversations',
    'conversation_metrics': with_zone.replace('{relation}', ref('conversation_metrics') | string) ~ ' measured',
    'bots': with_zone.replace('{relation}', ref('stg_botflow__bots') | string),
}, window_start(), window_end(), period='local_day') }}
