{# The partition window [window_start, window_end) that Dagster passes as vars. #}
{% macro window_start() -%}
  '{{ var("window_start") }}'::timestamptz
{%- endmacro %}

{% macro window_end() -%}
  '{{ var("window_end") }}'::timestamptz
{%- endmacro %}

{% macro in_window(column, lo=none, hi=none) -%}
  ({{ column }} >= {{ lo or window_start() }} and {{ column }} < {{ hi or window_end() }})
{%- endmacro %}

{# Pre-hook of every partitioned mart: remove what the window held before re-inserting it, so a
   window that now yields no row for a key leaves no stale row behind. Runs in the model's
   transaction, so readers never see the window half rebuilt. #}
{% macro delete_window(column, is_date=false) -%}
  {% if is_incremental() %}
    {% if is_date %}
    delete from {{ this }} where {{ column }} >= ({{ window_start() }} at time zone 'UTC')::date
      and {{ column }} < ({{ window_end() }} at time zone 'UTC')::date
    {% else %}
    delete from {{ this }} where {{ in_window(column) }}
    {% endif %}
  {% endif %}
{%- endmacro %}
