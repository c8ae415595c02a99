{{ config(
    meta={'window': {'column': 'hour'}},
    partition_by=['hour'],
    pre_hook="{{ delete_window() }}",
    indexes=[{'columns': ['organization_id', 'hour'], 'unique': true}, {'columns': ['hour']}],
    tags=['hourly'],
) }}
-- One row per organization and UTC hour with any activity (a message, a conversation started
-- or ended, or an api_event).
{{ organization_usage_select({
    'messages': ref('int_messages'),
    'replies': ref('fct_bot_replies'),
    'conversations': ref('stg_botflow__conversations'),
    'api_events': ref('stg_botflow__api_events'),
}, window_start(), window_end(), period='hour') }}
