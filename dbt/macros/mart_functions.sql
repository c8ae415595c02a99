{#
  The seed's database functions, exact over any range because they read message-level facts.
  Created at the end of every dbt invocation once the marts they read exist (create or replace:
  idempotent). They run the same macros as the marts, so they cannot disagree with them.
#}
{% macro mart_relations() -%}
  {{ return({
      'messages': 'intermediate.int_messages',
      'replies': 'marts.fct_bot_replies',
      'conversations': 'staging.stg_botflow__conversations',
      'conversation_metrics': 'marts.conversation_metrics',
      'bots': 'staging.stg_botflow__bots',
      'api_events': 'staging.stg_botflow__api_events',
  }) }}
{%- endmacro %}

{% macro create_mart_functions() -%}
  {% if execute and target.type == 'postgres' %}{# Spark's marts are published into PostgreSQL, where these live #}
  {% set replies = adapter.get_relation(database=target.database, schema='marts', identifier='fct_bot_replies') %}
  {% set messages = adapter.get_relation(database=target.database, schema='intermediate', identifier='int_messages') %}
  {% set conversations = adapter.get_relation(database=target.database, schema='marts', identifier='conversation_metrics') %}
  {% if replies is not none and messages is not none and conversations is not none %}
  {% set rel = mart_relations() %}
  {# get_bot_performance_summary: the bot's UTC dates; _local: its organization's dates (its zone, repaired to
     UTC when unknown), as bot_performance_metrics_local dates them #}
  {% set summaries = [
      ('', "'UTC'", 'bot_performance_metrics columns over the UTC dates p_from_date..p_to_date (both included): '
                    'sums of counts, rates over the range totals, exact percentiles.'),
      ('_local', "(select o.timezone from staging.stg_botflow__bots b join staging.stg_botflow__organizations o"
                 " using (organization_id) where b.bot_id = p_bot_id)",
       "get_bot_performance_summary over the dates p_from_date..p_to_date (both included) in the zone of the "
       "bot''s organization (bot_performance_metrics_local''s dates)."),
  ] %}
  {% set summary_columns -%}
  bot_id uuid, organization_id uuid, total_conversations integer, total_messages integer,
  active_conversations integer, avg_response_time_ms integer, p50_response_time_ms integer,
  p95_response_time_ms integer, p99_response_time_ms integer, success_rate numeric(5, 2),
  error_rate numeric(5, 2), fallback_rate numeric(5, 2), handoff_rate numeric(7, 2),
  knowledge_base_hit_rate numeric(5, 2), avg_tokens_per_conversation integer, total_tokens_used bigint,
  total_cost_usd numeric(10, 2), cost_per_conversation_usd numeric(10, 6),
  avg_conversation_duration_secs integer, avg_messages_per_conversation numeric(5, 2),
  customer_satisfaction_avg numeric(3, 2), first_response_p50_ms bigint, first_response_p95_ms bigint,
  sla_met_rate numeric(5, 2)
  {%- endset %}
  {% call statement('botflow_mart_functions') %}
create or replace function marts.calculate_response_time_percentiles(
  p_bot_id uuid, p_from timestamptz, p_to timestamptz)
returns table (p50_response_time_ms integer, p95_response_time_ms integer, p99_response_time_ms integer)
language sql stable as $fn$
  select {{ metric('p50_response_time_ms') }}, {{ metric('p95_response_time_ms') }},
         {{ metric('p99_response_time_ms') }}
  from {{ rel.replies }}
  where bot_id = p_bot_id and created_at >= p_from and created_at < p_to
$fn$;
comment on function marts.calculate_response_time_percentiles(uuid, timestamptz, timestamptz) is
  'Exact p50/p95/p99 (percentile_cont, whole ms) of the bot''s replies created in [p_from, p_to).';

create or replace function marts.local_day_start(p_date date, p_zone text)
returns timestamptz language sql immutable strict as $fn$
  select {{ local_day_start('p_date', 'p_zone') }}
$fn$;
comment on function marts.local_day_start(date, text) is
  'The first instant whose date in zone p_zone is p_date (a midnight that occurs twice: its first occurrence): where bot_performance_metrics_local''s day p_date begins.';

{% for suffix, zone, description in summaries %}
drop function if exists marts.get_bot_performance_summary{{ suffix }}(uuid, date, date);
create function marts.get_bot_performance_summary{{ suffix }}(p_bot_id uuid, p_from_date date, p_to_date date)
returns table ({{ summary_columns }})
language sql stable as $fn$
{{ bot_performance_select(rel, local_day_start('p_from_date', zone), local_day_start('p_to_date + 1', zone),
                          period='range', bot_filter='bot_id = p_bot_id') }}
$fn$;
comment on function marts.get_bot_performance_summary{{ suffix }}(uuid, date, date) is '{{ description }}';
{% endfor %}

drop function if exists marts.get_organization_analytics_summary(uuid, timestamptz, timestamptz);
create function marts.get_organization_analytics_summary(
  p_organization_id uuid, p_from timestamptz, p_to timestamptz)
returns table (organization_id uuid, messages_sent integer, messages_received integer,
  conversations_started integer, conversations_ended integer, active_users integer, bots_active integer,
  most_active_bot_id uuid, api_calls_made integer, webhook_calls_received integer, tokens_used bigint,
  estimated_cost_usd numeric(12, 6))
language sql stable as $fn$
{{ organization_usage_select(rel, 'p_from', 'p_to', period='range', org_filter='organization_id = p_organization_id') }}
$fn$;
comment on function marts.get_organization_analytics_summary(uuid, timestamptz, timestamptz) is
  'usage_analytics columns over [p_from, p_to): counts summed, active_users and bots_active distinct over the whole range.';
  {% endcall %}
  {% endif %}
  {% endif %}
{%- endmacro %}
