{{ config(
    materialized='table',
    meta={'built_in': 'warehouse'},
    tags=['daily'],
    indexes=[{'columns': ['bot_id', 'date', 'metric'], 'unique': true}, {'columns': ['date']}],
) }}
{#- One row per bot, UTC date and metric whose value that day is anomalous against the bot's own history
   (docs/contract/metrics.md "metric_anomalies"). A verdict on D reads the 14 dates before D, so a rebuilt
   day can change the verdicts of the 14 days after it: the mart is rebuilt whole, from all of
   bot_performance_metrics (bots x days rows), by every run of the daily marts; no window. It is built in the
   warehouse on both engines (on Spark, from the published bot_performance_metrics: docs/spark.md). -#}
{%- set metrics = var('anomaly_metrics') %}
with daily as (
    -- n: the row's place in the bot's dates that have a row; the baseline of n is rows n-14 .. n-1
    select bot_id, organization_id, date, row_number() over (partition by bot_id order by date) as n,
      {{ metrics | join(', ') }}
    from {{ ref('bot_performance_metrics') }}
),
measured as (
    {%- for name in metrics %}
    select bot_id, organization_id, date, n, '{{ name }}' as metric, {{ name }}::numeric as value from daily
    {{- '\n    union all' if not loop.last }}
    {%- endfor %}
),
history as (
    select d.bot_id, d.date, d.metric, past.value
    from measured d
    join measured past on past.bot_id = d.bot_id and past.metric = d.metric and past.n between d.n - 14 and d.n - 1
    where d.value is not null and past.value is not null
),
medians as (
    select bot_id, date, metric, {{ metric('baseline_median', 'value') }} as baseline_median
    from history group by 1, 2, 3
    having count(*) >= 7  -- fewer than 7 values: no verdict
),
spreads as (
    select h.bot_id, h.date, h.metric, m.baseline_median,
      1.4826 * {{ metric('baseline_median', 'abs(h.value - m.baseline_median)') }} as spread
    from history h join medians m using (bot_id, date, metric)
    group by 1, 2, 3, 4
),
scored as (
    select d.bot_id, d.organization_id, d.date, d.metric, d.value, s.baseline_median,
      3 * greatest(s.spread, 0.05 * abs(s.baseline_median), 1) as threshold
    from measured d join spreads s using (bot_id, date, metric)
)
select bot_id, organization_id, date, metric, value, baseline_median, threshold,
  case when value > baseline_median then 'high' else 'low' end as direction
from scored
where abs(value - baseline_median) > threshold
