{#
  Tenant isolation (dagster_project/core/tenancy.py, docs/tenant-isolation.md): every mart becomes readable
  by the tenant roles only through security.isolate(), which gives a table row-level security with the
  tenant_isolation policy, or checks that a view filters with security.organization_visible(). A post-hook
  of every model in marts/ (dbt_project.yml), inside the model's transaction: a rebuilt mart is never
  readable without its policy.
#}
{% macro tenant_isolation() -%}
  select security.isolate('{{ this }}'::regclass)
{%- endmacro %}

{# The filter of a mart view (dims): the current role's organizations only. #}
{% macro tenant_filter(column='organization_id') -%}
  security.organization_visible({{ column }})
{%- endmacro %}
