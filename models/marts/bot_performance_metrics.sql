{{ config(
    meta={'window': {'column': 'date', 'grain': 'date'}},
    partition_by=['date'],
    pre_hook="{{ delete_window() }}",
    indexes=[{'columns': ['bot_id', 'date'], 'unique': true}, {'columns': ['date']}],
    tags=['daily'],
) }}
-- One row per bot and UTC date with any activity (a message, or a conversation started or ended).
{{ bot_performance_select({
    'messages': ref('int_messages'),
    'replies': ref('fct_bot_replies'),
    'conversations': ref('stg_botflow__conversations'),
    'conversation_metrics': ref('conversation_metrics'),
    'bots': ref('stg_botflow__bots'),
}, window_start(), window_end(), period='day') }}
