{# Rounding rules of the metric contract. PostgreSQL's numeric round() breaks ties away from zero. #}

{# A rate: 100 * numerator / denominator, 2 decimals, null when the denominator is 0. #}
{% macro rate(numerator, denominator) -%}
  round(100 * {{ to_numeric(numerator) }} / nullif({{ denominator }}, 0), 2)
{%- endmacro %}

{# A ratio rounded to the scale of its column type; null when the denominator is 0. #}
{% macro ratio(numerator, denominator, scale=0) -%}
  round({{ to_numeric(numerator) }} / nullif({{ denominator }}, 0), {{ scale }})
{%- endmacro %}

{# avg, p50, p95, p99 of response times, as the four response-time columns (macros/metrics.sql). #}
{% macro response_time_columns(column='response_time_ms') -%}
  {%- for name in ['avg_response_time_ms', 'p50_response_time_ms', 'p95_response_time_ms', 'p99_response_time_ms'] %}
  {{ metric(name, column) }} as {{ name }}{{ ',' if not loop.last }}
  {%- endfor %}
{%- endmacro %}

{# The period a row is grouped by: its UTC 'day' or 'hour', its 'local_day' (the date in the zone of the
   row's `timezone` column: bot_performance_metrics_local), or 'range' (one group for the whole range: the SQL
   functions). Shared by the marts and their functions (bot_performance, organization_usage). #}
{% macro period_of(column, period) -%}
  {%- if period == 'day' -%}{{ utc_date(column) }}
  {%- elif period == 'hour' -%}{{ utc_hour(column) }}
  {%- elif period == 'local_day' -%}{{ local_date(column, 'timezone') }}
  {%- else -%}0{%- endif -%}
{%- endmacro %}

{# The rows of a period's run over [lo, hi): those in the window; for 'local_day', those of the local days the
   window overlaps, whole (they begin up to a day before lo and end up to a day after hi: a local day lasts
   at most 25 hours, and zones are within 14 hours of UTC), in the zone of the row's `timezone` column. #}
{% macro in_period_window(column, lo, hi, period) -%}
  {%- if period == 'local_day' -%}
  ({{ in_window(column, '(' ~ lo ~ " - interval '2 days')", '(' ~ hi ~ " + interval '2 days')") }}
    and {{ in_local_days(local_date(column, 'timezone'), lo, hi) }})
  {%- else -%}{{ in_window(column, lo, hi) }}{%- endif -%}
{%- endmacro %}

{# `day` (a date in the zone of the row's `timezone` column) is one of the local days [lo, hi) overlaps: the
   rows a local-day run reads, and those it deletes and tests (window.sql, grain 'local_date'). #}
{% macro in_local_days(day, lo, hi) -%}
  ({{ day }} between {{ local_date(lo, 'timezone') }}
      and {{ local_date('(' ~ hi ~ " - interval '1 microsecond')", 'timezone') }})
{%- endmacro %}

