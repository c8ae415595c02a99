{# The relation of a model of this project, by name, at run time (no dependency at parse time). #}
{% macro relation_of(model_name) -%}
  {%- if not execute -%}{%- do return(model_name) -%}{%- endif -%}
  {%- set node = graph.nodes['model.' ~ project_name ~ '.' ~ model_name] -%}
  {%- do return(api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias)) -%}
{%- endmacro %}
