{# Rounding rules of the metric contract. PostgreSQL's numeric round() breaks ties away from zero. #}

{# A rate: 100 * numerator / denominator, 2 decimals, null when the denominator is 0. #}
{% macro rate(numerator, denominator) -%}
  round(100 * ({{ numerator }})::numeric / nullif({{ denominator }}, 0), 2)
{%- endmacro %}

{# A ratio rounded to the scale of its column type; null when the denominator is 0. #}
{% macro ratio(numerator, denominator, scale=0) -%}
  round(({{ numerator }})::numeric / nullif({{ denominator }}, 0), {{ scale }})
{%- endmacro %}

{# Whole milliseconds, halves away from zero. #}
{% macro whole_ms(expression) -%}
  round(({{ expression }})::numeric)::integer
{%- endmacro %}

{# Continuous percentile (linear interpolation), exactly percentile_cont, rounded to whole ms. #}
{% macro ms_percentile(fraction, column) -%}
  {{ whole_ms("percentile_cont(" ~ fraction ~ ") within group (order by " ~ column ~ ")") }}
{%- endmacro %}

{# avg, p50, p95, p99 of response times, as the four response-time columns. #}
{% macro response_time_columns(column='response_time_ms') -%}
  {{ whole_ms("avg(" ~ column ~ ")") }} as avg_response_time_ms,
  {{ ms_percentile(0.5, column) }} as p50_response_time_ms,
  {{ ms_percentile(0.95, column) }} as p95_response_time_ms,
  {{ ms_percentile(0.99, column) }} as p99_response_time_ms
{%- endmacro %}

{# The UTC date or hour a timestamp falls in. #}
{% macro utc_date(column) -%}
  ({{ column }} at time zone 'UTC')::date
{%- endmacro %}

{% macro utc_hour(column) -%}
  date_trunc('hour', {{ column }}, 'UTC')
{%- endmacro %}

{# A stable uuid key derived from the parts that identify a row. #}
{% macro stable_id(prefix, parts) -%}
  md5('{{ prefix }}' {% for p in parts %} || ':' || {{ p }}::text {% endfor %})::uuid
{%- endmacro %}
