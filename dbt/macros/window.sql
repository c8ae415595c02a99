{# The partition window [window_start, window_end) that Dagster passes as the environment variables
   BOTFLOW_WINDOW_START / BOTFLOW_WINDOW_END; unset (full refresh, dbt by hand): all of history.
   Environment variables, not --vars: a change of --vars makes dbt re-parse the whole project on
   every invocation, while a changed env_var re-parses only the files that read it. #}
{% macro window_start() -%}
  {{ timestamp_literal(env_var('BOTFLOW_WINDOW_START', '1970-01-01 00:00:00+00')) }}
{%- endmacro %}

{% macro window_end() -%}
  {{ timestamp_literal(env_var('BOTFLOW_WINDOW_END', '2999-01-01 00:00:00+00')) }}
{%- endmacro %}

{% macro in_window(column, lo=none, hi=none) -%}
  ({{ column }} >= {{ lo or window_start() }} and {{ column }} < {{ hi or window_end() }})
{%- endmacro %}

{# The window filter on `column` (grain 'date': a date column, compared with the window's UTC dates;
   'local_date': a date in the zone of the row's `timezone` column, the local dates the window overlaps). #}
{% macro window_filter(column, grain=none) -%}
  {% if grain == 'local_date' -%}
    {{ in_local_days(column, window_start(), window_end()) }}
  {%- elif grain == 'date' -%}
    ({{ column }} >= {{ utc_date(window_start()) }} and {{ column }} < {{ utc_date(window_end()) }})
  {%- else -%}
    {{ in_window(column) }}
  {%- endif %}
{%- endmacro %}

{# A node's window: its config meta.window (set in each partitioned mart's config: the column its
   partitions are cut by, which decides its rebuild and its tests' scope), {'column': ..., 'grain': 'date' (optional)}; none if unpartitioned. #}
{% macro node_window(node) -%}
  {% do return((node.config.meta or {}).get('window')) %}
{%- endmacro %}

{# Pre-hook of every partitioned mart: remove what the window held before re-inserting it, so a
   window that now yields no row for a key leaves no stale row behind. Runs in the model's
   transaction, so readers never see the window half rebuilt. The column is the model's meta.window. #}
{% macro delete_window() -%}{{ adapter.dispatch('delete_window', 'botflow')() }}{%- endmacro %}

{% macro default__delete_window() -%}
  {% if is_incremental() %}
    {% set window = node_window(model) %}
    delete from {{ this }} where {{ window_filter(window.column, window.get('grain')) }}
  {% endif %}
{%- endmacro %}

{# On Spark the marts are Parquet tables partitioned by an hour or a date (their config's partition_by),
   rewritten by `insert overwrite` of the partitions the window yields: the window's other partitions are
   dropped first, so that a key the window no longer yields leaves no stale row (as the delete above).
   A full refresh (no window) empties the table. #}
{% macro spark__delete_window() -%}
  {% if is_incremental() %}
    {% set column = config.get('partition_by') %}{% set column = column[0] if column is not string else column %}
    {% set start = env_var('BOTFLOW_WINDOW_START', '') %}{% set end = env_var('BOTFLOW_WINDOW_END', '') %}
    {% if not start or not end %}
      truncate table {{ this }}
    {% else %}
      {% set datetime = modules.datetime.datetime %}
      {% set step = modules.datetime.timedelta(hours=1) if node_window(model).get('grain') != 'date'
                    else modules.datetime.timedelta(days=1) %}
      {% set ns = namespace(at=datetime.fromisoformat(start), values=[]) %}
      {% set stop = datetime.fromisoformat(end) %}
      {% for _ in range(100000) if ns.at < stop %}
        {% do ns.values.append(ns.at) %}{% set ns.at = ns.at + step %}
      {% endfor %}
      alter table {{ this }} drop if exists
      {% for at in ns.values -%}
        partition ({{ column }} = {{ "date'" ~ at.strftime('%Y-%m-%d') ~ "'" if step.days else "timestamp'" ~ at.strftime('%Y-%m-%d %H:%M:%S') ~ "'" }}){{ ',' if not loop.last }}
      {%- endfor %}
    {% endif %}
  {% endif %}
{%- endmacro %}

{# The `where` of the data test being run. dbt_project.yml gives every test `where: __window__`:
   here it becomes the tested model's window filter (read from the manifest at run time, so one
   parsed manifest serves every window), or nothing for a model without a window. A test may still
   write its own `where`. Overrides dbt's get_where_subquery (root-project macros win). #}
{% macro tested_window(relation) -%}
  {% if execute %}
    {% for unique_id in model.depends_on.nodes %}
      {% set node = graph.nodes.get(unique_id) %}
      {% if node and node.resource_type == 'model' and node.alias == relation.identifier %}
        {% set window = node_window(node) %}
        {% if window %}{% do return(window_filter(window.column, window.get('grain'))) %}{% endif %}
      {% endif %}
    {% endfor %}
  {% endif %}
  {% do return('') %}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
  {% set where = config.get('where', '') %}
  {% if where == '__window__' %}
    {% set where = tested_window(relation) %}
  {% endif %}
  {% if where %}
    {%- set filtered -%}
      (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- endset -%}
    {% do return(filtered) %}
  {%- else -%}
    {% do return(relation) %}
  {%- endif -%}
{%- endmacro %}
