{#
  Every difference between the two engines the models run on (docs/spark.md), as adapter.dispatch
  macros: `default__` is PostgreSQL's SQL (the serving database, and the dialect of the metric registry),
  `spark__` is Spark SQL's. The models are written once; no model has an engine-specific copy.
  On Spark the session time zone is UTC (dagster_project/transform/spark/conf.py), so a timestamp's UTC date or
  hour is its date or hour.
#}

{# A timestamp literal from an ISO text with its offset (the window bounds). #}
{% macro timestamp_literal(text) -%}{{ adapter.dispatch('timestamp_literal', 'botflow')(text) }}{%- endmacro %}
{% macro default__timestamp_literal(text) -%}'{{ text }}'::timestamptz{%- endmacro %}
{% macro spark__timestamp_literal(text) -%}cast('{{ text }}' as timestamp){%- endmacro %}

{# The UTC date or hour a timestamp falls in. #}
{% macro utc_date(column) -%}{{ adapter.dispatch('utc_date', 'botflow')(column) }}{%- endmacro %}
{% macro default__utc_date(column) -%}({{ column }} at time zone 'UTC')::date{%- endmacro %}
{% macro spark__utc_date(column) -%}to_date({{ column }}){%- endmacro %}

{% macro utc_hour(column) -%}{{ adapter.dispatch('utc_hour', 'botflow')(column) }}{%- endmacro %}
{% macro default__utc_hour(column) -%}date_trunc('hour', {{ column }}, 'UTC'){%- endmacro %}
{% macro spark__utc_hour(column) -%}date_trunc('HOUR', {{ column }}){%- endmacro %}

{# A UTC timestamp as 'YYYY-MM-DD HH:MI' text (part of a stable key). #}
{% macro minute_text(column) -%}{{ adapter.dispatch('minute_text', 'botflow')(column) }}{%- endmacro %}
{% macro default__minute_text(column) -%}to_char({{ column }} at time zone 'UTC', 'YYYY-MM-DD HH24:MI'){%- endmacro %}
{% macro spark__minute_text(column) -%}date_format({{ column }}, 'yyyy-MM-dd HH:mm'){%- endmacro %}

{# Whole seconds / milliseconds from `earlier` to `later`, truncated toward zero. #}
{% macro whole_seconds_between(later, earlier) -%}
  {{ adapter.dispatch('whole_seconds_between', 'botflow')(later, earlier) }}
{%- endmacro %}
{% macro default__whole_seconds_between(later, earlier) -%}trunc(extract(epoch from {{ later }} - {{ earlier }})){%- endmacro %}
{% macro spark__whole_seconds_between(later, earlier) -%}((unix_micros({{ later }}) - unix_micros({{ earlier }})) div 1000000){%- endmacro %}

{% macro whole_ms_between(later, earlier) -%}{{ adapter.dispatch('whole_ms_between', 'botflow')(later, earlier) }}{%- endmacro %}
{% macro default__whole_ms_between(later, earlier) -%}trunc(extract(epoch from {{ later }} - {{ earlier }}) * 1000){%- endmacro %}
{% macro spark__whole_ms_between(later, earlier) -%}((unix_micros({{ later }}) - unix_micros({{ earlier }})) div 1000){%- endmacro %}

{# An exact decimal of `expr`, for divisions that are then rounded (PostgreSQL's numeric has no scale
   limit; Spark's bare `numeric` is decimal(10, 0), so Spark gets an explicit scale). #}
{% macro to_numeric(expr) -%}{{ adapter.dispatch('to_numeric', 'botflow')(expr) }}{%- endmacro %}
{% macro default__to_numeric(expr) -%}({{ expr }})::numeric{%- endmacro %}
{% macro spark__to_numeric(expr) -%}cast({{ expr }} as decimal(38, 9)){%- endmacro %}

{# A metric of the registry in this engine's dialect: the registry is PostgreSQL SQL (reports and Superset
   read it too); on Spark its bare `::numeric` casts become decimals with a scale, as in to_numeric. #}
{% macro metric_dialect(sql) -%}{{ adapter.dispatch('metric_dialect', 'botflow')(sql) }}{%- endmacro %}
{% macro default__metric_dialect(sql) -%}{{ sql }}{%- endmacro %}
{% macro spark__metric_dialect(sql) -%}{{ sql | replace('::numeric)', '::decimal(38, 9))') }}{%- endmacro %}

{# A stable uuid key derived from the parts that identify a row (Spark has no uuid type: the same
   md5, written as a uuid's text). #}
{% macro stable_id(prefix, parts) -%}{{ adapter.dispatch('stable_id', 'botflow')(prefix, parts) }}{%- endmacro %}
{% macro default__stable_id(prefix, parts) -%}
  md5('{{ prefix }}' {% for p in parts %} || ':' || {{ p }}::text {% endfor %})::uuid
{%- endmacro %}
{% macro spark__stable_id(prefix, parts) -%}
  regexp_replace(md5(concat_ws(':', '{{ prefix }}' {% for p in parts %}, cast({{ p }} as string){% endfor %})),
    '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '$1-$2-$3-$4-$5')
{%- endmacro %}

{# The window frame of the rows strictly before the current row's `column` (rows at the same instant
   excluded), for a running max over earlier rows. #}
{% macro strictly_earlier(column) -%}{{ adapter.dispatch('strictly_earlier', 'botflow')(column) }}{%- endmacro %}
{% macro default__strictly_earlier(column) -%}
  order by {{ column }} range between unbounded preceding and current row exclude group
{%- endmacro %}
{% macro spark__strictly_earlier(column) -%}
  order by unix_micros({{ column }}) range between unbounded preceding and 1 preceding
{%- endmacro %}

{# A column only the Spark tables carry: the date a daily mart is partitioned by, when the mart has no
   date column of its own (conversation_metrics: started_at's date). Published marts leave it out. #}
{% macro partition_date_column(column, name) -%}
  {{ adapter.dispatch('partition_date_column', 'botflow')(column, name) }}
{%- endmacro %}
{% macro default__partition_date_column(column, name) -%}{%- endmacro %}
{% macro spark__partition_date_column(column, name) -%}, {{ utc_date(column) }} as {{ name }}{%- endmacro %}

-- The first outbound message after a conversation's first inbound one, as `f.first_reply_at`, joined to the
-- conversations `c` of the window (`m.first_inbound_at` from the messages lookup). PostgreSQL: a LATERAL lookup
-- by the conversation's index. Spark cannot decorrelate a lookup whose predicate compares with another lateral's
-- column efficiently (at 112k conversations it ran for more than 9 minutes in one hash aggregate): a join of
-- the window's conversations' outbound messages to their first inbound one, grouped (8 s at 112k).
{% macro first_reply_lookup(messages, conversations) -%}
{{ adapter.dispatch('first_reply_lookup', 'botflow')(messages, conversations) }}
{%- endmacro %}
{% macro default__first_reply_lookup(messages, conversations) -%}
  cross join lateral (
      select min(x.created_at) as first_reply_at
      from {{ messages }} x
      where x.conversation_id = c.conversation_id and x.direction = 'outbound' and x.created_at > m.first_inbound_at
  ) f
{%- endmacro %}
{% macro spark__first_reply_lookup(messages, conversations) -%}
  left join (
      select x.conversation_id, min(x.created_at) as first_reply_at
      from {{ messages }} x
      join (
          select i.conversation_id, min(i.created_at) as first_inbound_at
          from {{ messages }} i
          join {{ conversations }} w on w.conversation_id = i.conversation_id
          where i.direction = 'inbound'
          group by i.conversation_id
      ) fi on fi.conversation_id = x.conversation_id and x.created_at > fi.first_inbound_at
      where x.direction = 'outbound'
      group by x.conversation_id
  ) f on f.conversation_id = c.conversation_id
{%- endmacro %}
