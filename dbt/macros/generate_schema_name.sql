{# Models land in the schema their folder names (staging, intermediate, marts), not <target>_<schema>. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
