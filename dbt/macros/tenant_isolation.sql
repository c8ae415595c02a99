{#
  Tenant isolation (dagster_project/core/tenancy.py, docs/tenant-isolation.md): every mart becomes readable
  by the tenant roles only through security.isolate(), which gives a table row-level security with the
  tenant_isolation policy, or checks that a view filters with tenant_filter() below. A post-hook
  of every model in marts/ (dbt_project.yml), inside the model's transaction: a rebuilt mart is never
  readable without its policy.
#}
{% macro tenant_isolation() -%}
  select security.isolate('{{ this }}'::regclass)
{%- endmacro %}

{#
  The filter of a mart view (dims): the current role's organizations only. The same predicate as the
  tables' policy (core/tenancy.tenant_predicate; a test compares them): its two scalar sub-selects run
  once per query. A function call here would run per row, and a dim joined to a fact is re-scanned per
  fact row (1.3 s for 3,000 replies, bench/chart_latency.py).
#}
{% macro tenant_filter(column='organization_id') -%}
  ((select security.sees_all_organizations()) or {{ column }} = any ((select security.visible_organizations())::uuid[]))
{%- endmacro %}
