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

{# Fails for rows whose p99 is above the slowest of their replies (`match`: which replies r of the
   model `replies` belong to the row m; it should use an index, e.g. conversation_id or bot_id +
   created_at). `replies` is a model's name, looked up at run time rather than ref()'d: a test with a
   second parent would also run with that parent's partitions (the hourly runs), before this model. #}
{% test p99_at_most_the_slowest_reply(model, replies, match) %}
select m.* from (select * from {{ model }}) m
where m.p99_response_time_ms > (select max(r.response_time_ms) from {{ relation_of(replies) }} r where {{ match }})
{% endtest %}


{# Fails for every (organization, hour) of the window that has messages in raw but no row in the
   model (an hourly mart that dropped an hour). #}
{% test every_active_hour_has_a_row(model, messages, conversations) %}
select distinct c.organization_id, date_trunc('hour', x.created_at, 'UTC') as hour
from {{ messages }} x join {{ conversations }} c on c.id = x.conversation_id
where {{ in_window('x.created_at') }}
except
select organization_id, hour from {{ model }}
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

{# Fails for business_hours rows that are not HH:MM, out of 00:00..24:00, or do not close after they open. #}
{% test business_hours_are_well_formed(model) %}
select * from {{ model }}
where opens !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
   or closes !~ '^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$'
   or closes <= opens
{% endtest %}

{# Fails for rows whose business time (the column) is longer than the wall-clock time `wall` of the same
   interval, or set while `wall` is not. #}
{% test business_time_at_most_wall_time(model, column_name, wall) %}
select * from {{ model }}
where ({{ column_name }} is not null) <> ({{ wall }} is not null) or {{ column_name }} > {{ wall }}
{% endtest %}
