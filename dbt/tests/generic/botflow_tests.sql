{# Fails for rows where the column lies outside [min_value, max_value] (nulls pass). #}
{% test within_range(model, column_name, min_value=none, max_value=none) %}
select * from {{ model }}
where {{ column_name }} is not null and (
  {% if min_value is not none %}{{ column_name }} < {{ min_value }}{% else %}false{% endif %}
  or {% if max_value is not none %}{{ column_name }} > {{ max_value }}{% else %}false{% endif %})
{% endtest %}

{# Fails for rows whose response-time percentiles are out of order (p50 <= p95 <= p99). #}
{% test percentiles_ordered(model) %}
select * from {{ model }}
where p50_response_time_ms > p95_response_time_ms or p95_response_time_ms > p99_response_time_ms
{% endtest %}

{# Fails for rows where total_messages <> user_messages + bot_messages. #}
{% test message_totals_add_up(model) %}
select * from {{ model }} where total_messages <> user_messages + bot_messages
{% endtest %}

{# Fails for duplicate combinations of the columns. #}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) from {{ model }}
group by {{ columns | join(', ') }} having count(*) > 1
{% endtest %}
