{# The partition window [window_start, window_end) that Dagster passes as the environment variables
   BOTFLOW_WINDOW_START / BOTFLOW_WINDOW_END; unset (full refresh, dbt by hand): all of history.
   Environment variables, not --vars: a change of --vars makes dbt re-parse the whole project on
   every invocation, while a changed env_var re-parses only the files that read it. #}
{% macro window_start() -%}
  '{{ env_var('BOTFLOW_WINDOW_START', '1970-01-01 00:00:00+00') }}'::timestamptz
{%- endmacro %}

{% macro window_end() -%}
  '{{ env_var('BOTFLOW_WINDOW_END', '2999-01-01 00:00:00+00') }}'::timestamptz
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
