{#
  Business time (docs/contract/metrics.md "Service metrics (second edition)"; docs/service-metrics.md):
  the part of an interval [a, b) that falls in an organization's open intervals
  [(d + opens) at time zone tz, (d + closes) at time zone tz) over its local dates d with a business_hours
  row for d's weekday that are not holidays. An organization with no business_hours row is open all the
  time. The engine differences are the dispatch macros at the end (engine.sql's convention).
#}

{#
  One row per (key, span) of `spans` (a relation or CTE name with columns key, span, organization_id,
  span_start, span_end, span_start <= span_end): business_us, the business microseconds of
  [span_start, span_end). Each span is cut at the local dates it covers (an equality join on
  organization and date, on both engines), so its cost grows with its length in days, not with history.
#}
{% macro business_time(spans) -%}
with span_zones as (
    select s.key, s.span, s.organization_id, s.span_start, s.span_end, o.timezone
    from {{ spans }} s
    join {{ ref('stg_botflow__organizations') }} o on o.organization_id = s.organization_id
),
scheduled as (
    select distinct organization_id from {{ ref('stg_reference__business_hours') }}
),
span_days as (
    select z.key, z.span, z.organization_id, z.span_start, z.span_end, z.timezone,
      {{ each_date(local_date('z.span_start', 'z.timezone'), local_date('z.span_end', 'z.timezone')) }} as local_day
    from span_zones z
    join scheduled k on k.organization_id = z.organization_id
),
open_intervals as (
    select d.key, d.span, d.span_start, d.span_end,
      {{ local_to_utc('d.local_day', 'h.opens_minute', 'd.timezone') }} as opens_at,
      {{ local_to_utc('d.local_day', 'h.closes_minute', 'd.timezone') }} as closes_at
    from span_days d
    join {{ ref('stg_reference__business_hours') }} h
      on h.organization_id = d.organization_id and h.iso_weekday = {{ iso_weekday('d.local_day') }}
    left join {{ ref('holidays') }} x on x.organization_id = d.organization_id and x.local_date = d.local_day
    where x.organization_id is null
),
open_time as (
    select key, span, sum(
      case when least(span_end, closes_at) > greatest(span_start, opens_at)
           then {{ micros_between('least(span_end, closes_at)', 'greatest(span_start, opens_at)') }} else 0 end
    ) as open_us
    from open_intervals
    group by key, span
)
select z.key, z.span,
  case when k.organization_id is null then {{ micros_between('z.span_end', 'z.span_start') }}
       else coalesce(t.open_us, 0) end as business_us
from span_zones z
left join scheduled k on k.organization_id = z.organization_id
left join open_time t on t.key = z.key and t.span = z.span
{%- endmacro %}


{# The local date of instant `ts` in zone `tz`. #}
{% macro local_date(ts, tz) -%}{{ adapter.dispatch('local_date', 'botflow')(ts, tz) }}{%- endmacro %}
{% macro default__local_date(ts, tz) -%}({{ ts }} at time zone {{ tz }})::date{%- endmacro %}
{% macro spark__local_date(ts, tz) -%}to_date(from_utc_timestamp({{ ts }}, {{ tz }})){%- endmacro %}

{# The first instant whose local date (local_date) in zone `tz` is `day`: where a local day begins. Read an hour
   before the wall midnight and add the hour back, so that a midnight that occurs twice (America/Havana,
   2026-11-01: the clocks go back from 01:00 to 00:00) gives its first occurrence, a skipped one (Santiago in
   September) the instant of the change. marts.local_day_start(date, text) in the warehouse. #}
{% macro local_day_start(day, tz) -%}
  ((({{ day }})::timestamp - interval '1 hour') at time zone {{ tz }} + interval '1 hour')
{%- endmacro %}

{# The instant at `minute` minutes after the start of local date `day` in zone `tz` (1440: the next day's
   start), by PostgreSQL's rules: a local time in a daylight-saving gap is read in the offset before the
   gap, one in an overlap in the offset after it (the later instant). The JVM takes the earlier instant in
   an overlap: on Spark, the later one is taken when it reads as the same local time. #}
{% macro local_to_utc(day, minute, tz) -%}{{ adapter.dispatch('local_to_utc', 'botflow')(day, minute, tz) }}{%- endmacro %}
{% macro default__local_to_utc(day, minute, tz) -%}
  (({{ day }})::timestamp + make_interval(mins => {{ minute }})) at time zone {{ tz }}
{%- endmacro %}
{% macro spark__local_to_utc(day, minute, tz) -%}
  {%- set wall = 'timestampadd(MINUTE, ' ~ minute ~ ', cast(' ~ day ~ ' as timestamp))' -%}
  {%- set earlier = 'to_utc_timestamp(' ~ wall ~ ', ' ~ tz ~ ')' -%}
  case when from_utc_timestamp({{ earlier }} + interval 1 hour, {{ tz }}) = {{ wall }}
       then {{ earlier }} + interval 1 hour else {{ earlier }} end
{%- endmacro %}

{# ISO day of the week of a date, 1 = Monday .. 7 = Sunday. #}
{% macro iso_weekday(day) -%}{{ adapter.dispatch('iso_weekday', 'botflow')(day) }}{%- endmacro %}
{% macro default__iso_weekday(day) -%}extract(isodow from {{ day }})::integer{%- endmacro %}
{% macro spark__iso_weekday(day) -%}(weekday({{ day }}) + 1){%- endmacro %}

{# One row per date from `first` to `last` (both included), as a select-list expression. #}
{% macro each_date(first, last) -%}{{ adapter.dispatch('each_date', 'botflow')(first, last) }}{%- endmacro %}
{% macro default__each_date(first, last) -%}
  generate_series(({{ first }})::timestamp, ({{ last }})::timestamp, interval '1 day')::date
{%- endmacro %}
{% macro spark__each_date(first, last) -%}explode(sequence({{ first }}, {{ last }}, interval 1 day)){%- endmacro %}

{# Whole microseconds from `earlier` to `later` (timestamps carry microseconds on both engines). #}
{% macro micros_between(later, earlier) -%}
  {{ adapter.dispatch('micros_between', 'botflow')(later, earlier) }}
{%- endmacro %}
{% macro default__micros_between(later, earlier) -%}(extract(epoch from {{ later }} - {{ earlier }}) * 1000000)::bigint{%- endmacro %}
{% macro spark__micros_between(later, earlier) -%}(unix_micros({{ later }}) - unix_micros({{ earlier }})){%- endmacro %}

{# Integer division of non-negative integers, truncated. #}
{% macro whole_div(numerator, denominator) -%}
  {{ adapter.dispatch('whole_div', 'botflow')(numerator, denominator) }}
{%- endmacro %}
{% macro default__whole_div(numerator, denominator) -%}div({{ numerator }}, {{ denominator }})::bigint{%- endmacro %}
{% macro spark__whole_div(numerator, denominator) -%}(({{ numerator }}) div {{ denominator }}){%- endmacro %}
