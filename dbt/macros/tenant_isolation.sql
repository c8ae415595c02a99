{#
  Tenant isolation (dagster_project/core/tenancy.py, docs/tenant-isolation.md): every mart becomes readable
  by the tenant roles only through security.isolate(), which gives a table row-level security with the
  tenant_isolation policy, or checks that a view filters with tenant_filter() below. A post-hook
  of every model in marts/ (dbt_project.yml), inside the model's transaction: a rebuilt mart is never
  readable without its policy.
#}
{% macro tenant_isolation() -%}{{ adapter.dispatch('tenant_isolation', 'botflow')() }}{%- endmacro %}
{% macro default__tenant_isolation() -%}
  select security.isolate('{{ this }}'::regclass)
{%- endmacro %}
{# Spark has no tenant roles: its marts are read by the publisher only, which writes into the isolated
   PostgreSQL marts (dagster_project/transform/spark/publish.py). #}
{% macro spark__tenant_isolation() -%}{%- endmacro %}

{#
  The filter of a mart view (dims): the current role's organizations only. The same predicate as the
  tables' policy (core/tenancy.tenant_predicate; a test compares them): its two scalar sub-selects run
  once per query. A function call here would run per row, and a dim joined to a fact is re-scanned per
  fact row (1.3 s for 3,000 replies, bench/chart_latency.py).
#}
{% macro tenant_filter(column='organization_id') -%}
  {{ adapter.dispatch('tenant_filter', 'botflow')(column) }}
{%- endmacro %}
{% macro spark__tenant_filter(column) -%}true{%- endmacro %}
{% macro default__tenant_filter(column) -%}
  ((select security.sees_all_organizations()) or {{ column }} = any ((select security.visible_organizations())::uuid[]))
{%- endmacro %}

{# Let the scoped export role (core/tenancy.organization_scope) read `columns` of this model, and nothing else
   of its schema. No roles on Spark. #}
{% macro grant_scoped_reader(columns) -%}{{ adapter.dispatch('grant_scoped_reader', 'botflow')(columns) }}{%- endmacro %}
{% macro default__grant_scoped_reader(columns) -%}
  grant usage on schema {{ this.schema }} to botflow_scoped_reader;
  grant select ({{ columns }}) on {{ this }} to botflow_scoped_reader
{%- endmacro %}
{% macro spark__grant_scoped_reader(columns) -%}{%- endmacro %}
