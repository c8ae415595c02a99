{# The bucket of `value` (>= 0) among ascending `edges` (the first 0): its lower edge, or with upper=true its
   upper edge (null for the last, open bucket). One CASE, the same text on both engines. #}
{% macro histogram_bucket(value, edges, upper=false) -%}
  case
  {%- for i in range(edges | length - 1, 0, -1) %}
    when {{ value }} >= {{ edges[i] }} then {{ (edges[i + 1] if i + 1 < edges | length else 'null') if upper else edges[i] }}
  {%- endfor %}
    else {{ edges[1] if upper else edges[0] }}
  end
{%- endmacro %}
