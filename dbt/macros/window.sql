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

{# Generic tests' `where` config holds the tokens __window_start__ / __window_end__ (timestamptz) and
   __window_start_date__ / __window_end_date__ (their UTC dates), replaced here at run time. A
   `where` with env_var() would be rendered at parse time, and a manifest parsed once could then
   not serve the next window. Overrides dbt's get_where_subquery (root-project macros win). #}
{% macro get_where_subquery(relation) -%}
  {% set where = config.get('where', '') %}
  {% if where %}
    {% set where = where
        | replace('__window_start_date__', "(" ~ window_start() ~ " at time zone 'UTC')::date")
        | replace('__window_end_date__', "(" ~ window_end() ~ " at time zone 'UTC')::date")
        | replace('__window_start__', window_start())
        | replace('__window_end__', window_end()) %}
    {%- set filtered -%}
      (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- endset -%}
    {% do return(filtered) %}
  {%- else -%}
    {% do return(relation) %}
  {%- endif -%}
{%- endmacro %}
