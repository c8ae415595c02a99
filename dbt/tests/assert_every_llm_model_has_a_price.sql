-- A model with no price costs 0: warn with its name so that the price list can be completed.
-- Scoped to the run's window like every mart test.
{{ config(severity='warn') }}
select llm_model, count(*) as unpriced_replies
from {{ ref('fct_bot_replies') }}
where not is_priced and llm_model is not null and {{ in_window('created_at') }}
group by llm_model
