{# A metric of the registry (vars.botflow_metrics in dbt_project.yml): its one SQL definition, over
   `column` (default: the mart column it aggregates, e.g. response_time_ms; pass 'r.response_time_ms'
   for a prefixed one). The reports, Superset and the live tables read the same registry. #}
{% macro metric(name, column=none) -%}
  {%- set registry = var('botflow_metrics') -%}
  {%- if name not in registry -%}
    {{ exceptions.raise_compiler_error("metric '" ~ name ~ "' is not in vars.botflow_metrics (dbt_project.yml)") }}
  {%- endif -%}
  {{ metric_dialect(registry[name]['sql'] | replace('{x}', column or registry[name]['of'])) }}
{%- endmacro %}
