"""The contract checks of metrics.md "Bad rows", as SQL over the landing tables.

A row is checked against the rejection rules in the order below; the first it breaks is the one
recorded. Rows that pass are repaired where a repair rule applies, and loaded.
"""

from __future__ import annotations

import re

MAX_TOKENS = 10_000_000  # per message and kind; the largest LLM context windows hold about 2M tokens

# rule name -> what it means (also the text shown in docs and check messages)
REJECTION_RULES = {
    "conversation_status_unknown": "conversations.status is not active, resolved or escalated",
    "conversation_started_at_invalid": "conversations.started_at is null or unparsable",
    "conversation_timestamp_unparsable": "conversations.ended_at or handoff_at is not a timestamp",
    "conversation_started_at_future": "conversations.started_at is more than 5 minutes after the run",
    "conversation_started_at_before_partitions": "conversations.started_at is before the first partition "
    "(BOTFLOW_PARTITIONS_START)",
    "conversation_ended_before_started": "conversations.ended_at is before started_at",
    "conversation_bot_missing": "the conversation's bot does not exist",
    "conversation_organization_missing": "the conversation's organization does not exist",
    "message_direction_unknown": "messages.direction is not inbound or outbound",
    "message_created_at_invalid": "messages.created_at is null or unparsable",
    "message_created_at_future": "messages.created_at is more than 5 minutes after the run",
    "message_created_at_before_partitions": "messages.created_at is before the first partition "
    "(BOTFLOW_PARTITIONS_START)",
    "message_outcome_unknown": "a bot reply's outcome is not success, failed or fallback",
    "message_tokens_out_of_range": f"a bot reply's prompt_tokens or completion_tokens is above {MAX_TOKENS:,} "
    "(no LLM call uses that many; the marts' integer columns would overflow)",
    "message_conversation_missing": "the message's conversation does not exist",
    "message_conversation_rejected": "the message's conversation was rejected",
    "api_event_kind_unknown": "api_events.kind is not api_call or webhook_received",
    "api_event_occurred_at_invalid": "api_events.occurred_at is null or unparsable",
    "api_event_occurred_at_future": "api_events.occurred_at is more than 5 minutes after the run",
    "api_event_occurred_at_before_partitions": "api_events.occurred_at is before the first partition "
    "(BOTFLOW_PARTITIONS_START)",
}
REPAIR_RULES = {
    "conversation_csat_out_of_range": "customer_satisfaction outside 1..5 is treated as null",
    "message_response_time_negative": "a negative response_time_ms is treated as null",
    "message_inbound_fields_ignored": "outcome, knowledge_base_hit, llm_model, response time and tokens "
    "on an inbound message are ignored",
    "message_tokens_invalid": "negative (or null) token counts are treated as 0",
    "organization_timezone_unknown": "an organizations.timezone that names no known time zone is treated as UTC",
}

# Duplicate keys. The source enforces no key: several rows may share an id. The newest `updated_at`
# wins (an unparsable or missing one counts as oldest); between versions with the same `updated_at`,
# the one with the larger VERSION hash of its landed values, so the choice never depends on load order.
# Superseded versions are taken out of the landing tables before any check (the winner alone is
# judged) and kept in quarantine under SUPERSEDED_RULE. Across windows, raw keeps each row's
# `_version` and an insert replaces a row only with a version that wins by the same order.
SUPERSEDED_RULE = "duplicate_id_superseded"
SUPERSEDED_TEXT = ("another row with the same id has a newer updated_at (or, at the same updated_at, a larger "
                   "version hash): the newest version wins")
LANDED_COLUMNS = {
    "organizations": ("id", "name", "timezone", "created_at"),
    "bots": ("id", "organization_id", "name", "llm_model", "created_at", "updated_at"),
    "conversations": ("id", "organization_id", "bot_id", "customer_phone_hash", "customer_phone_last4", "status",
                      "started_at", "ended_at", "handoff_at", "customer_satisfaction", "updated_at"),
    "messages": ("id", "conversation_id", "direction", "created_at", "response_time_ms", "outcome",
                 "knowledge_base_hit", "llm_model", "prompt_tokens", "completion_tokens", "updated_at"),
    "api_events": ("id", "organization_id", "bot_id", "kind", "occurred_at"),
}
EVENT_TIME = {"conversations": "started_at", "messages": "created_at", "api_events": "occurred_at"}


def version(table: str, alias: str) -> str:
    """A row version's tie-break: a hash of its landed values (the same from any window)."""
    return f"hashtextextended(row({', '.join(f'{alias}.{c}' for c in LANDED_COLUMNS[table])})::text, 0)"


def _updated(table: str, alias: str, *, parsed: bool = False) -> str:
    """A version's updated_at for ordering (oldest when missing); `parsed`: a raw-typed column, not landed text."""
    if "updated_at" not in LANDED_COLUMNS[table]:
        return "'-infinity'::timestamptz"
    value = f"{alias}.updated_at" if parsed else f"raw.try_timestamptz({alias}.updated_at)"
    return f"coalesce({value}, '-infinity')"


def _wins_over_raw(table: str, updated: str, row_version: str) -> str:
    """A landed version (`updated`: its updated_at for ordering, as _updated gives it; its version hash)
    replaces raw's row `r`: newer updated_at, then the larger hash; a raw row without a hash loses ties."""
    return (f"({updated}, {row_version}) > "
            f"({_updated(table, 'r', parsed=True)}, coalesce(r._version, -9223372036854775808))")


def _supersede(table: str) -> str:
    event = f"l.{EVENT_TIME[table]}" if table in EVENT_TIME else "null::text"
    return f"""
    with ranked as (
      select l.ctid as row_id, row_number() over (
        partition by l.id order by {_updated(table, 'l')} desc, {version(table, 'l')} desc) as version_rank
      from land_{table} l
      where l.id in (select id from land_{table} group by id having count(*) > 1)
    ), superseded as (
      delete from land_{table} l using ranked r where l.ctid = r.row_id and r.version_rank > 1
      returning l.*
    )
    insert into land_superseded (source_table, source_id, event_time, source_row)
    select '{table}', l.id::text, {event}, to_jsonb(l) from superseded l
    """


SUPERSEDE = [
    "create temp table land_superseded (source_table text, source_id text, event_time text, source_row jsonb) "
    "on commit drop",
    *(_supersede(table) for table in LANDED_COLUMNS),
]


# Checks every landed row. Timestamps are parsed by raw.try_timestamptz, which turns an unparsable
# value into null (so the row's rule rejects it) at the price of a PL/pgSQL exception block per value.
VALIDATE = [
    """
    create temp table v_conversations on commit drop as
    select l.*, t.started_ts, t.ended_ts, t.handoff_ts, t.updated_ts,
      case
        when l.status is null or l.status not in ('active', 'resolved', 'escalated')
          then 'conversation_status_unknown'
        when t.started_ts is null then 'conversation_started_at_invalid'
        when (l.ended_at is not null and t.ended_ts is null) or (l.handoff_at is not null and t.handoff_ts is null)
          then 'conversation_timestamp_unparsable'
        when t.started_ts > %(future)s then 'conversation_started_at_future'
        when t.started_ts < %(floor)s then 'conversation_started_at_before_partitions'
        when t.ended_ts < t.started_ts then 'conversation_ended_before_started'
        when not exists (select 1 from land_bots b where b.id = l.bot_id) then 'conversation_bot_missing'
        when not exists (select 1 from land_organizations o where o.id = l.organization_id)
          then 'conversation_organization_missing'
      end as rejected_by,
      case when l.customer_satisfaction not between 1 and 5 then array['conversation_csat_out_of_range']
           else '{}'::text[] end as repaired_rules
    from land_conversations l
    cross join lateral (select raw.try_timestamptz(l.started_at) as started_ts,
                               raw.try_timestamptz(l.ended_at) as ended_ts,
                               raw.try_timestamptz(l.handoff_at) as handoff_ts,
                               raw.try_timestamptz(l.updated_at) as updated_ts) t
    """,
    "create index on v_conversations (id)",
    """
    create temp table v_messages on commit drop as
    select l.*, t.created_ts, t.updated_ts,
      case
        when l.direction is null or l.direction not in ('inbound', 'outbound') then 'message_direction_unknown'
        when t.created_ts is null then 'message_created_at_invalid'
        when t.created_ts > %(future)s then 'message_created_at_future'
        when t.created_ts < %(floor)s then 'message_created_at_before_partitions'
        when l.direction = 'outbound' and l.outcome not in ('success', 'failed', 'fallback')
          then 'message_outcome_unknown'
        when l.direction = 'outbound' and greatest(l.prompt_tokens, l.completion_tokens) > __MAX_TOKENS__
          then 'message_tokens_out_of_range'
        when c.id is null then 'message_conversation_missing'
        when c.rejected_by is not null then 'message_conversation_rejected'
      end as rejected_by,
      case when l.direction = 'inbound' then
             case when l.outcome is not null or l.knowledge_base_hit is not null or l.llm_model is not null
                       or l.response_time_ms is not null or coalesce(l.prompt_tokens, 0) <> 0
                       or coalesce(l.completion_tokens, 0) <> 0
                  then array['message_inbound_fields_ignored'] else '{}'::text[] end
           else
             case when l.response_time_ms < 0 then array['message_response_time_negative']
                  else '{}'::text[] end
             || case when l.prompt_tokens is null or l.prompt_tokens < 0 or l.completion_tokens is null
                          or l.completion_tokens < 0
                     then array['message_tokens_invalid'] else '{}'::text[] end
      end as repaired_rules
    from land_messages l
    left join v_conversations c on c.id = l.conversation_id
    cross join lateral (select raw.try_timestamptz(l.created_at) as created_ts,
                               raw.try_timestamptz(l.updated_at) as updated_ts) t
    """,
    """
    create temp table v_api_events on commit drop as
    select l.*, t.occurred_ts,
      case
        when l.kind is null or l.kind not in ('api_call', 'webhook_received') then 'api_event_kind_unknown'
        when t.occurred_ts is null then 'api_event_occurred_at_invalid'
        when t.occurred_ts > %(future)s then 'api_event_occurred_at_future'
        when t.occurred_ts < %(floor)s then 'api_event_occurred_at_before_partitions'
      end as rejected_by
    from land_api_events l
    cross join lateral (select raw.try_timestamptz(l.occurred_at) as occurred_ts) t
    """,
]


VALIDATE = [statement.replace("__MAX_TOKENS__", str(MAX_TOKENS)) for statement in VALIDATE]


def _strict(statement: str) -> str:
    return re.sub(r"raw\.try_timestamptz\((l\.\w+)\)", r"\1::timestamptz", statement)


# The same checks with plain casts: a day's 600k message timestamps parse in 0.5 s instead of 1.3 s
# (EXPLAIN ANALYZE, 2026-11-26). They equal VALIDATE whenever every timestamp parses, which is all a
# typed source can send; a value that does not parse makes them fail with a DataError, and the
# loader falls back to VALIDATE.
VALIDATE_STRICT = [_strict(statement) for statement in VALIDATE]

# A row rejected now may have been loaded before, by another window: it leaves the raw layer.
_DELETE_REJECTED = (
    "delete from raw.{table} where id = any(array(select id from v_{table} where rejected_by is not null))")

# What raw stores of a valid landed row: raw column -> expression over v_<table> (the repairs applied).
RAW_VALUES = {
    "conversations": {
        "id": "v.id", "organization_id": "v.organization_id", "bot_id": "v.bot_id",
        "customer_phone_hash": "v.customer_phone_hash", "customer_phone_last4": "v.customer_phone_last4",
        "status": "v.status", "started_at": "v.started_ts", "ended_at": "v.ended_ts", "handoff_at": "v.handoff_ts",
        "customer_satisfaction": "case when v.customer_satisfaction between 1 and 5 then v.customer_satisfaction end",
        "updated_at": "v.updated_ts", "repaired_rules": "v.repaired_rules",
    },
    "messages": {
        "id": "v.id", "conversation_id": "v.conversation_id", "direction": "v.direction", "created_at": "v.created_ts",
        "response_time_ms":
            "case when v.direction = 'outbound' and v.response_time_ms >= 0 then v.response_time_ms end",
        "outcome": "case when v.direction = 'outbound' then v.outcome end",
        "knowledge_base_hit": "case when v.direction = 'outbound' then v.knowledge_base_hit end",
        "llm_model": "case when v.direction = 'outbound' then v.llm_model end",
        "prompt_tokens": "case when v.direction = 'outbound' then greatest(coalesce(v.prompt_tokens, 0), 0) else 0 end",
        "completion_tokens":
            "case when v.direction = 'outbound' then greatest(coalesce(v.completion_tokens, 0), 0) else 0 end",
        "updated_at": "v.updated_ts", "repaired_rules": "v.repaired_rules",
    },
    "api_events": {"id": "v.id", "organization_id": "v.organization_id", "bot_id": "v.bot_id", "kind": "v.kind",
                   "occurred_at": "v.occurred_ts"},
}


def _insert_new(table: str) -> str:
    """Step 1: the valid rows whose id raw does not hold yet (nearly all of them)."""
    values = RAW_VALUES[table]
    return f"""
    insert into raw.{table} ({', '.join(values)}, _run_id, _version)
    select {', '.join(values.values())}, %(run_id)s, {version(table, 'v')}
    from v_{table} v where v.rejected_by is null
    on conflict (id) do nothing
    """


def _replace_versions(table: str) -> str:
    """Step 2, when step 1 skipped rows: ids raw holds in another version (loaded by another window).

    The version that wins (newest updated_at, then the larger hash) stays or replaces raw's row. An
    incoming version that loses is a duplicate the source still holds: quarantined with this window's
    partition (via land_superseded). A raw row replaced from another window is either an update of that
    row or a duplicate; which, only that window's next load can tell: its hour is returned as stale.
    """
    values = RAW_VALUES[table]
    event = EVENT_TIME[table]
    wins = _wins_over_raw(table, _updated(table, "i", parsed=True), "i._version")
    return f"""
    with incoming as (
      select {', '.join(f'{expr} as {col}' for col, expr in values.items())}, {version(table, 'v')} as _version,
        to_jsonb(landed) as landed
      from v_{table} v join raw.{table} r on r.id = v.id
      cross join lateral (select {', '.join(f'v.{c}' for c in LANDED_COLUMNS[table])}) landed
      where v.rejected_by is null and r._version is distinct from {version(table, 'v')}
    ), moved as (
      select distinct date_trunc('hour', r.{event}, 'UTC') as hour
      from raw.{table} r join incoming i on i.id = r.id
      where {wins} and not (r.{event} >= %(lo)s and r.{event} < %(hi)s)
    ), kept as (
      insert into land_superseded (source_table, source_id, event_time, source_row)
      select '{table}', i.id::text, i.{event}::text, i.landed
      from incoming i join raw.{table} r on r.id = i.id
      where not {wins}
    )
    update raw.{table} r set {', '.join(f'{col} = i.{col}' for col in values if col != 'id')},
      _run_id = %(run_id)s, _loaded_at = now(), _version = i._version
    from incoming i where i.id = r.id and {wins}
    returning r.id, (select array_agg(hour) from moved)
    """


# (table whose loaded row count the statement reports, or None) -> statement.
# Messages and API events: the window's rows are deleted by time (an index range), then inserted.
# A row whose timestamp moved here from another window, or another version of an id raw holds, is
# settled by step 2 (_replace_versions), run only when step 1 skipped rows.
# the canonical name of each landed zone name PostgreSQL knows (names match in any case; an exact match
# wins), read in one scan of pg_timezone_names (31-80 ms each). A name it does not know has no row, and is
# repaired to UTC (organization_timezone_unknown). Left out: the copies under posix/ and right/ and the
# tz database's pseudo-zones, which the Spark engine's JVM does not know.
ORGANIZATION_ZONES = """
create temp table land_organization_zones on commit drop as
with zones as materialized (
  select name from pg_timezone_names
  where name !~ '^(posix|right)/' and name not in ('localtime', 'posixrules', 'Factory'))
select distinct on (l.timezone) l.timezone, z.name as zone
from (select distinct timezone from land_organizations) l join zones z on lower(z.name) = lower(l.timezone)
order by l.timezone, z.name = l.timezone desc, z.name
"""

LOAD = [
    (None, ORGANIZATION_ZONES),
    (None, """
    insert into raw.organizations (id, name, timezone, created_at, _run_id)
    select id, name, coalesce(z.zone, 'UTC'), raw.try_timestamptz(created_at), %(run_id)s
    from land_organizations left join land_organization_zones z using (timezone)
    on conflict (id) do update set name = excluded.name, timezone = excluded.timezone,
      created_at = excluded.created_at, _run_id = excluded._run_id, _loaded_at = now()
    where (raw.organizations.name, raw.organizations.timezone, raw.organizations.created_at)
      is distinct from (excluded.name, excluded.timezone, excluded.created_at)
    """),
    (None, """
    insert into raw.bots (id, organization_id, name, llm_model, created_at, updated_at, _run_id)
    select id, organization_id, name, llm_model, raw.try_timestamptz(created_at),
      raw.try_timestamptz(updated_at), %(run_id)s from land_bots
    on conflict (id) do update set organization_id = excluded.organization_id, name = excluded.name,
      llm_model = excluded.llm_model, created_at = excluded.created_at, updated_at = excluded.updated_at,
      _run_id = excluded._run_id, _loaded_at = now()
    where raw.bots.updated_at is null or excluded.updated_at >= raw.bots.updated_at
    """),
    # a conversation deleted from the source, or now rejected, leaves the raw layer
    (None, """
    delete from raw.conversations r
    where r.started_at >= %(lo)s and r.started_at < %(hi)s
      and not exists (select 1 from land_conversations l where l.id = r.id)
    """),
    # `= any(array(...))` probes the primary key per rejected id; a join or an OR scanned all of raw
    (None, _DELETE_REJECTED.format(table="conversations")),
    ("conversations", _insert_new("conversations")),
    (None, "delete from raw.messages where created_at >= %(lo)s and created_at < %(hi)s"),
    (None, _DELETE_REJECTED.format(table="messages")),
    ("messages", _insert_new("messages")),
    (None, "delete from raw.api_events where occurred_at >= %(lo)s and occurred_at < %(hi)s"),
    (None, _DELETE_REJECTED.format(table="api_events")),
    ("api_events", _insert_new("api_events")),
]
REPLACE_VERSIONS = {table: _replace_versions(table) for table in RAW_VALUES}

# A conversation counts in the hours of its start, end and handoff, and its messages in theirs (their
# bot and organization are the conversation's). When this window's load removes a conversation from
# the raw layer (deleted from the source, moved to another window, rejected now) or replaces it with
# a newer version, those hours outside the window still count the old version: they are stale. Runs
# before LOAD, while raw still holds the old versions. (Reconciliation reloads a deleted conversation's
# start hour; its end may lie in an hour no message of it is in, or one already reloaded.)
_LANDED_CONVERSATION_WINS = _wins_over_raw("conversations", "coalesce(v.updated_ts, '-infinity')",
                                           version("conversations", "v"))
STALE_BY_CHANGED_CONVERSATIONS = f"""
with affected as (
  select r.id, array[r.started_at, r.ended_at, r.handoff_at] as times, true as with_messages
  from raw.conversations r
  where ((r.started_at >= %(lo)s and r.started_at < %(hi)s)
         or r.id = any(array(select id from v_conversations where rejected_by is not null)))
    and not exists (select 1 from v_conversations v where v.id = r.id and v.rejected_by is null)
  union all
  select r.id, array[r.started_at, r.ended_at, r.handoff_at, v.started_ts, v.ended_ts, v.handoff_ts],
    (r.bot_id, r.organization_id) is distinct from (v.bot_id, v.organization_id)
  from v_conversations v join raw.conversations r on r.id = v.id
  -- the window's ids probe the primary key (a join could scan all of raw)
  where r.id = any(array(select id from v_conversations where rejected_by is null))
    and v.rejected_by is null and {_LANDED_CONVERSATION_WINS}
)
insert into raw.stale_hours (hour, reason, found_by, run_id)
select distinct h.hour, 'a conversation changed or left the raw layer', 'load', %(run_id)s
from affected a
cross join lateral (
  select date_trunc('hour', t, 'UTC') from unnest(a.times) t
  union
  select date_trunc('hour', m.created_at, 'UTC') from raw.messages m where a.with_messages and m.conversation_id = a.id
) h (hour)
where h.hour is not null and not (h.hour >= %(lo)s and h.hour < %(hi)s)
on conflict (hour) do nothing
"""

# a zone name PostgreSQL does not know (any case), or none: the organization's times are read in UTC
ORGANIZATION_TIMEZONE_UNKNOWN = (
    "not exists (select 1 from land_organization_zones z where z.timezone = land_organizations.timezone)")
_IN_WINDOW = "{ts} >= %(lo)s and {ts} < %(hi)s"
# the superseded versions this window answers for: its own, those swept up (no or a future event
# time), and those of bots and organizations (landed by every window, recorded with no partition)
_SUPERSEDED_OWN = """
    select *, swept_or_none or ts >= %(hi)s as swept from (
      select l.*, raw.try_timestamptz(l.event_time) as ts,
        l.event_time is null or raw.try_timestamptz(l.event_time) is null
          or raw.try_timestamptz(l.event_time) > %(future)s
          or raw.try_timestamptz(l.event_time) < %(floor)s as swept_or_none
      from land_superseded l) s
    where swept_or_none or (ts >= %(lo)s and ts < %(hi)s)
"""
_HOUR = "case when " + _IN_WINDOW + " then date_trunc('hour', {ts}, 'UTC') end"

QUARANTINE_AND_REPAIRS = [
    """
    delete from raw.quarantine
    where (partition_hour >= %(lo)s and partition_hour < %(hi)s) or partition_hour is null
    """,
    f"""
    insert into raw.quarantine (source_table, source_id, rule, partition_hour, run_id, source_row)
    select 'conversations', id::text, rejected_by, {_HOUR.format(ts='started_ts')}, %(run_id)s,
      to_jsonb(v) - 'started_ts' - 'ended_ts' - 'handoff_ts' - 'updated_ts' - 'rejected_by'
    from v_conversations v where rejected_by is not null and role in ('own', 'swept')
    union all
    select 'messages', id::text, rejected_by, {_HOUR.format(ts='created_ts')}, %(run_id)s,
      to_jsonb(v) - 'created_ts' - 'updated_ts' - 'rejected_by' - 'repaired_rules'
    from v_messages v where rejected_by is not null
    union all
    select 'api_events', id::text, rejected_by, {_HOUR.format(ts='occurred_ts')}, %(run_id)s,
      to_jsonb(v) - 'occurred_ts' - 'rejected_by'
    from v_api_events v where rejected_by is not null
    union all
    select source_table, source_id, '{SUPERSEDED_RULE}', {_HOUR.format(ts='ts')}, %(run_id)s, source_row
    from ({_SUPERSEDED_OWN}) s
    """,
    "delete from raw.repairs where partition_hour >= %(lo)s and partition_hour < %(hi)s",
    f"""
    insert into raw.repairs (source_table, rule, partition_hour, repaired_rows, run_id)
    select source_table, rule, partition_hour, count(*), %(run_id)s from (
      select 'conversations' as source_table, unnest(repaired_rules) as rule,
        date_trunc('hour', started_ts, 'UTC') as partition_hour
      from v_conversations where rejected_by is null and {_IN_WINDOW.format(ts='started_ts')}
      union all
      select 'messages', unnest(repaired_rules), date_trunc('hour', created_ts, 'UTC')
      from v_messages where rejected_by is null
    ) r group by 1, 2, 3
    """,
    # organizations are landed whole by every run: their repairs are recounted whole, in the hour each was created
    "delete from raw.repairs where source_table = 'organizations'",
    f"""
    insert into raw.repairs (source_table, rule, partition_hour, repaired_rows, run_id)
    select 'organizations', 'organization_timezone_unknown',
      date_trunc('hour', coalesce(raw.try_timestamptz(created_at), 'epoch'), 'UTC'), count(*), %(run_id)s
    from land_organizations where {ORGANIZATION_TIMEZONE_UNKNOWN} group by 3
    """,
]

# (rule, swept, rows): swept rows (null or future timestamps) are seen again by every run
REJECTED_COUNTS = """
select rejected_by, swept, count(*)::int from (
  select rejected_by, role = 'swept' as swept from v_conversations
  where rejected_by is not null and role in ('own', 'swept')
  union all select rejected_by, created_ts is null or created_ts >= %(hi)s or created_ts < %(lo)s from v_messages
  where rejected_by is not null
  union all select rejected_by, occurred_ts is null or occurred_ts >= %(hi)s or occurred_ts < %(lo)s
  from v_api_events
  where rejected_by is not null
  union all select '""" + SUPERSEDED_RULE + """', swept from (""" + _SUPERSEDED_OWN + """) s
) r group by 1, 2 order by 1, 2
"""
REPAIRED_COUNTS = """
select rule, count(*)::int from (
  select unnest(repaired_rules) as rule from v_conversations where rejected_by is null and role = 'own'
  union all select unnest(repaired_rules) from v_messages where rejected_by is null
  union all select 'organization_timezone_unknown' from land_organizations
  where """ + ORGANIZATION_TIMEZONE_UNKNOWN + """
) r group by 1 order by 1
"""
